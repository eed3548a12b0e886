"""Shared, expiring key/value data on Django's cache framework.

``app.cache_manager.create_cache(name, prefix=, store=, ttl=)`` returns a
:class:`Cache`; ``app.cache`` is the cache named ``"default"``. See
docs/cache.md.
"""

from .cache import Cache
from .manager import CacheManager

__all__ = ["Cache", "CacheManager"]
