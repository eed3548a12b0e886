"""The event queue: ``app.event_queue``.

Durable background events with retries, timeouts and cancellation. Events
are rows of :class:`coordination.models.Event`; backends in
``coordination.queue.backends`` decide how instances learn about them.
"""

from .context import Context, Signal
from .manager import EventQueue

__all__ = ["Context", "EventQueue", "Signal"]
