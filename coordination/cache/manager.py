"""``CacheManager``: creates and finds the named caches of this process."""

import logging
import math
import numbers
import threading

from django.conf import settings as django_settings
from django.core.cache import caches

from ..conf import settings
from ..exceptions import CacheNotFound, ChannelNameError, ConfigurationError
from ..names import validate_name
from .cache import Cache
from .stores import is_django_redis, open_store, serializer_path

logger = logging.getLogger(__name__)

DEFAULT_CACHE = "default"
JSON_SERIALIZER = "coordination.cache.serializers.JSONSerializer"
PICKLE_SERIALIZERS = {"django_redis.serializers.pickle.PickleSerializer"}


class CacheManager:
    """The caches of this process, by name (``app.cache_manager``).

    ``app.cache`` is the cache named ``"default"``, created on first use with
    the default store and ttl unless the project created it first.
    """

    def __init__(self, services):
        self._services = services
        self._caches: dict[str, Cache] = {}
        self._lock = threading.Lock()

    def create_cache(
        self,
        name: str,
        *,
        prefix: str | None = None,
        store: str | None = None,
        ttl: float | None = None,
        miss_on_error: bool = False,
    ) -> Cache:
        """Create the cache ``name``, or return it if it exists alike.

        ``prefix`` (default: ``name``) namespaces its keys on the store;
        ``store`` (default: ``COORDINATION["DEFAULT_CACHE_STORE"]``) names an
        entry of ``COORDINATION["CACHE_STORES"]``; ``ttl`` (seconds, default:
        the store's ``TIMEOUT``) applies when a call gives none.
        ``miss_on_error=True`` turns failed reads into logged misses.

        Creating it again with the same arguments returns the same cache;
        with other arguments it raises ValueError.
        """
        validate_name(name, "cache name")
        prefix = name if prefix is None else prefix
        _check_prefix(prefix, name)
        store = settings.DEFAULT_CACHE_STORE if store is None else store
        alias = _alias(store)
        if ttl is None:
            ttl = caches[alias].default_timeout
        elif (isinstance(ttl, bool) or not isinstance(ttl, numbers.Real)
              or not 0 < ttl < math.inf):
            raise ValueError(
                f"The ttl of cache {name!r} must be a positive number of "
                f"seconds or None (the store's TIMEOUT), not {ttl!r}."
            )
        wanted = dict(prefix=prefix, store=store, ttl=ttl,
                      miss_on_error=bool(miss_on_error))
        with self._lock:
            existing = self._caches.get(name)
            if existing is not None:
                return _same_or_raise(existing, wanted)
            _check_prefix_free(self._caches.values(), name, prefix, store)
            cache = Cache(self._services, name=name, backend=open_store(store, alias),
                          **wanted)
            self._caches[name] = cache
        logger.debug(
            "Created cache=%s prefix=%s store=%s alias=%s ttl=%s", name, prefix,
            store, alias, ttl, extra={"action": "cache_create"},
        )
        return cache

    def get_cache(self, name: str) -> Cache:
        """The cache ``name``; ``CacheNotFound`` if it was never created."""
        cache = self._caches.get(name)
        if cache is not None:
            return cache
        if name == DEFAULT_CACHE:
            return self.create_cache(DEFAULT_CACHE)
        raise CacheNotFound(
            f"No cache named {name!r}; create it first with "
            f"app.cache_manager.create_cache({name!r}). Known caches: "
            f"{', '.join(map(repr, sorted(self._caches))) or 'none'}."
        )

    def __iter__(self):
        return iter(list(self._caches.values()))


def _check_prefix(prefix, name):
    validate_name(prefix, "cache prefix")
    # "<app>:<prefix>:<key>" must never name another cache's key, or reset()
    # of one cache would remove another's: prefix "a" with key "b:c" and
    # prefix "a:b" with key "c" would meet.
    if ":" in prefix:
        raise ChannelNameError(
            f"The prefix {prefix!r} of cache {name!r} contains ':', which "
            "separates the prefix from the key on the store; pass a prefix "
            f"without it, such as prefix={prefix.replace(':', '.')!r}."
        )


def _alias(store):
    stores = settings.CACHE_STORES
    if not isinstance(stores, dict) or store not in stores:
        known = ", ".join(map(repr, stores)) if isinstance(stores, dict) else "none"
        raise ConfigurationError(
            f"Unknown cache store {store!r}; add it to "
            f'COORDINATION["CACHE_STORES"] (store name -> CACHES alias) or use '
            f"one of {known}."
        )
    alias = stores[store]
    alias_settings = django_settings.CACHES.get(alias)
    if alias_settings is None:
        raise ConfigurationError(
            f'COORDINATION["CACHE_STORES"][{store!r}] names the CACHES alias '
            f"{alias!r}, which is not in CACHES."
        )
    if is_django_redis(caches[alias]) and (
        serializer_path(alias_settings) in PICKLE_SERIALIZERS
    ):
        raise ConfigurationError(
            f"CACHES[{alias!r}] (cache store {store!r}) uses django-redis's "
            "pickle serializer; coordination caches keep JSON on the server. "
            f'Set CACHES[{alias!r}]["OPTIONS"]["SERIALIZER"] = '
            f'"{JSON_SERIALIZER}".'
        )
    return alias


def _same_or_raise(existing, wanted):
    have = dict(prefix=existing.prefix, store=existing.store, ttl=existing.ttl,
                miss_on_error=existing.miss_on_error)
    if have == wanted:
        return existing
    diff = ", ".join(
        f"{k}={wanted[k]!r} (it has {have[k]!r})" for k in have if have[k] != wanted[k]
    )
    raise ValueError(
        f"The cache {existing.name!r} already exists with other arguments: "
        f"{diff}. Use get_cache({existing.name!r}) or another name."
    )


def _check_prefix_free(existing, name, prefix, store):
    for other in existing:
        if other.prefix == prefix and other.store == store:
            raise ValueError(
                f"The cache {other.name!r} already uses prefix {prefix!r} on "
                f"store {store!r}; cache {name!r} would share (and reset) its "
                "keys. Pass another prefix."
            )
