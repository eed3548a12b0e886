"""Delivery through a Django Channels layer: one group per channel.

Each process runs one listener: a daemon thread with its own event loop and
its own layer instance (built from ``CHANNEL_LAYERS[ALIAS]``), which holds a
specific channel that joined one group per subscribed channel. Publishing
goes through the same loop, started on first use, so it never needs the
listener. After a fork the child drops the parent's loop and connections
(without closing them: they belong to the parent) and starts its own.

The listener checks itself every ``HEARTBEAT`` seconds by sending a ping to
its own channel through the server. A failed or unanswered ping, or an error
from the layer, closes the layer and reconnects with backoff, joining every
group again; the gap is logged when it is back. The same tick re-joins the
groups, so memberships never reach the layer's ``group_expiry``.
"""

import asyncio
import hashlib
import json
import logging
import os
import random
import threading
import time
import weakref
from concurrent.futures import TimeoutError as FutureTimeout

from .base import BasePubSubBackend

logger = logging.getLogger("coordination.pubsub")
listener_logger = logging.getLogger("coordination.pubsub.listener")

MESSAGE_TYPE = "coordination.message"
PING_TYPE = "coordination.ping"
# Channels accepts group names of fewer than 100 characters.
MAX_GROUP_LENGTH = 99
_PASS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def _escape(text):
    # Letters, digits and "-" stay; any other character becomes "_<hex>.".
    # A decoder reads "_" as "escape up to the next '.'", so the mapping is
    # injective, and a bare "." never appears inside an escaped part.
    return "".join(c if c in _PASS else f"_{ord(c):x}." for c in text)


def group_name(app_name: str, channel: str) -> str:
    """The Channels group for ``channel`` of app ``app_name``.

    ``c.<app>.<channel>`` (both escaped) when that fits, else ``h.`` and the
    SHA-256 of both names. The two forms cannot meet (they start
    differently), escaped names are injective, and hashed ones collide only
    if SHA-256 does.
    """
    name = f"c.{_escape(app_name)}.{_escape(channel)}"
    if len(name) <= MAX_GROUP_LENGTH:
        return name
    digest = hashlib.sha256(
        json.dumps([app_name, channel], ensure_ascii=False).encode()
    ).hexdigest()
    return f"h.{digest}"


_UNSET = object()

try:
    from redis.exceptions import TimeoutError as _RedisTimeout

    _IDLE_TIMEOUTS = (TimeoutError, _RedisTimeout)
except ImportError:
    _IDLE_TIMEOUTS = (TimeoutError,)


def _make_direct_publisher(alias, timeout):
    from channels.layers import channel_layers
    from channels_redis.pubsub import RedisPubSubChannelLayer
    from channels_redis.utils import _consistent_hash, decode_hosts

    layer = channel_layers.make_backend(alias)
    if type(layer) is not RedisPubSubChannelLayer:
        return None
    hosts = decode_hosts(layer._kwargs.get("hosts") or (layer._args or [None])[0])
    if not all(set(host) == {"address"} for host in hosts):
        # Sentinels or connection keyword arguments: leave them to the layer.
        return None
    import redis

    shards = [_Shard(redis, host["address"], timeout) for host in hosts]
    prefix = layer._kwargs.get("prefix", "asgi")

    def publish(group, message):
        name = f"{prefix}__group__{group}"
        shard = shards[_consistent_hash(name, len(shards))]
        shard.publish(name, layer.serialize(message))

    return publish


