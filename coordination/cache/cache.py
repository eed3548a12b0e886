"""The ``Cache`` object: JSON values under ``<app name>:<prefix>:<key>``."""

import asyncio
import concurrent.futures
import fnmatch
import hashlib
import inspect
import logging
import math
import numbers
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from asgiref.sync import sync_to_async

from ..exceptions import CacheStoreError, LockAcquireError
from ..names import validate_name
from .stores import MISSING

logger = logging.getLogger(__name__)

# The name rules of coordination.names as one regular expression, so the hot
# path (every get, every key of an mget) checks a key in one C call; a key it
# refuses goes through validate_name for the full error message. ``\s`` is
# str.isspace and Cc is U+0000-U+001F and U+007F-U+009F.
_VALID_KEY = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]{1,200}")

# In-flight computations of this process: (store, full key) -> Future.
_flights: dict[tuple[str, str], concurrent.futures.Future] = {}
_flights_lock = threading.Lock()


def _not_none(value):
    return value is not None


def _always(value):
    return True


class Cache:
    """A named cache on one store; create it with ``create_cache``.

    Values are JSON (dict, list, str, int, float, bool, None) on every store;
    anything else raises ``PayloadError`` before anything is written. Keys
    follow the name rules (1 to 200 characters, no whitespace or control
    characters) and are shown as given; the store sees
    ``<app name>:<prefix>:<key>``.

    ``ttl`` arguments are seconds; None means the cache's ttl (which is the
    store's ``TIMEOUT`` unless the cache was created with another). A ttl of
    0 or less removes the key.
    """

    #: Lease of the cross-instance lock taken while ``wrap`` computes a
    #: missing value; it is renewed while the function runs, so it only
    #: bounds how long a crashed instance holds the others up.
    wrap_lock_ttl: float = 10
    #: How long ``wrap`` waits for another instance computing the same key
    #: before it computes too (logged as a warning).
    wrap_lock_timeout: float = 60

    def __init__(self, services, *, name, prefix, store, ttl, miss_on_error, backend):
        self.name = name
        self.prefix = prefix
        self.store = store
        self.ttl = ttl
        self.miss_on_error = miss_on_error
        self._services = services
        self._store = backend
        self._head = f"{services.name}:{prefix}:"

    def __repr__(self):
        return (
            f"<Cache name={self.name!r} prefix={self.prefix!r} "
            f"store={self.store!r}>"
        )

    # Keys and arguments.

    def _key(self, key):
        if type(key) is not str or _VALID_KEY.fullmatch(key) is None:
            validate_name(key, "cache key")
        return self._head + key

    def _keys(self, keys):
        if isinstance(keys, (str, bytes)):
            raise TypeError(
                "Pass a list of keys, not a single str: mget(['a', 'b'])."
            )
        head = self._head
        match = _VALID_KEY.fullmatch
        full = []
        for key in keys:
            if type(key) is not str or match(key) is None:
                validate_name(key, "cache key")
            full.append(head + key)
        return full

    def _ttl(self, ttl):
        if ttl is None:
            return self.ttl
        if isinstance(ttl, bool) or not isinstance(ttl, numbers.Real):
            raise TypeError(
                f"ttl must be a number of seconds or None, not {ttl!r}."
            )
        if not math.isfinite(ttl):
            raise ValueError(
                f"ttl must be a finite number of seconds, not {ttl!r}; use "
                "a store whose TIMEOUT is None for keys that never expire."
            )
        return ttl

    def _read_failed(self, exc, key):
        if not self.miss_on_error:
            raise exc
        logger.warning(
            "Cache read failed, treated as a miss cache=%s key=%s store=%s: %s",
            self.name, key, self.store, exc.__cause__ or exc,
            extra={"action": "cache_read_error"},
        )

    def _read(self, key, full):
        """The stored value, or MISSING (also for a failed read if allowed)."""
        try:
            return self._store.get(full)
        except CacheStoreError as exc:
            self._read_failed(exc, key)
            return MISSING

    # Single keys.

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is missing."""
        value = self._read(key, self._key(key))
        return default if value is MISSING else value

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` (JSON) under ``key`` for ``ttl`` seconds."""
        full = self._key(key)
        ttl = self._ttl(ttl)
        payload = self._store.encode(value)
        self._store.set(full, payload, ttl)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        return self._store.delete(self._key(key))

    # Several keys, each call one round trip.

    def mset(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """Store every item of ``mapping``; all values are checked first."""
        if not isinstance(mapping, Mapping):
            raise TypeError(
                f"mset takes a dict of key to value, not {type(mapping).__name__}."
            )
        ttl = self._ttl(ttl)
        encode = self._store.encode
        payloads = {}
        for key, full in zip(mapping, self._keys(mapping)):
            payloads[full] = encode(mapping[key])
        self._store.set_many(payloads, ttl)

    def mget(self, keys: Iterable[str]) -> list[Any]:
        """The values of ``keys`` in order, None for each missing key."""
        full = self._keys(keys)
        try:
            values = self._store.get_many(full)
        except CacheStoreError as exc:
            self._read_failed(exc, f"{len(full)} keys")
            return [None] * len(full)
        return [None if v is MISSING else v for v in values]

    def mdel(self, keys: Iterable[str]) -> None:
        """Remove every key of ``keys``."""
        self._store.delete_many(self._keys(keys))

    # The whole cache.

    def keys(self, pattern: str = "*") -> list[str]:
        """This cache's keys as given, sorted, filtered by a glob.

        The glob is :func:`fnmatch.fnmatchcase`'s: ``*``, ``?``, ``[abc]``,
        ``[!abc]``.
        """
        validate_name(pattern, "key pattern")
        start = len(self._head)
        found = (k[start:] for k in self._store.scan(self._head, pattern))
        return sorted(k for k in found if fnmatch.fnmatchcase(k, pattern))

    def reset(self) -> int:
        """Remove this cache's keys (no other cache's); return how many."""
        removed = self._store.delete_prefix(self._head)
        logger.info(
            "Cache reset cache=%s prefix=%s store=%s removed=%d",
            self.name, self.prefix, self.store, removed,
            extra={"action": "cache_reset"},
        )
        return removed

    # Read-through.

    def wrap(self, key: str, fn: Callable[[], Any], ttl: float | None = None) -> Any:
        """The cached value of ``key``, else ``fn()``, cached for ``ttl``.

        Every value is cached, None and other falsy ones included. A missing
        value is computed once at a time in the cluster: threads of this
        process share one call of ``fn``, and other instances wait for a
        short lock from the lock manager, then read what it stored (on a
        store only this process sees, locmem, no lock is taken). If ``fn``
        raises, nothing is cached and every waiting caller gets the error.
        """
        return self._wrap(key, fn, ttl, _always)

    def wrap_with_condition(
        self,
        key: str,
        fn: Callable[[], Any],
        *,
        use_cache: bool = True,
        is_cacheable: Callable[[Any], bool] | None = None,
        ttl: float | None = None,
    ) -> Any:
        """Like :meth:`wrap`, caching only what ``is_cacheable`` accepts.

        ``is_cacheable`` defaults to "not None". A stored value it refuses
        counts as a miss. With ``use_cache=False`` this is just ``fn()``:
        nothing is read or written.
        """
        if not use_cache:
            return fn()
        return self._wrap(key, fn, ttl, is_cacheable or _not_none)

    def _wrap(self, key, fn, ttl, cacheable):
        full = self._key(key)
        ttl = self._ttl(ttl)
        value = self._read(key, full)
        if value is not MISSING and cacheable(value):
            return value
        future, leader = self._join_flight(full)
        if not leader:
            return future.result()
        try:
            value = self._compute(key, full, fn, ttl, cacheable)
        except BaseException as exc:
            self._end_flight(full, future, error=exc)
            raise
        self._end_flight(full, future, value=value)
        return value

    def _compute(self, key, full, fn, ttl, cacheable):
        lock = self._enter_lock(key, full) if self._store.shared else None
        try:
            if lock is not None:
                # Another instance may have stored it while we waited.
                value = self._read(key, full)
                if value is not MISSING and cacheable(value):
                    return value
            value = fn()
            if cacheable(value):
                self._store_computed(key, full, value, ttl)
            return value
        finally:
            if lock is not None:
                self._exit_lock(key, lock)

    def _store_computed(self, key, full, value, ttl):
        payload = self._store.encode(value)
        try:
            self._store.set(full, payload, ttl)
        except CacheStoreError as exc:
            if not self.miss_on_error:
                raise
            logger.warning(
                "Cache write failed, value returned uncached cache=%s key=%s "
                "store=%s: %s", self.name, key, self.store, exc.__cause__ or exc,
                extra={"action": "cache_write_error"},
            )

    # Single flight: one computation per key in this process.

    def _join_flight(self, full):
        flight = (self.store, full)
        with _flights_lock:
            future = _flights.get(flight)
            if future is not None:
                return future, False
            future = concurrent.futures.Future()
            # Running futures cannot be cancelled by an impatient waiter.
            future.set_running_or_notify_cancel()
            _flights[flight] = future
            return future, True

    def _end_flight(self, full, future, *, value=None, error=None):
        with _flights_lock:
            _flights.pop((self.store, full), None)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    # The cross-instance lock.

    def _lock_key(self, key):
        # The lock manager adds the app name; keep the key within 200.
        key = f"cache:{self.prefix}:{key}"
        if len(key) > 200:
            key = "cache:" + hashlib.sha256(key.encode()).hexdigest()
        return key

    def _lock_context(self, key):
        manager = self._services.get("lock_manager")
        return manager.lock(
            self._lock_key(key), ttl=self.wrap_lock_ttl,
            timeout=self.wrap_lock_timeout,
        )

    def _enter_lock(self, key, full):
        try:
            context = self._lock_context(key)
            context.__enter__()
        except LockAcquireError:
            self._lock_missed(key, None)
            return None
        except Exception as exc:
            self._lock_missed(key, exc)
            return None
        return context

    async def _aenter_lock(self, key, full):
        try:
            context = self._lock_context(key)
            await context.__aenter__()
        except LockAcquireError:
            self._lock_missed(key, None)
            return None
        except Exception as exc:
            self._lock_missed(key, exc)
            return None
        return context

    def _exit_lock(self, key, context):
        # The value is computed and stored; a failed release only delays the
        # next computation of this key until the lease runs out.
        try:
            context.__exit__(None, None, None)
        except Exception:
            self._unlock_failed(key)

    async def _aexit_lock(self, key, context):
        try:
            await context.__aexit__(None, None, None)
        except Exception:
            self._unlock_failed(key)

    def _unlock_failed(self, key):
        logger.warning(
            "Releasing the wrap lock of cache=%s key=%s failed; it ends "
            "with its ttl", self.name, key, exc_info=True,
            extra={"action": "cache_wrap_unlock_error"},
        )

    def _lock_missed(self, key, exc):
        if exc is None:
            logger.warning(
                "The wrap lock of cache=%s key=%s stayed busy or unreachable "
                "for %ss; computing here too", self.name, key,
                self.wrap_lock_timeout,
                extra={"action": "cache_wrap_lock_timeout"},
            )
        else:
            logger.warning(
                "The lock manager failed; computing cache=%s key=%s without "
                "the cluster lock", self.name, key, exc_info=exc,
                extra={"action": "cache_wrap_lock_error"},
            )

    # Async twins. Store calls run in a worker thread: the stores are
    # thread-safe, so they need not queue behind Django's sync thread.

    async def aget(self, key: str, default: Any = None) -> Any:
        return await sync_to_async(self.get, thread_sensitive=False)(key, default)

    async def aset(self, key: str, value: Any, ttl: float | None = None) -> None:
        return await sync_to_async(self.set, thread_sensitive=False)(key, value, ttl)

    async def adelete(self, key: str) -> bool:
        return await sync_to_async(self.delete, thread_sensitive=False)(key)

    async def amset(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        return await sync_to_async(self.mset, thread_sensitive=False)(mapping, ttl)

    async def amget(self, keys: Iterable[str]) -> list[Any]:
        return await sync_to_async(self.mget, thread_sensitive=False)(list(keys))

    async def amdel(self, keys: Iterable[str]) -> None:
        return await sync_to_async(self.mdel, thread_sensitive=False)(list(keys))

    async def akeys(self, pattern: str = "*") -> list[str]:
        return await sync_to_async(self.keys, thread_sensitive=False)(pattern)

    async def areset(self) -> int:
        return await sync_to_async(self.reset, thread_sensitive=False)()

    async def awrap(
        self, key: str, fn: Callable[[], Any], ttl: float | None = None
    ) -> Any:
        """:meth:`wrap` for async code; ``fn`` may be sync or async."""
        return await self._awrap(key, fn, ttl, _always)

    async def awrap_with_condition(
        self,
        key: str,
        fn: Callable[[], Any],
        *,
        use_cache: bool = True,
        is_cacheable: Callable[[Any], bool] | None = None,
        ttl: float | None = None,
    ) -> Any:
        """:meth:`wrap_with_condition` for async code; ``fn`` may be async."""
        if not use_cache:
            return await _call(fn)
        return await self._awrap(key, fn, ttl, is_cacheable or _not_none)

    async def _awrap(self, key, fn, ttl, cacheable):
        full = self._key(key)
        ttl = self._ttl(ttl)
        value = await sync_to_async(self._read, thread_sensitive=False)(key, full)
        if value is not MISSING and cacheable(value):
            return value
        future, leader = self._join_flight(full)
        if not leader:
            return await asyncio.wrap_future(future)
        try:
            value = await self._acompute(key, full, fn, ttl, cacheable)
        except BaseException as exc:
            self._end_flight(full, future, error=exc)
            raise
        self._end_flight(full, future, value=value)
        return value

    async def _acompute(self, key, full, fn, ttl, cacheable):
        read = sync_to_async(self._read, thread_sensitive=False)
        lock = await self._aenter_lock(key, full) if self._store.shared else None
        try:
            if lock is not None:
                value = await read(key, full)
                if value is not MISSING and cacheable(value):
                    return value
            value = await _call(fn)
            if cacheable(value):
                await sync_to_async(self._store_computed, thread_sensitive=False)(
                    key, full, value, ttl
                )
            return value
        finally:
            if lock is not None:
                await self._aexit_lock(key, lock)


async def _call(fn):
    """Call a sync or async ``fn``; a sync one runs in a worker thread."""
    if inspect.iscoroutinefunction(fn):
        return await fn()
    value = await sync_to_async(fn, thread_sensitive=True)()
    if inspect.isawaitable(value):
        return await value
    return value
