"""Settings for cache tests: a locmem store and, given a URL, a Redis one."""

JSON_SERIALIZER = "coordination.cache.serializers.JSONSerializer"


def redis_alias(url, **options):
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": url,
        "OPTIONS": {"SERIALIZER": JSON_SERIALIZER, **options},
    }


def cache_settings(redis_url=None, *, default_store="memory", locks=None):
    """Keyword arguments for ``override_settings``.

    Stores: "memory" (locmem, CACHES["default"]) and, with ``redis_url``,
    "redis" (django-redis with the JSON serializer, CACHES["redis"]).
    """
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    stores = {"memory": "default"}
    if redis_url is not None:
        caches["redis"] = redis_alias(redis_url)
        stores["redis"] = "redis"
    return {
        "CACHES": caches,
        "COORDINATION": {
            "APP_NAME": "tests",
            "CACHE_STORES": stores,
            "DEFAULT_CACHE_STORE": default_store,
            "LOCKS": locks or {"BACKEND": "local"},
        },
    }
