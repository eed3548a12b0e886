from django.apps import AppConfig
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


def _install_plugins(*, using, **kwargs):
    from .application import app

    app.plugin_manager.install_all(using=using)
