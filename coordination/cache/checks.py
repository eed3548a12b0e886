"""System checks for cache stores on django-redis.

A store backed by django-redis must keep JSON on the server: django-redis
pickles by default, and anything written by the plain Django API on that
alias would then be a pickle (unsafe to read from a shared server, and
unreadable by our caches).
"""

from django.conf import settings as django_settings
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

from ..conf import settings
from .manager import JSON_SERIALIZER, PICKLE_SERIALIZERS
from .stores import serializer_path

LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
SUPPORTED_CLIENTS = {
    "django_redis.client.DefaultClient",
    "django_redis.client.default.DefaultClient",
    "django_redis.client.SentinelClient",
    "django_redis.client.sentinel.SentinelClient",
}


@register(Tags.caches, Tags.compatibility)
def check_cache_stores(app_configs=None, **kwargs):
    stores = settings.CACHE_STORES
    if not isinstance(stores, dict):
        return []  # coordination.E004 reports it
    messages = []
    caches = getattr(django_settings, "CACHES", {})
    for store, alias in stores.items():
        config = caches.get(alias) if isinstance(alias, str) else None
        if not isinstance(config, dict):
            continue  # coordination.E005 reports it
        if _is_django_redis(config):
            messages += _check_redis_alias(store, alias, config)
        elif config.get("BACKEND") != LOCMEM:
            messages.append(Warning(
                f"The cache store {store!r} uses CACHES[{alias!r}] "
                f"({config.get('BACKEND')}), which cannot list its keys: "
                "reset() and keys() of its caches see only the keys this "
                "process wrote.",
                hint="Use django-redis for a store that several processes "
                "share, or locmem for one process.",
                obj=f"settings.CACHES[{alias!r}]", id="coordination.W102",
            ))
    return messages


def _is_django_redis(config):
    backend = config.get("BACKEND", "")
    try:
        cls = import_string(backend)
    except ImportError:
        return False
    return cls.__module__.startswith("django_redis")


def _check_redis_alias(store, alias, config):
    obj = f"settings.CACHES[{alias!r}]"
    fix = f'Set CACHES[{alias!r}]["OPTIONS"]["SERIALIZER"] = "{JSON_SERIALIZER}".'
    messages = []
    serializer = serializer_path(config)
    if serializer in PICKLE_SERIALIZERS:
        messages.append(Error(
            f"The cache store {store!r} uses CACHES[{alias!r}], whose "
            "django-redis serializer is pickle; coordination caches keep only "
            "JSON on the server.", hint=fix, obj=obj, id="coordination.E101",
        ))
    elif serializer != JSON_SERIALIZER:
        messages.append(Warning(
            f"The cache store {store!r} uses CACHES[{alias!r}] with the "
            f"serializer {serializer!r}. Coordination caches write strict "
            "JSON there; code using the plain Django API on this alias may "
            "write values they cannot read.", hint=fix, obj=obj,
            id="coordination.W101",
        ))
    client = (config.get("OPTIONS") or {}).get("CLIENT_CLASS")
    if client is not None and client not in SUPPORTED_CLIENTS:
        messages.append(Error(
            f"The cache store {store!r} uses CACHES[{alias!r}] with the "
            f"django-redis client {client!r}, which stores keys or values in "
            "its own way; coordination caches support DefaultClient and "
            "SentinelClient.", hint='Remove OPTIONS["CLIENT_CLASS"].',
            obj=obj, id="coordination.E102",
        ))
    return messages
