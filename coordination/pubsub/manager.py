"""``app.pubsub_manager``: broadcast JSON messages to every instance."""

import asyncio
import json
import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .. import backends
from ..conf import settings
from ..names import dumps, loads, validate_name
from .backends.base import BasePubSubBackend
from .dispatch import Dispatcher

logger = logging.getLogger("coordination.pubsub")

Handler = Callable[[Any], Any]

# Envelope format version, first key of every envelope.
VERSION = 1
# Publishers whose last sequence number is remembered (a bounded LRU).
MAX_TRACKED = 10_000


def _build_backend(app_name, on_message):
    backend_class, options = backends.configured(
        "PUBSUB", settings.PUBSUB, BasePubSubBackend
    )
    return backend_class(app_name, dict(options), on_message)


class PubSubManager:
    """Subscribe handlers to channels and publish messages to all instances.

    Each message travels in one JSON envelope: ``{"v": 1, "instance": ...,
    "channel": ..., "seq": ..., "message": ...}``. ``seq`` counts the
    messages one instance sent on one channel, so a receiver can tell (and
    log, and count in :meth:`stats`) how many it missed.
    """

    def __init__(self, services):
        self.services = services
        self._lock = threading.RLock()
        # channel -> {handler: debounce}; dicts keep subscription order.
        self._handlers: dict[str, dict[Handler, float | None]] = {}
        self._backend = _build_backend(services.name, self._receive)
        self._reset_process_state()
        _managers.add(self)

    def _reset_process_state(self):
        self._seq: dict[str, int] = {}
        self._last_seen: OrderedDict = OrderedDict()
        self._dispatcher = Dispatcher(self._handlers_for, self._instance_id)
        self._counts = {"published": 0, "received": 0, "missed": 0,
                        "duplicates": 0, "malformed": 0}

    def _instance_id(self):
        return self.services.instance_id

    @property
    def backend(self) -> BasePubSubBackend:
        return self._backend

    # Subscriptions

    def subscribe(self, channel: str, handler: Handler, *,
                  debounce: float | None = None) -> None:
        """Call ``handler(message)`` for each message on ``channel``.

        Subscribing the same handler again delivers once (its ``debounce``
        is updated). The first subscription starts this process's listener.
        """
        validate_name(channel, "channel")
        self._subscribe(channel, handler, debounce)

    def _subscribe(self, channel, handler, debounce=None):
        if not callable(handler):
            raise TypeError(f"A pub/sub handler must be callable, not {handler!r}.")
        if debounce is not None and (
            isinstance(debounce, bool) or not isinstance(debounce, (int, float))
            or debounce < 0
        ):
            raise ValueError(
                f"debounce must be None or a number of seconds >= 0, not "
                f"{debounce!r}."
            )
        with self._lock:
            first = channel not in self._handlers
            self._handlers.setdefault(channel, {})[handler] = debounce or None
        if first:
            self._backend.join(channel)
            logger.debug(
                "Subscribed channel=%s instance=%s", channel, self._instance_id(),
                extra={"action": "pubsub_subscribe", "channel": channel},
            )

    def unsubscribe(self, channel: str, handler: Handler) -> bool:
        """Stop calling ``handler`` for ``channel``; False if it was not."""
        validate_name(channel, "channel")
        return self._unsubscribe(channel, handler)

    def _unsubscribe(self, channel, handler):
        with self._lock:
            handlers = self._handlers.get(channel)
            if not handlers or handler not in handlers:
                return False
            del handlers[handler]
            last = not handlers
            if last:
                del self._handlers[channel]
                # Counting restarts if we join again; a gap then is not loss.
                for key in [k for k in self._last_seen if k[1] == channel]:
                    del self._last_seen[key]
        if last:
            self._backend.leave(channel)
        return True

    def _handlers_for(self, channel):
        with self._lock:
            return list(self._handlers.get(channel, {}).items())

    # Publishing

    def publish(self, channel: str, message: Any, *, skip_self: bool = True,
                only_self: bool = False) -> None:
        """Send ``message`` (JSON) to the subscribers of ``channel``.

        By default every other instance receives it and this one does not;
        ``skip_self=False`` delivers here too, ``only_self=True`` here alone.
        Raises PayloadError, before sending anything, if it is not JSON.
        """
        validate_name(channel, "channel")
        self._send(channel, self._encode(message), skip_self, only_self)

    async def apublish(self, channel: str, message: Any, *, skip_self: bool = True,
                       only_self: bool = False) -> None:
        """Async twin of :meth:`publish`."""
        validate_name(channel, "channel")
        text = self._encode(message)
        await asyncio.to_thread(self._send, channel, text, skip_self, only_self)

    @staticmethod
    def _encode(message):
        return dumps(message, what="message")

    def _send(self, channel, text, skip_self=True, only_self=False):
        """Send already encoded ``text``; used by sync messages after commit."""
        if only_self or not skip_self:
            self._dispatcher.put(channel, loads(text))
        if only_self:
            return
        with self._lock:
            seq = self._seq.get(channel, 0) + 1
            self._seq[channel] = seq
        envelope = (
            f'{{"v":{VERSION},"instance":{json.dumps(self._instance_id())},'
            f'"channel":{json.dumps(channel, ensure_ascii=False)},"seq":{seq},'
            f'"message":{text}}}'
        )
        self._backend.publish(channel, envelope)
        self._counts["published"] += 1
        logger.debug(
            "Published channel=%s seq=%s bytes=%s instance=%s", channel, seq,
            len(envelope), self._instance_id(),
            extra={"action": "pubsub_publish", "channel": channel},
        )

    # Receiving (called by the backend's listener)

    def _receive(self, text):
        try:
            envelope = loads(text)
            sender = envelope["instance"]
            channel = envelope["channel"]
            seq = envelope["seq"]
            message = envelope["message"]
        except (ValueError, TypeError, KeyError):
            self._counts["malformed"] += 1
            logger.warning(
                "Dropped a malformed pub/sub envelope bytes=%s instance=%s",
                len(text), self._instance_id(), exc_info=True,
                extra={"action": "pubsub_malformed"},
            )
            return
        if sender == self._instance_id():
            return
        if not self._in_sequence(sender, channel, seq):
            return
        self._counts["received"] += 1
        if channel in self._handlers:
            self._dispatcher.put(channel, message)

    def _in_sequence(self, sender, channel, seq):
        key = (sender, channel)
        with self._lock:
            last = self._last_seen.pop(key, None)
            self._last_seen[key] = max(seq, last or 0)
            while len(self._last_seen) > MAX_TRACKED:
                self._last_seen.popitem(last=False)
        if last is None or seq == last + 1:
            return True
        if seq <= last:
            self._counts["duplicates"] += 1
            logger.warning(
                "Dropped a repeated pub/sub message channel=%s publisher=%s "
                "seq=%s last=%s instance=%s", channel, sender, seq, last,
                self._instance_id(), extra={"action": "pubsub_duplicate",
                                            "channel": channel},
            )
            return False
        missed = seq - last - 1
        self._counts["missed"] += missed
        logger.warning(
            "Missed %s pub/sub message(s) channel=%s publisher=%s seq=%s "
            "last=%s instance=%s", missed, channel, sender, seq, last,
            self._instance_id(),
            extra={"action": "pubsub_gap", "channel": channel, "missed": missed},
        )
        return True

    # Life cycle

    def start(self) -> None:
        """Resume the listener for the subscribed channels (idempotent)."""
        self._backend.start()

    def stop(self) -> None:
        """Stop the listener and run what is queued; subscriptions stay."""
        self._backend.stop()
        self._dispatcher.stop()

    def stats(self) -> dict[str, Any]:
        """Counters: published, received, missed (sequence gaps), duplicates,
        malformed, delivered (handler calls), handler_errors, and the
        backend's own (reconnects...)."""
        counts = dict(self._counts)
        counts["delivered"] = self._dispatcher.delivered
        counts["handler_errors"] = self._dispatcher.errors
        counts.update(self._backend.stats())
        return counts


_managers = weakref.WeakSet()


def _after_fork():
    # The threads of the parent are gone in a forked child, and its locks may
    # be held forever: start from clean process state (the backend resets its
    # own connections through its own hook).
    for manager in list(_managers):
        manager._lock = threading.RLock()
        manager._reset_process_state()


os.register_at_fork(after_in_child=_after_fork)
