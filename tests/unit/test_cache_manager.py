"""CacheManager, settings checks and the JSON serializer (no servers)."""

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from coordination.cache import Cache, CacheManager
from coordination.cache.serializers import JSONSerializer
from coordination.exceptions import (
    CacheNotFound,
    ChannelNameError,
    ConfigurationError,
    PayloadError,
)
from coordination.services import services
from nocoplugins import app
from tests.support.cache import cache_settings, redis_alias

# No Redis is contacted here: django-redis connects on the first command.
UNUSED_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def manager():
    with override_settings(**cache_settings(UNUSED_REDIS)):
        yield services.get("cache_manager")


def test_the_manager_is_built_from_services(manager):
    assert isinstance(manager, CacheManager)
    assert app.cache_manager is manager


def test_create_cache_fills_in_defaults(manager):
    cache = manager.create_cache("plugin-a")
    assert isinstance(cache, Cache)
    assert (cache.name, cache.prefix, cache.store, cache.ttl) == (
        "plugin-a", "plugin-a", "memory", 300,
    )
    assert manager.get_cache("plugin-a") is cache


def test_creating_again_with_the_same_arguments_returns_the_cache(manager):
    cache = manager.create_cache("a", ttl=60)
    assert manager.create_cache("a", prefix="a", store="memory", ttl=60) is cache


@pytest.mark.parametrize("changes", [{"prefix": "other"}, {"store": "redis"},
                                     {"ttl": 5}, {"miss_on_error": True}])
def test_creating_again_with_other_arguments_raises_value_error(manager, changes):
    manager.create_cache("a", ttl=60)
    with pytest.raises(ValueError, match="already exists"):
        manager.create_cache("a", **{"ttl": 60, **changes})


def test_two_caches_cannot_share_a_prefix_on_one_store(manager):
    manager.create_cache("a", prefix="shared")
    with pytest.raises(ValueError, match="already uses prefix 'shared'"):
        manager.create_cache("b", prefix="shared")
    assert manager.create_cache("c", prefix="shared", store="redis").prefix == "shared"


def test_unknown_store_is_a_configuration_error(manager):
    with pytest.raises(ConfigurationError, match="'nowhere'") as info:
        manager.create_cache("a", store="nowhere")
    assert isinstance(info.value, ImproperlyConfigured)
    assert "'memory', 'redis'" in str(info.value)


@pytest.mark.parametrize("name", ["", "a b", "x" * 201, None])
def test_bad_cache_names_are_refused(manager, name):
    with pytest.raises(ChannelNameError):
        manager.create_cache(name)


def test_a_prefix_may_not_hold_the_key_separator(manager):
    with pytest.raises(ChannelNameError, match="prefix='a.b'"):
        manager.create_cache("a:b")
    assert manager.create_cache("a:b", prefix="a.b").prefix == "a.b"


@pytest.mark.parametrize("ttl", [0, -1, "60", True, float("inf"), float("nan")])
def test_a_cache_ttl_must_be_positive_seconds(manager, ttl):
    with pytest.raises(ValueError):
        manager.create_cache("a", ttl=ttl)


def test_get_cache_of_an_unknown_name(manager):
    with pytest.raises(CacheNotFound, match="create_cache\\('nope'\\)") as info:
        manager.get_cache("nope")
    assert isinstance(info.value, KeyError)


def test_app_cache_is_the_default_cache(manager):
    assert app.cache is manager.get_cache("default")
    assert app.cache.name == "default" and app.cache.store == "memory"


def test_a_project_may_create_the_default_cache_first(manager):
    cache = manager.create_cache("default", store="redis", ttl=10)
    assert app.cache is cache


def test_a_pickling_redis_store_is_refused_at_create_and_by_a_check():
    settings = cache_settings(UNUSED_REDIS)
    settings["CACHES"]["redis"] = {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": UNUSED_REDIS,
    }
    with override_settings(**settings):
        with pytest.raises(ConfigurationError, match="JSONSerializer"):
            services.get("cache_manager").create_cache("a", store="redis")
        messages = checks.run_checks()
    (error,) = [m for m in messages if m.id == "coordination.E101"]
    assert "coordination.cache.serializers.JSONSerializer" in error.hint


def test_other_serializers_get_a_warning_and_odd_clients_an_error():
    settings = cache_settings(UNUSED_REDIS)
    settings["CACHES"]["redis"] = redis_alias(
        UNUSED_REDIS,
        SERIALIZER="django_redis.serializers.json.JSONSerializer",
        CLIENT_CLASS="django_redis.client.HerdClient",
    )
    with override_settings(**settings):
        ids = {m.id for m in checks.run_checks()}
        with pytest.raises(ConfigurationError, match="HerdClient"):
            services.get("cache_manager").create_cache("a", store="redis")
    assert {"coordination.W101", "coordination.E102"} <= ids


CACHE_CHECK_IDS = {"coordination.E004", "coordination.E005", "coordination.E006",
                   "coordination.E101", "coordination.W101", "coordination.E102",
                   "coordination.W102"}


def test_the_json_redis_store_passes_the_checks(manager):
    assert [m for m in checks.run_checks() if m.id in CACHE_CHECK_IDS] == []


def test_the_serializer_is_strict_json():
    serializer = JSONSerializer({})
    assert serializer.dumps({"a": [1, None]}) == b'{"a":[1,null]}'
    assert serializer.loads(b'{"a":[1,null]}') == {"a": [1, None]}
    for bad in [(1,), {1: 2}, object(), float("nan")]:
        with pytest.raises(PayloadError):
            serializer.dumps(bad)


def test_a_store_that_cannot_list_keys_gets_a_warning():
    settings = cache_settings()
    settings["CACHES"]["files"] = {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": "/tmp/coordination-cache-check",
    }
    settings["COORDINATION"]["CACHE_STORES"]["files"] = "files"
    with override_settings(**settings):
        (warning,) = [m for m in checks.run_checks() if m.id == "coordination.W102"]
    assert "'files'" in warning.msg
