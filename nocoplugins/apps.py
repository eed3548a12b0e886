import logging

from django.apps import AppConfig
from django.core.signals import setting_changed
from django.db.models.signals import post_migrate


class NocopluginsConfig(AppConfig):
    name = "nocoplugins"
    verbose_name = "Plugins"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from .application import app

        # Every app is imported by now, so every plugin can be found.
        app.plugin_manager.setup()
        post_migrate.connect(
            _install_plugins, sender=self, dispatch_uid="nocoplugins.install"
        )
        # coordination rebuilds its services when these settings change;
        # subscribe the plugins again on the new ones.
        setting_changed.connect(_rewire, dispatch_uid="nocoplugins.rewire")


def _install_plugins(*, using, **kwargs):
    from .application import app

    app.plugin_manager.install_all(using=using)


def _rewire(*, setting, **kwargs):
    if setting in ("COORDINATION", "CACHES", "CHANNEL_LAYERS"):
        from .application import app

        if not app.plugin_manager._loaded:
            return
        try:
            app.plugin_manager.wire()
        except Exception:
            # Wrong settings are reported by the system checks and on first
            # use; a settings change must not fail here.
            logging.getLogger("nocoplugins").warning(
                "Could not subscribe plugins to sync messages with the new "
                "settings", exc_info=True, extra={"action": "plugin_wire_failed"},
            )
