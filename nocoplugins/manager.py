"""The plugin registry: discovery, start-up hooks, enabled state."""

import functools
import logging
import threading
import time

from django.apps import apps
from django.db import DEFAULT_DB_ALIAS, router, transaction
from django.utils import timezone

from coordination.exceptions import ConfigurationError, PluginNotFound

from .discovery import plugin_class_for

logger = logging.getLogger(__name__)

# The sync channel on which instances announce enable/disable to each other.
# A plugin may not take this name.
STATE_CHANNEL = "nocoplugins:state"

# Pub/sub is at most once: an instance that misses an announcement must still
# converge, so cached enabled state is read again after this many seconds.
STATE_MAX_AGE = 30.0


class PluginManager:
    """Every plugin of the project, in INSTALLED_APPS order.

    Plugins are found once, when Django is ready (:meth:`setup`). Whether a
    plugin is enabled lives in the database (``nocoplugins.PluginState``) and
    is read on first need, never at start-up.
    """

    def __init__(self, app):
        self.app = app
        self._plugins = {}
        self._loaded = False
        self._enabled = None  # name -> bool, read lazily
        self._enabled_read_at = 0.0
        self._state_lock = threading.RLock()
        self._sync_handlers = {}  # plugin name -> its stable handler

    # Registry

    def setup(self):
        """Discover plugins and run after_add, before_load and load."""
        if self._loaded:
            return
        plugins = {}
        for app_config in apps.get_app_configs():
            cls = plugin_class_for(app_config)
            if cls is None:
                continue
            plugin = cls(app_config, self.app)
            if plugin.name in plugins:
                other = plugins[plugin.name].app_config.label
                raise ConfigurationError(
                    f"Apps {other!r} and {app_config.label!r} both provide a "
                    f"plugin named {plugin.name!r}. Set a distinct `name` on "
                    "one of the Plugin classes."
                )
            if plugin.name == STATE_CHANNEL:
                raise ConfigurationError(
                    f"The plugin of app {app_config.label!r} is named "
                    f"{STATE_CHANNEL!r}, a name nocoplugins keeps for itself. "
                    "Set another `name` on the Plugin class."
                )
            plugins[plugin.name] = plugin
        self._plugins = plugins
        self._loaded = True
        for hook in ("after_add", "before_load", "load"):
            for plugin in plugins.values():
                getattr(plugin, hook)()
        logger.debug("Loaded plugins %s", ", ".join(plugins) or "(none)")
        self.wire()

    # Cluster wiring

    def wire(self):
        """Subscribe every plugin to its sync channel, and this manager to
        the plugin state announcements of other instances.

        Called by :meth:`setup` and again when the services are rebuilt
        (settings changed). It touches no database: whether a plugin is
        enabled is read when its first message arrives.
        """
        sync = self.app.sync_message_manager
        for plugin in self._plugins.values():
            handler = self._sync_handlers.setdefault(
                plugin.name, functools.partial(self._deliver, plugin.name)
            )
            sync.subscribe(plugin.name, handler)
        sync.subscribe(STATE_CHANNEL, self._on_state_message)

    def _deliver(self, name, message):
        # A disabled plugin receives no sync messages.
        if not self.is_enabled(name):
            logger.debug(
                "Sync message not delivered: plugin=%s is disabled instance=%s",
                name, self.app.instance_id,
                extra={"action": "plugin_sync_skipped", "plugin": name},
            )
            return
        self._plugins[name].handle_sync_message(message)

    def _on_state_message(self, message):
        name = message.get("plugin") if isinstance(message, dict) else None
        if name not in self._plugins:
            logger.warning(
                "Ignored a plugin state message for unknown plugin=%s "
                "instance=%s", name, self.app.instance_id,
                extra={"action": "plugin_state_unknown"},
            )
            return
        # The database holds the truth (the message is sent after commit);
        # forget the cached value so the next need reads it.
        self.refresh(name)
        logger.info(
            "Plugin %s on instance %s plugin=%s instance=%s",
            "enabled" if message.get("enabled") else "disabled",
            message.get("by"), name, self.app.instance_id,
            extra={"action": "plugin_state_applied", "plugin": name},
        )

    def get(self, name):
        try:
            return self._plugins[name]
        except KeyError:
            known = ", ".join(self._plugins) or "none"
            raise PluginNotFound(
                f"No plugin named {name!r}; installed plugins: {known}. "
                "A plugin is a Django app in INSTALLED_APPS that provides a "
                "nocoplugins.Plugin subclass."
            ) from None

    def __iter__(self):
        return iter(list(self._plugins.values()))

    def __len__(self):
        return len(self._plugins)

    def __contains__(self, name):
        return name in self._plugins

    # State

    def _state_model(self):
        return apps.get_model("nocoplugins", "PluginState")

    def is_enabled(self, name):
        self.get(name)
        with self._state_lock:
            stale = time.monotonic() - self._enabled_read_at > STATE_MAX_AGE
            if self._enabled is None or stale:
                self._enabled = dict(
                    self._state_model().objects.values_list("name", "enabled")
                )
                self._enabled_read_at = time.monotonic()
            if name not in self._enabled:
                # Forgotten by refresh(name), or no row yet (enabled).
                enabled = self._state_model().objects.filter(name=name).values_list(
                    "enabled", flat=True
                ).first()
                self._enabled[name] = True if enabled is None else enabled
            return self._enabled[name]

    def is_installed(self, name, using=None):
        self.get(name)
        return self._state_model().objects.using(
            using or DEFAULT_DB_ALIAS
        ).filter(name=name, installed_at__isnull=False).exists()

    def refresh(self, name=None):
        """Forget cached enabled state so it is read again when needed."""
        with self._state_lock:
            if name is None or self._enabled is None:
                self._enabled = None
            else:
                self._enabled.pop(name, None)

    def enable(self, name):
        """Enable a plugin; a no-op (returning False) when already enabled."""
        return self._switch(name, True)

    def disable(self, name):
        """Disable a plugin; a no-op (returning False) when already disabled."""
        return self._switch(name, False)

    def _switch(self, name, enabled):
        plugin = self.get(name)
        model = self._state_model()
        using = router.db_for_write(model)
        with transaction.atomic(using=using):
            state, _ = model.objects.using(using).select_for_update().get_or_create(
                name=name
            )
            if state.enabled == enabled:
                self.refresh(name)
                return False
            (plugin.before_enable if enabled else plugin.before_disable)()
            state.enabled = enabled
            state.save(using=using, update_fields=["enabled", "updated_at"])
            if enabled and state.installed_at is None:
                self._install(plugin, state, using)
            self._set_cached(name, enabled)
        (plugin.after_enable if enabled else plugin.after_disable)()
        logger.info(
            "Plugin %s plugin=%s instance=%s",
            "enabled" if enabled else "disabled", name, self.app.instance_id,
            extra={"action": "plugin_enable" if enabled else "plugin_disable",
                   "plugin": name},
        )
        self._announce(name, enabled, using)
        return True

    def _set_cached(self, name, enabled):
        with self._state_lock:
            if self._enabled is not None:
                self._enabled[name] = enabled

    def _announce(self, name, enabled, using):
        """Tell the other instances, after commit, to re-read the state.

        They start or stop delivering the plugin's sync messages; they do
        not run its enable/disable hooks, which ran here, once for the
        cluster (see docs/pubsub.md).
        """
        message = {"plugin": name, "enabled": enabled, "by": self.app.instance_id}
        try:
            self.app.sync_message_manager.publish(STATE_CHANNEL, message, using=using)
        except Exception:
            # The change is committed; instances that missed the message
            # re-read it within STATE_MAX_AGE seconds.
            logger.error(
                "Could not announce plugin=%s enabled=%s instance=%s", name,
                enabled, self.app.instance_id, exc_info=True,
                extra={"action": "plugin_announce_failed", "plugin": name},
            )

    # Installation

    def install_all(self, using=DEFAULT_DB_ALIAS):
        """Create missing state rows and install enabled plugins once.

        Runs after ``migrate`` (and ``flush``) on each database.
        """
        model = self._state_model()
        if not router.allow_migrate_model(using, model):
            return []
        installed = []
        for plugin in self:
            with transaction.atomic(using=using):
                state, _ = model.objects.using(using).select_for_update(
                ).get_or_create(name=plugin.name)
                if state.enabled and state.installed_at is None:
                    self._install(plugin, state, using)
                    installed.append(plugin.name)
        self.refresh()
        return installed

    def _install(self, plugin, state, using):
        plugin.install()
        state.installed_at = timezone.now()
        state.save(using=using, update_fields=["installed_at", "updated_at"])
        logger.info(
            "Installed plugin=%s database=%s instance=%s", plugin.name, using,
            self.app.instance_id, extra={"action": "plugin_install",
                                         "plugin": plugin.name},
        )
