import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from coordination import backends
from coordination.checks import check_settings
from coordination.conf import settings
from coordination.exceptions import ConfigurationError


def errors_for(**coordination):
    with override_settings(COORDINATION=coordination):
        return [e.msg for e in check_settings()]


def test_defaults_are_filled_in():
    with override_settings(COORDINATION={"LOCKS": {"BACKEND": "local"}}):
        assert settings.APP_NAME == "main"
        assert settings.LOCKS["DEFAULT_TTL"] == 30
        assert settings.LOCKS["OPTIONS"] == {}
        assert settings.EVENT_QUEUE["BACKEND"] == "database"


def test_settings_follow_override_settings():
    with override_settings(COORDINATION={"APP_NAME": "one"}):
        assert settings.APP_NAME == "one"
    with override_settings(COORDINATION={"APP_NAME": "two"}):
        assert settings.APP_NAME == "two"


def test_the_test_settings_pass_the_checks():
    assert check_settings() == []


def test_system_checks_are_registered():
    ids = {e.id for e in checks.run_checks() if e.id.startswith("coordination")}
    assert ids == set()
    with override_settings(COORDINATION={"APP_NAME": "bad name"}):
        ids = {e.id for e in checks.run_checks()}
    assert "coordination.E003" in ids


def test_not_a_dict():
    with override_settings(COORDINATION=["x"]):
        (error,) = check_settings()
    assert "must be a dict" in error.msg


def test_unknown_top_level_key_is_named():
    (msg,) = errors_for(LOCK={"BACKEND": "redis"})
    assert "'LOCK'" in msg


def test_unknown_backend_lists_the_choices():
    (msg,) = errors_for(LOCKS={"BACKEND": "zookeeper"})
    assert 'COORDINATION["LOCKS"]["BACKEND"]' in msg
    assert "'zookeeper'" in msg
    assert "database, local, redis" in msg


def test_unimportable_dotted_backend():
    (msg,) = errors_for(PUBSUB={"BACKEND": "nowhere.Backend"})
    assert "cannot be imported" in msg


def test_backend_of_the_wrong_type():
    (msg,) = errors_for(LOCKS={"BACKEND": "collections.OrderedDict"})
    assert "not a subclass" in msg


def test_missing_required_option_is_named():
    msgs = errors_for(LOCKS={"BACKEND": "redis", "OPTIONS": {}})
    assert any("'URL'" in m and "OPTIONS" in m for m in msgs), msgs


def test_lower_case_option_keys_are_refused():
    msgs = errors_for(LOCKS={"BACKEND": "local", "OPTIONS": {"url": "x"}})
    assert any("upper case" in m for m in msgs), msgs


def test_bad_app_name():
    (msg,) = errors_for(APP_NAME="")
    assert "APP_NAME" in msg


def test_cache_store_must_name_a_caches_alias():
    (msg,) = errors_for(CACHE_STORES={"memory": "default", "redis": "nope"})
    assert "'nope'" in msg and "CACHES" in msg


def test_default_cache_store_must_exist():
    (msg,) = errors_for(DEFAULT_CACHE_STORE="redis")
    assert "DEFAULT_CACHE_STORE" in msg


@pytest.mark.parametrize("ttl", [0, -1, "30", None, True])
def test_lock_ttl_must_be_positive_seconds(ttl):
    msgs = errors_for(LOCKS={"BACKEND": "local", "DEFAULT_TTL": ttl})
    assert any("DEFAULT_TTL" in m for m in msgs)


def test_resolve_raises_configuration_error():
    with pytest.raises(ImproperlyConfigured):
        backends.resolve("LOCKS", "nope")
    with pytest.raises(ConfigurationError):
        backends.register("NOPE", "x", object)


def test_lock_mode_is_row_or_advisory():
    (msg,) = errors_for(LOCKS={"BACKEND": "database", "OPTIONS": {"MODE": "fast"}})
    assert '["MODE"]' in msg and '"advisory"' in msg


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@override_settings(DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                                          "NAME": "x.sqlite3"}})
def test_advisory_mode_needs_postgresql():
    # Only the settings the check reads change, no connection.
    (msg,) = errors_for(LOCKS={"BACKEND": "database",
                               "OPTIONS": {"MODE": "advisory"}})
    assert "needs PostgreSQL" in msg and "sqlite3" in msg


@pytest.mark.parametrize("name", ["RESTART_GRACE", "WRITE_AFTER", "STALE_AFTER",
                                  "WAIT_SLICE"])
def test_advisory_seconds_must_be_positive(name):
    (msg,) = errors_for(LOCKS={"BACKEND": "database", "OPTIONS": {name: -1}})
    assert f'["{name}"]' in msg and "positive number of seconds" in msg
