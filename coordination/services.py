"""The process-wide set of coordination services.

``services`` builds each manager on first use from the settings, so importing
this module does no I/O and a process only pays for the services it uses.
``nocoplugins.app`` exposes the same objects under NocoBase's names.
"""

import logging
import threading

from django.utils.module_loading import import_string

from . import instance
from .conf import settings

logger = logging.getLogger(__name__)

MANAGERS = {
    "lock_manager": "coordination.locks.LockManager",
    "cache_manager": "coordination.cache.CacheManager",
    "pubsub_manager": "coordination.pubsub.PubSubManager",
    "sync_message_manager": "coordination.sync.SyncMessageManager",
    "event_queue": "coordination.queue.EventQueue",
}


class Services:
    """Lazily built managers plus the process identity.

    A manager class is called with this object, so it can reach the app name,
    the instance id and the other managers (the cache uses the lock manager,
    sync messages ride on pub/sub). A manager may define ``start()`` and
    ``stop()``; :meth:`start` and :meth:`stop` call them on every manager
    built so far.
    """

    def __init__(self):
        self._managers = {}
        self._lock = threading.RLock()
        self._started = False

    @property
    def name(self):
        return settings.APP_NAME

    @property
    def instance_id(self):
        return instance.instance_id()

    def __getattr__(self, attr):
        if attr not in MANAGERS:
            raise AttributeError(attr)
        return self.get(attr)

    def get(self, attr):
        manager = self._managers.get(attr)
        if manager is not None:
            return manager
        with self._lock:
            manager = self._managers.get(attr)
            if manager is None:
                manager = import_string(MANAGERS[attr])(self)
                self._managers[attr] = manager
                if self._started and hasattr(manager, "start"):
                    manager.start()
        return manager

    @property
    def cache(self):
        return self.get("cache_manager").get_cache("default")

    def built(self):
        """The managers built so far, in dependency order."""
        return [self._managers[a] for a in MANAGERS if a in self._managers]

    def start(self):
        """Start every built manager's listeners and workers (idempotent)."""
        from .heartbeat import heartbeat

        with self._lock:
            self._started = True
            managers = self.built()
        for manager in managers:
            if hasattr(manager, "start"):
                manager.start()
        heartbeat.start()

    def stop(self):
        """Stop listeners and workers, waiting for in-flight work.

        Subscriptions stay; a later :meth:`start` (or subscribe) resumes.
        """
        from .heartbeat import heartbeat

        heartbeat.stop()
        with self._lock:
            self._started = False
            managers = self.built()
        # Stop consumers before the services they use (queue before locks).
        for manager in reversed(managers):
            if hasattr(manager, "stop"):
                try:
                    manager.stop()
                except Exception:
                    logger.exception(
                        "Stopping %s failed instance=%s",
                        type(manager).__name__, self.instance_id,
                    )

    def reset(self):
        """Stop and forget every manager (settings changed, tests)."""
        self.stop()
        with self._lock:
            self._managers.clear()


services = Services()
