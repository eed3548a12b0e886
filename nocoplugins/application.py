"""The application facade, named after NocoBase's ``app``."""

from django.utils.functional import SimpleLazyObject

from coordination.services import services


class Application:
    """The process-wide application object.

    Every attribute but ``plugin_manager`` is a view on
    :data:`coordination.services.services`; nothing is built until used.
    """

    def __init__(self):
        from .manager import PluginManager

        self.plugin_manager = PluginManager(self)

    name = property(lambda self: services.name)
    instance_id = property(lambda self: services.instance_id)
    cache = property(lambda self: services.cache)
    cache_manager = property(lambda self: services.get("cache_manager"))
    pubsub_manager = property(lambda self: services.get("pubsub_manager"))
    sync_message_manager = property(
        lambda self: services.get("sync_message_manager")
    )
    event_queue = property(lambda self: services.get("event_queue"))
    lock_manager = property(lambda self: services.get("lock_manager"))

    def start(self):
        """Start listeners and workers now (they also start on demand)."""
        services.start()

    def stop(self):
        """Stop listeners and workers and wait for in-flight work."""
        services.stop()

    def __repr__(self):
        return f"<Application name={self.name!r} instance={self.instance_id!r}>"


_application = None


def get_application():
    global _application
    if _application is None:
        _application = Application()
    return _application


app = SimpleLazyObject(get_application)
