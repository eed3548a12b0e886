"""Run handlers on one thread per process, with per-handler debounce.

Handlers run on a plain thread (no running event loop), so a sync handler can
use the Django ORM; an ``async`` handler runs to completion on a private
event loop kept by that thread. One thread keeps the order messages arrived
in and keeps a slow handler from stalling the network listener.
"""

import inspect
import logging
import queue
import threading
import time

from django.db import close_old_connections, connections

from .. import forksafe
from ..names import canonical

logger = logging.getLogger("coordination.pubsub")

_STOP = object()


class Dispatcher:
    """A thread that calls handlers for queued messages."""

    def __init__(self, handlers_for, instance_id):
        # handlers_for(channel) -> [(handler, debounce or None), ...]
        self._handlers_for = handlers_for
        self._instance_id = instance_id
        self._queue = queue.SimpleQueue()
        # (channel, handler, canonical message) -> [deadline, message]
        self._pending = {}
        self._thread = None
        self._lock = threading.Lock()
        self.delivered = 0
        self.errors = 0

    def put(self, channel, message):
        self._ensure_thread()
        self._queue.put((channel, message))

    def _ensure_thread(self):
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="coordination-pubsub-dispatch",
                    daemon=True,
                )
                self._thread.start()

    def stop(self, timeout=10):
        """Finish queued messages, then end the thread (debounces are lost)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            # A handler may stop the services; it cannot wait for itself.
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _run(self):
        import asyncio

        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self._wait_time())
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                with forksafe.busy():
                    close_old_connections()
                    if item is not None:
                        self._dispatch(loop, *item)
                    self._fire_due(loop)
        finally:
            self._pending.clear()
            loop.close()
            connections.close_all()

    def _wait_time(self):
        if not self._pending:
            return None
        soonest = min(deadline for deadline, _ in self._pending.values())
        return max(0.0, soonest - time.monotonic())

    def _dispatch(self, loop, channel, message):
        for handler, debounce in self._handlers_for(channel):
            if debounce:
                # Equal messages restart the window; the call happens when
                # it ends, with that message.
                key = (channel, handler, canonical(message))
                self._pending[key] = [time.monotonic() + debounce, message]
            else:
                self._call(loop, channel, handler, message)

    def _fire_due(self, loop):
        if not self._pending:
            return
        now = time.monotonic()
        due = [key for key, (deadline, _) in self._pending.items() if deadline <= now]
        for key in due:
            _, message = self._pending.pop(key)
            channel, handler, _ = key
            # Unsubscribed while waiting: drop the call.
            if any(h == handler for h, _ in self._handlers_for(channel)):
                self._call(loop, channel, handler, message)

    def _call(self, loop, channel, handler, message):
        try:
            result = handler(message)
            if inspect.isawaitable(result):
                loop.run_until_complete(result)
            self.delivered += 1
        except Exception:
            self.errors += 1
            logger.error(
                "Pub/sub handler %r failed channel=%s instance=%s",
                handler, channel, self._instance_id(), exc_info=True,
                extra={"action": "pubsub_handler_error", "channel": channel},
            )
