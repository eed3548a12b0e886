"""A django-redis serializer that keeps values JSON on the server.

Use it on every ``CACHES`` alias that a coordination cache store names::

    CACHES = {
        "redis": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
            "OPTIONS": {
                "SERIALIZER": "coordination.cache.serializers.JSONSerializer",
            },
        },
    }

django-redis pickles by default; a pickle read from a shared server runs
whatever code the writer chose, and Python alone can read it. With this
serializer the plain Django cache API on that alias follows the same strict
JSON rules as :class:`coordination.cache.Cache`.
"""

from typing import Any

from ..names import dumps, loads

try:
    from django_redis.serializers.base import BaseSerializer
except ImportError:  # django-redis is an optional extra
    BaseSerializer = object


class JSONSerializer(BaseSerializer):
    """Strict JSON: ``PayloadError`` for anything JSON would not read back."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        pass

    def dumps(self, value: Any) -> bytes:
        return dumps(value, what="cache value").encode()

    def loads(self, value: bytes) -> Any:
        return loads(value)
