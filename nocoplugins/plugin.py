"""The base class every plugin subclasses."""

import logging


class Plugin:
    """A plugin: the behaviour of one Django app in INSTALLED_APPS.

    Override the hooks you need; each takes no arguments. ``after_add``,
    ``before_load`` and ``load`` run when Django starts and must not touch the
    database. ``install`` runs once per database, after migrations.
    """

    #: Defaults to the app label.
    name = None

    def __init__(self, app_config, app):
        self.app_config = app_config
        self.app = app
        if self.name is None:
            self.name = app_config.label
        self.logger = logging.getLogger(f"nocoplugins.plugins.{self.name}")

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}>"

    @property
    def enabled(self):
        """True unless the plugin was disabled (read from the database)."""
        return self.app.plugin_manager.is_enabled(self.name)

    @property
    def installed(self):
        """True once ``install`` has run on the default database."""
        return self.app.plugin_manager.is_installed(self.name)

    def send_sync_message(self, message, *, using=None):
        """Send ``message`` to this plugin on every other instance.

        Inside a transaction it is sent after commit, never on rollback.
        """
        self.app.sync_message_manager.publish(self.name, message, using=using)

    # Hooks, in the order they run.

    def after_add(self):
        pass

    def before_load(self):
        pass

    def load(self):
        pass

    def install(self):
        pass

    def before_enable(self):
        pass

    def after_enable(self):
        pass

    def before_disable(self):
        pass

    def after_disable(self):
        pass

    def handle_sync_message(self, message):
        pass
