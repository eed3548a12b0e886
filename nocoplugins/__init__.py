"""Plugins for Django projects that run as many instances.

``from nocoplugins import app`` is the process-wide application: its
``plugin_manager`` lists the plugins found in INSTALLED_APPS, and its service
attributes (``cache``, ``pubsub_manager``, ``event_queue``, ...) are the
cluster-safe services of :mod:`coordination`.
"""

from coordination.exceptions import PluginNotFound

from .application import app
from .plugin import Plugin

__all__ = ["Plugin", "PluginNotFound", "app"]