class _Shard:
    """PUBLISH on a kept connection per thread (``ThreadConnections``).

    A publish is one command, so it is sent on the connection directly,
    before and without redis-py's command path. A connection that failed (a
    Redis restart) is dropped and the publish tried once more on a new one,
    which is what redis-py's own retry would do. Connecting and each publish
    are bounded by the backend's ``TIMEOUT`` unless the URL sets timeouts of
    its own.
    """

    def __init__(self, redis, url, timeout):
        from ...redisconn import ThreadConnections

        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self._connections = ThreadConnections(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def publish(self, name, data):
        for attempt in (0, 1):
            conn = self._connections.get()
            try:
                conn.send_command("PUBLISH", name, data)
                return conn.read_response()
            except self._errors:
                conn.disconnect()
                if attempt:
                    raise
            except BaseException:
                # An unread reply would confuse the next command.
                conn.disconnect()
                raise


class _ListenerDown(Exception):
    """The heartbeat did not come back through the server."""


class ChannelsBackend(BasePubSubBackend):
    """Pub/sub over ``CHANNEL_LAYERS[OPTIONS["ALIAS"]]``.

    Options: ``ALIAS`` (required), ``HEARTBEAT`` (seconds between listener
    checks, default 5), ``RETRY_DELAY`` / ``RETRY_DELAY_MAX`` (reconnect
    backoff, 0.5 and 10 s), ``TIMEOUT`` (seconds a publish or join may take
    before it fails, default 5).
    """

    required_options = ("ALIAS",)
    allowed_options = {"ALIAS", "HEARTBEAT", "RETRY_DELAY", "RETRY_DELAY_MAX",
                       "TIMEOUT"}

    @staticmethod
    def validate_options(options):
        from django.conf import settings as django_settings

        errors = []
        alias = options.get("ALIAS")
        layers = getattr(django_settings, "CHANNEL_LAYERS", {}) or {}
        if "ALIAS" in options and alias not in layers:
            errors.append(
                f'COORDINATION["PUBSUB"]["OPTIONS"]["ALIAS"] is {alias!r}, which '
                f"is not in CHANNEL_LAYERS; add it there or use one of "
                f"{', '.join(map(repr, layers)) or 'your CHANNEL_LAYERS aliases'}."
            )
        for key in ("HEARTBEAT", "RETRY_DELAY", "RETRY_DELAY_MAX", "TIMEOUT"):
            value = options.get(key, 1)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or value <= 0:
                errors.append(
                    f'COORDINATION["PUBSUB"]["OPTIONS"]["{key}"] is {value!r}; '
                    "it must be a positive number of seconds."
                )
        return errors

    def __init__(self, app_name, options, on_message):
        super().__init__(app_name, options, on_message)
        self.alias = options["ALIAS"]
        self.heartbeat = options.get("HEARTBEAT", 5)
        self.retry_delay = options.get("RETRY_DELAY", 0.5)
        self.retry_delay_max = options.get("RETRY_DELAY_MAX", 10)
        self.timeout = options.get("TIMEOUT", 5)
        self._groups = {}  # channel -> group, what the listener must join
        self._listening = False
        self._counts = {"reconnects": 0, "publish_failures": 0}
        self._reset()
        _backends.add(self)

    def _reset(self):
        # Everything that belongs to one process and one event loop.
        self._lock = threading.RLock()
        self._loop = None
        self._thread = None
        self._layer = None
        self._listener = None  # concurrent Future of the listen task
        self._channel = None  # our specific channel while connected
        self._connected = None  # asyncio.Event, set while connected
        self._pong = None
        self._last_received = 0.0
        self._down = False  # the listener failed and is reconnecting
        self._direct = _UNSET

    # The loop thread

    def _ensure_loop(self):
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._run_loop, args=(loop, ready),
                    name="coordination-pubsub", daemon=True,
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def _run_loop(self, loop, ready):
        asyncio.set_event_loop(loop)
        self._connected = asyncio.Event()
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _call(self, coro, timeout=None):
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except FutureTimeout:
            future.cancel()
            raise

    def _get_layer(self):
        # Runs on the loop thread. A layer of our own (not the process-wide
        # one of channels.layers), so no connection is shared with other code
        # or across a fork.
        if self._layer is None:
            from channels.layers import channel_layers

            self._layer = channel_layers.make_backend(self.alias)
        return self._layer

    # Publishing

    def publish(self, channel, text):
        group = self._group(channel)
        message = {"type": MESSAGE_TYPE, "text": text}
        try:
            direct = self._direct_publisher()
            if direct is not None:
                direct(group, message)
            else:
                self._call(self._send(group, message))
        except Exception:
            self._counts["publish_failures"] += 1
            raise

    def _direct_publisher(self):
        """A sync sender for RedisPubSubChannelLayer, else None.

        That layer's group_send is one PUBLISH of the layer's serialized
        message on ``<prefix>__group__<group>``. Doing exactly that with a
        sync Redis client spares a publish two thread switches through the
        loop thread (most of its cost); the bytes on the wire are the
        layer's own. redis-py pools reconnect, and start afresh in a forked
        child.
        """
        if self._direct is not _UNSET:
            return self._direct
        with self._lock:
            if self._direct is _UNSET:
                self._direct = _make_direct_publisher(self.alias, self.timeout)
        return self._direct

    async def _send(self, group, message):
        await self._get_layer().group_send(group, message)

    def _group(self, channel):
        group = self._groups.get(channel)
        return group if group is not None else group_name(self.app_name, channel)

    # Membership

    def join(self, channel):
        group = group_name(self.app_name, channel)
        with self._lock:
            self._groups[channel] = group
            self._listening = True
        self._ensure_listener()
        try:
            self._call(self._join(group), timeout=self.timeout)
        except Exception:
            # The listener joins every group when it (re)connects.
            logger.warning(
                "Could not join channel=%s yet; the listener will when the "
                "server is reachable instance=%s", channel, _instance(),
                exc_info=True, extra={"action": "pubsub_join", "channel": channel},
            )

    async def _join(self, group):
        # Wait for the first connection, but not for a reconnect: the
        # listener joins every group when it is back, and start-up (every
        # manage.py command subscribes the plugins) must not stall while
        # Redis is away.
        while not self._connected.is_set():
            if self._down:
                return
            await asyncio.sleep(0.01)
        await self._layer.group_add(group, self._channel)

    def leave(self, channel):
        with self._lock:
            group = self._groups.pop(channel, None)
        if group is None or self._loop is None:
            return
        try:
            self._call(self._leave(group))
        except Exception:
            logger.warning(
                "Could not leave channel=%s cleanly instance=%s", channel,
                _instance(), exc_info=True,
                extra={"action": "pubsub_leave", "channel": channel},
            )

    async def _leave(self, group):
        if self._connected.is_set():
            await self._layer.group_discard(group, self._channel)

    # The listener

    def start(self):
        """Start the listener if channels are joined, and wait (up to
        ``TIMEOUT``) until it is connected with every group joined."""
        if not (self._listening and self._groups):
            return
        self._ensure_listener()
        try:
            self._call(self._connected.wait())
        except Exception:
            logger.warning(
                "Pub/sub listener not connected yet; it keeps trying "
                "instance=%s", _instance(), extra={"action": "pubsub_start"},
            )

    def _ensure_listener(self):
        with self._lock:
            if self._listener is not None and not self._listener.done():
                return
            loop = self._ensure_loop()
            self._listener = asyncio.run_coroutine_threadsafe(self._listen(), loop)

    async def _listen(self):
        delay = self.retry_delay
        down_since = None
        while True:
            try:
                await self._connect()
                if down_since is not None:
                    self._counts["reconnects"] += 1
                    listener_logger.warning(
                        "Pub/sub listener back after %.1fs gap; rejoined %s "
                        "channel(s) instance=%s", time.monotonic() - down_since,
                        len(self._groups), _instance(),
                        extra={"action": "pubsub_reconnected"},
                    )
                down_since, delay, self._down = None, self.retry_delay, False
                await self._session()
            except asyncio.CancelledError:
                await self._disconnect()
                raise
            except Exception:
                self._down = True
                if down_since is None:
                    down_since = time.monotonic()
                    listener_logger.warning(
                        "Pub/sub listener lost its connection; reconnecting "
                        "instance=%s", _instance(), exc_info=True,
                        extra={"action": "pubsub_disconnected"},
                    )
                else:
                    listener_logger.debug(
                        "Pub/sub listener still down after %.1fs instance=%s",
                        time.monotonic() - down_since, _instance(), exc_info=True,
                        extra={"action": "pubsub_reconnecting"},
                    )
                await self._disconnect()
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.retry_delay_max)

    async def _connect(self):
        layer = self._get_layer()
        channel = await asyncio.wait_for(layer.new_channel(), self.timeout)
        for group in list(self._groups.values()):
            await asyncio.wait_for(layer.group_add(group, channel), self.timeout)
        self._channel = channel
        self._connected.set()
        # Groups joined while we were adding the others are added by _join,
        # which waited for _connected.
        listener_logger.debug(
            "Pub/sub listener connected channel=%s groups=%s instance=%s",
            channel, len(self._groups), _instance(),
            extra={"action": "pubsub_connected"},
        )

    async def _disconnect(self):
        self._connected.clear()
        layer, self._layer, self._channel = self._layer, None, None
        if layer is not None:
            try:
                await asyncio.wait_for(layer.flush(), self.timeout)
            except Exception:
                listener_logger.debug("Closing the layer failed", exc_info=True)

    async def _session(self):
        receiver = asyncio.ensure_future(self._receive_loop(self._layer, self._channel))
        try:
            while True:
                await asyncio.wait([receiver], timeout=self.heartbeat)
                if receiver.done():
                    receiver.result()
                    raise _ListenerDown("the receive loop ended")
                await self._check()
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)

    async def _receive_loop(self, layer, channel):
        loop = asyncio.get_running_loop()
        while True:
            try:
                message = await layer.receive(channel)
            except _IDLE_TIMEOUTS:
                # RedisChannelLayer's blocking pop can time out on a quiet
                # channel; that is not a lost connection (the heartbeat
                # tells those apart), so keep receiving.
                continue
            self._last_received = loop.time()
            kind = message.get("type")
            if kind == MESSAGE_TYPE:
                try:
                    self.on_message(message["text"])
                except Exception:
                    listener_logger.exception(
                        "Handing a message over failed instance=%s", _instance(),
                        extra={"action": "pubsub_receive_error"},
                    )
            elif kind == PING_TYPE and self._pong is not None:
                self._pong.set()

    async def _check(self):
        # A ping through the server proves both directions work; then renew
        # the memberships so the layer's group_expiry never removes them.
        layer, channel = self._layer, self._channel
        loop = asyncio.get_running_loop()
        self._pong = asyncio.Event()
        sent = loop.time()
        try:
            await asyncio.wait_for(layer.send(channel, {"type": PING_TYPE}),
                                   self.timeout)
        except TimeoutError as exc:
            raise _ListenerDown("the heartbeat could not be sent") from exc
        while True:
            try:
                await asyncio.wait_for(self._pong.wait(), self.timeout)
                break
            except TimeoutError:
                # A backlog can hold the ping up; messages still arriving
                # prove the connection lives.
                if self._last_received < sent or \
                        loop.time() - self._last_received > self.timeout:
                    raise _ListenerDown("no heartbeat within the timeout") from None
        for group in list(self._groups.values()):
            await asyncio.wait_for(layer.group_add(group, channel), self.timeout)

    def stop(self):
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = self._listener = None
        if loop is None:
            return

        async def close():
            # The loop is ours alone: end the listener and any publish.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._disconnect()

        try:
            asyncio.run_coroutine_threadsafe(close(), loop).result(self.timeout)
        except Exception:
            logger.debug("Closing the pub/sub layer failed", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.timeout)

    def stats(self):
        return dict(self._counts, connected=bool(
            self._connected is not None and self._connected.is_set()
        ))


def _instance():
    from ...instance import instance_id

    return instance_id()


_backends = weakref.WeakSet()


def _after_fork():
    for backend in list(_backends):
        # Forget the parent's loop, thread and sockets without touching
        # them, and listen again with connections of our own.
        backend._reset()
        if backend._listening and backend._groups:
            backend._ensure_listener()


os.register_at_fork(after_in_child=_after_fork)
