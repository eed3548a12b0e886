"""Every error the coordination services raise, under one root.

Each error also derives from the built-in (or Django) exception that callers
would naturally catch, so ``except ValueError`` keeps working for a bad key.
"""

from django.core.exceptions import ImproperlyConfigured


class CoordinationError(Exception):
    """Root of every error raised by coordination and nocoplugins."""


class ConfigurationError(CoordinationError, ImproperlyConfigured):
    """A setting or backend name is wrong."""


class PayloadError(CoordinationError, TypeError):
    """A message, payload or cache value cannot be encoded as JSON."""


class ChannelNameError(CoordinationError, ValueError):
    """A channel, cache name, prefix, key or lock key breaks the name rules."""


class CacheNotFound(CoordinationError, KeyError):
    """``get_cache`` was asked for a cache that was never created."""

    def __str__(self):
        # KeyError quotes its argument; keep the message readable.
        return str(self.args[0]) if self.args else ""


class PluginNotFound(CoordinationError, KeyError):
    """No plugin of that name is installed."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class ChannelNotSubscribed(CoordinationError, LookupError):
    """An event was published to a channel this process has not subscribed."""


class EventAborted(CoordinationError):
    """The running event was timed out or cancelled."""

    def __init__(self, reason="cancelled"):
        self.reason = reason
        super().__init__(f"event aborted: {reason}")


class LockAcquireError(CoordinationError):
    """A lock could not be acquired within the allowed time."""


class LockNotHeldError(CoordinationError):
    """The lock expired or was taken over by another holder."""


class CacheStoreError(CoordinationError):
    """The cache store (Redis, or another Django cache) failed to answer.

    Raised from ``Cache`` methods with the driver's error as ``__cause__``;
    a cache created with ``miss_on_error=True`` turns failed reads into
    logged misses instead.
    """
