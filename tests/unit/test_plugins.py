import pytest
from django.apps import apps
from django.core.management import call_command
from django.test import override_settings

from coordination.exceptions import ConfigurationError, PluginNotFound
from nocoplugins import Plugin, app
from nocoplugins.manager import PluginManager
from nocoplugins.models import PluginState
from tests.plugins import CALLS

pytestmark = pytest.mark.django_db


def fresh_manager():
    manager = PluginManager(app)
    manager.setup()
    return manager


def test_plugins_are_found_both_ways_in_installed_apps_order():
    names = [p.name for p in app.plugin_manager]
    assert names == ["alpha", "beta-plugin"]
    alpha = app.plugin_manager.get("alpha")
    assert type(alpha).__name__ == "AlphaPlugin"
    assert type(app.plugin_manager.get("beta-plugin")).__name__ == "BetaPlugin"


def test_ordinary_apps_are_not_plugins():
    assert "auth" not in app.plugin_manager
    assert len(app.plugin_manager) == 2


def test_plugin_name_defaults_to_the_app_label_and_has_app_and_logger():
    plugin = app.plugin_manager.get("alpha")
    assert plugin.app_config is apps.get_app_config("alpha")
    assert plugin.app.instance_id == app.instance_id
    assert plugin.logger.name == "nocoplugins.plugins.alpha"


def test_start_up_hooks_run_each_phase_for_all_plugins_in_order():
    fresh_manager()
    assert CALLS == [
        ("alpha", "after_add"),
        ("beta-plugin", "after_add"),
        ("alpha", "before_load"),
        ("beta-plugin", "before_load"),
        ("alpha", "load"),
        ("beta-plugin", "load"),
    ]


def test_unknown_plugin_raises_plugin_not_found_listing_the_plugins():
    with pytest.raises(PluginNotFound) as info:
        app.plugin_manager.get("gamma")
    assert isinstance(info.value, KeyError)
    assert "alpha, beta-plugin" in str(info.value)
    with pytest.raises(PluginNotFound):
        app.plugin_manager.enable("gamma")
    with pytest.raises(PluginNotFound):
        app.plugin_manager.disable("gamma")


def test_migrate_installed_every_plugin_once():
    from tests.plugins.alpha.models import InstallCount

    assert InstallCount.objects.count() == 1
    assert app.plugin_manager.get("alpha").installed
    assert app.plugin_manager.install_all() == []
    assert InstallCount.objects.count() == 1


def test_a_flushed_database_installs_again():
    PluginState.objects.all().delete()
    assert app.plugin_manager.install_all() == ["alpha", "beta-plugin"]
    assert ("alpha", "install") in CALLS


def test_plugins_are_enabled_unless_disabled():
    assert app.plugin_manager.get("alpha").enabled is True


def test_disable_and_enable_run_their_hooks_once():
    manager = app.plugin_manager
    assert manager.disable("alpha") is True
    assert manager.disable("alpha") is False
    assert manager.get("alpha").enabled is False
    assert PluginState.objects.get(name="alpha").enabled is False
    assert manager.enable("alpha") is True
    assert manager.enable("alpha") is False
    assert manager.get("alpha").enabled is True
    assert CALLS == [
        ("alpha", "before_disable"),
        ("alpha", "after_disable"),
        ("alpha", "before_enable"),
        ("alpha", "after_enable"),
    ]


def test_enable_installs_a_plugin_that_never_was():
    PluginState.objects.filter(name="beta-plugin").update(
        enabled=False, installed_at=None
    )
    app.plugin_manager.refresh()
    app.plugin_manager.enable("beta-plugin")
    assert CALLS == [
        ("beta-plugin", "before_enable"),
        ("beta-plugin", "install"),
        ("beta-plugin", "after_enable"),
    ]
    assert app.plugin_manager.get("beta-plugin").installed


def test_a_disabled_plugin_is_not_installed_by_migrate():
    PluginState.objects.filter(name="alpha").update(enabled=False, installed_at=None)
    assert app.plugin_manager.install_all() == []


def test_enabled_state_is_read_lazily_from_the_database():
    manager = fresh_manager()
    PluginState.objects.filter(name="alpha").update(enabled=False)
    assert manager.get("alpha").enabled is False


class _Config:
    def __init__(self, label, plugin):
        self.label = label
        self.name = f"tests.fake.{label}"
        self.plugin = plugin


def test_plugin_attribute_that_is_not_a_plugin_is_an_error():
    from nocoplugins.discovery import plugin_class_for

    with pytest.raises(ConfigurationError, match="'broken'.*not a subclass"):
        plugin_class_for(_Config("broken", "collections.OrderedDict"))
    with pytest.raises(ConfigurationError, match="cannot be imported"):
        plugin_class_for(_Config("broken", "tests.nowhere.Plugin"))


CORE_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "coordination",
             "nocoplugins"]


def test_two_plugin_classes_in_a_module_without_attribute_is_an_error():
    with override_settings(INSTALLED_APPS=[*CORE_APPS, "tests.plugins.twins"]):
        with pytest.raises(ConfigurationError, match="several Plugin subclasses"):
            fresh_manager()


def test_two_plugins_with_one_name_is_an_error():
    with override_settings(
        INSTALLED_APPS=[*CORE_APPS, "tests.plugins.alpha", "tests.plugins.alpha_again"]
    ):
        with pytest.raises(
            ConfigurationError, match="both provide a plugin named 'alpha'"
        ):
            fresh_manager()


def test_plugin_base_class_is_exported():
    assert issubclass(type(app.plugin_manager.get("alpha")), Plugin)


def test_plugins_command(capsys):
    call_command("plugins", "list")
    out = capsys.readouterr().out
    assert "alpha" in out and "enabled" in out and "installed" in out
    call_command("plugins", "disable", "alpha")
    assert "alpha disabled" in capsys.readouterr().out
    call_command("plugins", "list")
    assert "disabled" in capsys.readouterr().out
    call_command("plugins", "enable", "alpha")
    assert "alpha enabled" in capsys.readouterr().out


def test_plugins_command_unknown_name():
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="No plugin named 'zeta'"):
        call_command("plugins", "enable", "zeta")


def test_cached_state_is_read_again_when_old(monkeypatch):
    # An instance that missed the announcement (pub/sub is at most once)
    # still converges: the cached state has a maximum age.
    from nocoplugins import manager as manager_module

    manager = fresh_manager()
    assert manager.get("alpha").enabled is True
    PluginState.objects.filter(name="alpha").update(enabled=False)
    assert manager.get("alpha").enabled is True  # cached, young
    now = manager_module.time.monotonic()
    monkeypatch.setattr(
        manager_module.time, "monotonic", lambda: now + manager_module.STATE_MAX_AGE + 1
    )
    assert manager.get("alpha").enabled is False
