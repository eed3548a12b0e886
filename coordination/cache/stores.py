"""Adapters from a :class:`~coordination.cache.Cache` to a Django cache.

A store is a ``CACHES`` alias. The cache hands its adapter full keys
(``<app name>:<prefix>:<key>``) and values the adapter encodes before any
write, so every check happens before anything is written. Two adapters
exist:

- :class:`RedisStore` for django-redis: it talks to the redis-py client that
  django-redis manages (its connection pool, replicas, serializer and
  compressor), with the full key as the Redis key. Batch calls are one round
  trip and ``reset``/``keys`` use ``SCAN`` with a ``MATCH`` pattern.
- :class:`IndexedStore` for every other Django cache (locmem, the embedded
  default): Django's API cannot list keys, so the adapter keeps an index of
  the keys written through it, in this process.
"""

import json
import logging
import re
import threading

from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache

from ..exceptions import CacheStoreError, ConfigurationError
from ..names import dumps, loads

logger = logging.getLogger(__name__)

MISSING = object()
SCAN_COUNT = 500

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def glob_escape(text):
    """Escape ``text`` so a Redis MATCH pattern takes it literally."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def server_pattern(pattern):
    """The part of a user's glob that Redis may apply as it stands.

    ``*`` and ``?`` mean the same in Redis and in :mod:`fnmatch`; brackets
    and backslashes do not, so those patterns match everything on the server
    and are filtered here.
    """
    return "*" if ("[" in pattern or "\\" in pattern) else pattern


def open_store(name, alias):
    """The adapter for the cache store ``name`` (``CACHES[alias]``)."""
    backend = caches[alias]
    if is_django_redis(backend):
        return RedisStore(name, alias, backend)
    return IndexedStore(name, alias, backend)


def is_django_redis(backend):
    module = type(backend).__module__
    return module == "django_redis" or module.startswith("django_redis.")


def serializer_path(alias_settings):
    options = alias_settings.get("OPTIONS") or {}
    return options.get("SERIALIZER", "django_redis.serializers.pickle.PickleSerializer")


class BaseStore:
    """What a cache needs from its store; keys are full keys (str)."""

    #: False when only this process sees the data (locmem): ``wrap`` then
    #: needs no cluster lock, since other instances cannot read its value.
    shared = True

    def __init__(self, name, alias):
        self.name = name
        self.alias = alias

    def failed(self, action, exc):
        return CacheStoreError(
            f"The cache store {self.name!r} (CACHES[{self.alias!r}]) failed "
            f"to {action}: {exc.__class__.__name__}: {exc}. Check that the "
            "server is up and reachable, or create the cache with "
            "miss_on_error=True to treat failed reads as misses."
        )


class RedisStore(BaseStore):
    """django-redis: raw redis-py commands, values as JSON text."""

    def __init__(self, name, alias, backend):
        super().__init__(name, alias)
        from django_redis.client import DefaultClient, SentinelClient
        from django_redis.compressors.identity import IdentityCompressor

        client = backend.client
        if type(client) not in (DefaultClient, SentinelClient):
            raise ConfigurationError(
                f"CACHES[{alias!r}] uses the django-redis client "
                f"{type(client).__name__}, which coordination caches do not "
                "support (it changes how keys or values are stored); remove "
                'OPTIONS["CLIENT_CLASS"] or use DefaultClient.'
            )
        self._client = client
        self._plain = isinstance(client._compressor, IdentityCompressor)

    # Keys. The server key is the full key itself, "<app>:<prefix>:<key>":
    # APP_NAME namespaces it, so the alias's KEY_PREFIX, VERSION and
    # KEY_FUNCTION (meant for the plain Django API) are not applied.

    def _match(self, prefix, pattern):
        return glob_escape(prefix) + server_pattern(pattern)

    @staticmethod
    def _unkey(server_key):
        return server_key.decode() if isinstance(server_key, bytes) else server_key

    # Encoding. Without a compressor the bytes are the JSON text, which is
    # also what django-redis writes with our serializer (it stores ints as
    # their digits, and JSON reads those back as the same int).

    def encode(self, value):
        text = dumps(value, what="cache value")
        if self._plain:
            return text.encode()
        return self._client.encode(value)

    def decode(self, raw):
        if self._plain:
            return json.loads(raw)
        return self._client.decode(raw)

    def _redis(self, write):
        return self._client.get_client(write=write)

    # Commands.

    def get(self, key):
        try:
            raw = self._redis(False).get(key)
        except Exception as exc:
            raise self.failed("read a key", exc) from exc
        return MISSING if raw is None else self.decode(raw)

    def get_many(self, keys):
        if not keys:
            return []
        try:
            raws = self._redis(False).mget(keys)
        except Exception as exc:
            raise self.failed("read keys", exc) from exc
        if self._plain:
            # One JSON document for the whole batch decodes several times
            # faster than a loads() per value.
            values = json.loads(
                b"[" + b",".join(b"null" if r is None else r for r in raws) + b"]"
            )
            # A foreign non-JSON value such as b"1,2" would shift the others:
            # then decode one by one, which raises on it.
            if len(values) == len(raws):
                return [MISSING if r is None else v for r, v in zip(raws, values)]
        decode = self.decode
        return [MISSING if raw is None else decode(raw) for raw in raws]

    def set(self, key, payload, ttl):
        try:
            client = self._redis(True)
            if ttl is None:
                client.set(key, payload)
            elif ttl <= 0:
                client.delete(key)
            else:
                client.set(key, payload, px=_millis(ttl))
        except Exception as exc:
            raise self.failed("write a key", exc) from exc

    def set_many(self, payloads, ttl):
        if not payloads:
            return
        try:
            client = self._redis(True)
            if ttl is None:
                client.mset(payloads)
            elif ttl <= 0:
                client.delete(*payloads)
            else:
                # MULTI/EXEC: one round trip, and all keys or none.
                pipe = client.pipeline(transaction=True)
                px = _millis(ttl)
                for server_key, payload in payloads.items():
                    pipe.set(server_key, payload, px=px)
                pipe.execute()
        except Exception as exc:
            raise self.failed("write keys", exc) from exc

    def delete(self, key):
        try:
            return bool(self._redis(True).delete(key))
        except Exception as exc:
            raise self.failed("delete a key", exc) from exc

    def delete_many(self, keys):
        if not keys:
            return
        try:
            self._redis(True).delete(*keys)
        except Exception as exc:
            raise self.failed("delete keys", exc) from exc

    def scan(self, prefix, pattern="*"):
        """Keys starting with ``prefix`` (full keys), by SCAN MATCH."""
        try:
            found = self._redis(False).scan_iter(
                match=self._match(prefix, pattern), count=SCAN_COUNT
            )
            return [self._unkey(k) for k in found]
        except Exception as exc:
            raise self.failed("scan keys", exc) from exc

    def delete_prefix(self, prefix):
        """Delete every key starting with ``prefix``; return how many."""
        client = self._redis(True)
        removed = 0
        batch = []
        try:
            # Never KEYS: SCAN walks the keyspace in steps without blocking
            # the server, and each step's keys go in one DEL.
            for server_key in client.scan_iter(
                match=self._match(prefix, "*"), count=SCAN_COUNT
            ):
                batch.append(server_key)
                if len(batch) >= SCAN_COUNT:
                    removed += client.delete(*batch)
                    batch = []
            if batch:
                removed += client.delete(*batch)
        except Exception as exc:
            raise self.failed("delete the cache's keys", exc) from exc
        return removed


class IndexedStore(BaseStore):
    """Any other Django cache, values as JSON text, keys in an index.

    The index lives in this process and is shared by every cache on the same
    store here, so ``reset``/``keys`` are exact for locmem. For a store that
    other processes share (database, file, memcached) they see only the keys
    this process wrote.
    """

    # (store identity) -> set of full keys written through any adapter.
    _indexes = {}
    _indexes_lock = threading.Lock()
    PRUNE_FLOOR = 1024

    def __init__(self, name, alias, backend):
        super().__init__(name, alias)
        storage = getattr(backend, "_cache", None)
        # Two locmem aliases with one LOCATION share their storage dict.
        identity = ("storage", id(storage)) if isinstance(storage, dict) else alias
        self.shared = not isinstance(backend, LocMemCache)
        with self._indexes_lock:
            self._index = self._indexes.setdefault(identity, set())
        self._prune_at = self.PRUNE_FLOOR
        self._lock = self._indexes_lock

    @property
    def _backend(self):
        # Django's cache objects are per thread; ask for this thread's one.
        return caches[self.alias]

    def encode(self, value):
        return dumps(value, what="cache value")

    def get(self, key):
        try:
            text = self._backend.get(key, MISSING)
        except Exception as exc:
            raise self.failed("read a key", exc) from exc
        return MISSING if text is MISSING else loads(text)

    def get_many(self, keys):
        if not keys:
            return []
        try:
            found = self._backend.get_many(keys)
        except Exception as exc:
            raise self.failed("read keys", exc) from exc
        return [loads(found[k]) if k in found else MISSING for k in keys]

    def set(self, key, payload, ttl):
        try:
            self._backend.set(key, payload, timeout=ttl)
        except Exception as exc:
            raise self.failed("write a key", exc) from exc
        self._remember([key], ttl)

    def set_many(self, payloads, ttl):
        if not payloads:
            return
        try:
            self._backend.set_many(payloads, timeout=ttl)
        except Exception as exc:
            raise self.failed("write keys", exc) from exc
        self._remember(payloads, ttl)

    def delete(self, key):
        try:
            deleted = self._backend.delete(key)
        except Exception as exc:
            raise self.failed("delete a key", exc) from exc
        with self._lock:
            self._index.discard(key)
        return bool(deleted)

    def delete_many(self, keys):
        if not keys:
            return
        try:
            self._backend.delete_many(keys)
        except Exception as exc:
            raise self.failed("delete keys", exc) from exc
        with self._lock:
            self._index.difference_update(keys)

    def scan(self, prefix, pattern="*"):
        with self._lock:
            candidates = [k for k in self._index if k.startswith(prefix)]
        return self._live(candidates)

    def delete_prefix(self, prefix):
        with self._lock:
            candidates = [k for k in self._index if k.startswith(prefix)]
        live = self._live(candidates)
        self.delete_many(candidates)
        return len(live)

    def _remember(self, keys, ttl):
        if ttl is not None and ttl <= 0:
            return
        with self._lock:
            self._index.update(keys)
            grown = len(self._index) > self._prune_at
        if grown:
            self._prune()

    def _prune(self):
        # Keys that expired stay in the index until looked at; drop them
        # when it has doubled, so it tracks the live keys' size.
        with self._lock:
            candidates = list(self._index)
        live = set(self._live(candidates))
        with self._lock:
            self._prune_at = max(self.PRUNE_FLOOR, 2 * len(live))
        logger.debug(
            "Pruned the cache key index store=%s live=%d dropped=%d",
            self.name, len(live), len(candidates) - len(live),
            extra={"action": "cache_index_prune"},
        )

    def _live(self, candidates):
        """The candidates still in the store; forget the others."""
        if not candidates:
            return []
        # Under the index lock, so a key written meanwhile is not forgotten.
        with self._lock:
            try:
                found = self._backend.get_many(candidates)
            except Exception as exc:
                raise self.failed("list keys", exc) from exc
            self._index.difference_update(k for k in candidates if k not in found)
        return [k for k in candidates if k in found]


def _millis(ttl):
    # PX must be a positive integer; a tiny ttl still expires almost at once.
    return max(1, int(ttl * 1000))
