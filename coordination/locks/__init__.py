"""Cluster-wide locks: ``app.lock_manager``.

``LockManager`` validates keys and durations, describes the owner, renews
leases of running critical sections and delegates storage to the backend
named by ``COORDINATION["LOCKS"]["BACKEND"]`` (``local``, ``database``,
``redis``, or one added with :meth:`LockManager.register_adapter`).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import numbers
import secrets
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from .. import backends as backend_registry
from ..conf import settings
from ..exceptions import LockAcquireError
from ..instance import describe
from ..instance import pid as current_pid
from ..names import validate_name
from .backends.base import BaseLockBackend
from .lock import Lock, LockContext
from .renewal import Renewer

__all__ = ["Lock", "LockManager"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# One renewal thread per process, shared by every manager.
_renewer = Renewer()

_PLAIN_NUMBERS = (int, float)
_INFINITY = float("inf")


class LockManager:
    """Acquire, hold and release named locks shared by every instance."""

    def __init__(self, services: Any):
        self._services = services
        self._backend: BaseLockBackend | None = None
        self._backend_lock = threading.Lock()
        self._renewer = _renewer

    # -- configuration --------------------------------------------------------

    @staticmethod
    def register_adapter(name: str, adapter_class: type[BaseLockBackend]) -> None:
        """Make ``name`` usable as ``COORDINATION["LOCKS"]["BACKEND"]``."""
        if not (isinstance(adapter_class, type)
                and issubclass(adapter_class, BaseLockBackend)):
            raise TypeError(
                f"register_adapter({name!r}, ...) needs a subclass of "
                "coordination.locks.backends.base.BaseLockBackend, not "
                f"{adapter_class!r}."
            )
        backend_registry.register("LOCKS", name, adapter_class)

    @property
    def backend(self) -> BaseLockBackend:
        """The backend instance, built from the settings on first use."""
        backend = self._backend
        if backend is None:
            with self._backend_lock:
                if self._backend is None:
                    self._backend = self._build_backend()
                backend = self._backend
        return backend

    def _build_backend(self):
        backend_class, options = backend_registry.configured(
            "LOCKS", settings.LOCKS, BaseLockBackend
        )
        return backend_class(self._services.name, options)

    def stop(self) -> None:
        """Stop the renewal thread once no critical section needs it, and
        close the backend's connections (they reopen on demand)."""
        self._renewer.stop()
        if self._backend is not None:
            self._backend.close()

    # -- validation -----------------------------------------------------------

    @staticmethod
    def _check_ttl(ttl):
        if ttl is None:
            ttl = settings.LOCKS.get("DEFAULT_TTL", 30)
        if type(ttl) in _PLAIN_NUMBERS and 0 < ttl < _INFINITY:
            # The common case without the numbers.Real ABC check (0.4 us
            # of the 0.5 us the full check takes).
            return float(ttl)
        if isinstance(ttl, bool) or not isinstance(ttl, numbers.Real) or not (
            0 < ttl < _INFINITY
        ):
            raise ValueError(
                f"A lock ttl must be a positive number of seconds, not {ttl!r}; "
                "for example ttl=30."
            )
        return float(ttl)

    @staticmethod
    def _check_timeout(timeout):
        if timeout is None:
            return None
        if type(timeout) in _PLAIN_NUMBERS and timeout >= 0:
            return float(timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or (
            timeout < 0 or timeout != timeout
        ):
            raise ValueError(
                "A lock timeout must be None (wait until acquired) or a number "
                f"of seconds >= 0, not {timeout!r}."
            )
        return float(timeout)

    def _check_args(self, key, ttl, timeout):
        _check_key(key)
        return self._check_ttl(ttl), self._check_timeout(timeout)

    def _prepare(self, key, ttl, timeout, purpose):
        return (*self._check_args(key, ttl, timeout), _owner(purpose))

    # -- acquisition ----------------------------------------------------------

    def _acquire(self, key, ttl, timeout, purpose) -> Lock:
        ttl, timeout, owner = self._prepare(key, ttl, timeout, purpose)
        owner_token = _new_owner_token()
        granted = self.backend.acquire(key, owner_token, ttl, owner, timeout)
        return self._made(key, granted, owner_token, ttl, owner, timeout)

    async def _aacquire(self, key, ttl, timeout, purpose) -> Lock:
        ttl, timeout, owner = self._prepare(key, ttl, timeout, purpose)
        owner_token = _new_owner_token()
        granted = await self.backend.aacquire(key, owner_token, ttl, owner,
                                              timeout)
        return self._made(key, granted, owner_token, ttl, owner, timeout)

    def _made(self, key, granted, owner_token, ttl, owner, timeout):
        if granted is None:
            raise LockAcquireError(
                f"The lock {key!r} stayed busy for {timeout:g} s; try again "
                "later or pass a longer timeout."
            )
        token, started = granted
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "Acquired lock=%s token=%s ttl=%s", key, token, ttl,
                extra={"action": "lock_acquired", "lock": key},
            )
        return Lock(self, key, token, owner_token, ttl, owner, started)

    def acquire(self, key: str, *, ttl: float | None = None,
                timeout: float | None = None) -> Lock:
        """Return a held ``Lock``, waiting up to ``timeout`` (None: forever).

        The lock is not renewed: it expires after ``ttl`` unless released or
        extended. Raises LockAcquireError when ``timeout`` runs out.
        """
        return self._acquire(key, ttl, timeout, _caller())

    def try_acquire(self, key: str, *, ttl: float | None = None,
                    timeout: float = 0) -> Lock:
        """Like :meth:`acquire`, but by default gives up at once."""
        return self._acquire(key, ttl, timeout, _caller())

    async def aacquire(self, key: str, *, ttl: float | None = None,
                       timeout: float | None = None) -> Lock:
        return await self._aacquire(key, ttl, timeout, _caller())

    async def atry_acquire(self, key: str, *, ttl: float | None = None,
                           timeout: float = 0) -> Lock:
        return await self._aacquire(key, ttl, timeout, _caller())

    def lock(self, key: str, *, ttl: float | None = None,
             timeout: float | None = None) -> LockContext:
        """A context manager (``with`` or ``async with``) holding ``key``.

        The lease is renewed while inside, so ``ttl`` only bounds how long a
        crashed holder blocks others.
        """
        # Bad arguments fail here, not at the ``with``.
        self._check_args(key, ttl, timeout)
        return LockContext(self, key, ttl, timeout, _caller())

    def run_exclusive(self, key: str, fn: Callable[[], T],
                      ttl: float | None = None, *,
                      timeout: float | None = None) -> T:
        """Run ``fn()`` holding ``key`` (renewed) and return its result."""
        _check_callable(fn)
        with LockContext(self, key, ttl, timeout, _describe_fn(fn)):
            return fn()

    async def arun_exclusive(self, key: str,
                             fn: Callable[[], T | Awaitable[T]],
                             ttl: float | None = None, *,
                             timeout: float | None = None) -> T:
        """Async twin of :meth:`run_exclusive`; ``fn`` may be sync or async.

        A sync ``fn`` runs in a worker thread so the event loop stays free.
        """
        _check_callable(fn)
        async with LockContext(self, key, ttl, timeout, _describe_fn(fn)):
            if inspect.iscoroutinefunction(fn):
                return await fn()
            result = await sync_to_async(fn, thread_sensitive=True)()
            if inspect.isawaitable(result):
                result = await result
            return result

    # -- operator tools -------------------------------------------------------

    def held_locks(self) -> list[dict[str, Any]]:
        """Locks held now in this app's namespace (admin, ``manage.py``)."""
        return self.backend.held_locks()

    def force_release(self, key: str) -> bool:
        """Free ``key`` whoever holds it; True when it was held. Logged."""
        validate_name(key, "lock key")
        released = self.backend.force_release(key)
        logger.warning(
            "Force-released lock=%s (was held: %s)", key, released,
            extra={"action": "lock_force_release", "lock": key},
        )
        return released

    # -- backend calls used by Lock and the renewer ---------------------------

    def _backend_release(self, lock):
        try:
            released = self.backend.release(lock.key, lock._owner_token)
        except Exception:
            return self._release_failed(lock)
        self._log_release(lock, released)
        return released

    async def _abackend_release(self, lock):
        try:
            released = await self.backend.arelease(lock.key, lock._owner_token)
        except Exception:
            return self._release_failed(lock)
        self._log_release(lock, released)
        return released

    @staticmethod
    def _release_failed(lock):
        # Raising here would mask the result or error of the code that held
        # the lock (``with`` exit); the lease ends by itself at its ttl.
        logger.warning(
            "Could not release lock=%s token=%s owner=%s; it stays busy until "
            "its lease ends", lock.key, lock.token, lock.owner, exc_info=True,
            extra={"action": "lock_release_error", "lock": lock.key},
        )
        return False

    @staticmethod
    def _log_release(lock, released):
        if released:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("Released lock=%s token=%s", lock.key, lock.token,
                             extra={"action": "lock_released", "lock": lock.key})
        else:
            logger.info(
                "Release of lock=%s token=%s found it no longer held "
                "owner=%s", lock.key, lock.token, lock.owner,
                extra={"action": "lock_release_lost", "lock": lock.key},
            )

    def _backend_extend(self, lock, ttl):
        return self.backend.extend(lock.key, lock._owner_token, ttl)

    async def _abackend_extend(self, lock, ttl):
        return await self.backend.aextend(lock.key, lock._owner_token, ttl)


@functools.lru_cache(maxsize=4096)
def _valid_key(key):
    return validate_name(key, "lock key")


def _check_key(key):
    # Keys repeat, so remember the valid ones (only str can be cached).
    if type(key) is str:
        _valid_key(key)
    else:
        validate_name(key, "lock key")


_owners = {}
_token_prefixes: dict[int, str] = {}
_token_counter = itertools.count()


def _new_owner_token():
    # Unique across processes and acquisitions: a random prefix per process
    # and a counter. One urandom call per lock cost 9 us on this machine's
    # VM, as much as the rest of the Python around a lock.
    pid = current_pid()
    prefix = _token_prefixes.get(pid)
    if prefix is None:
        prefix = _token_prefixes.setdefault(pid, secrets.token_hex(12))
    return f"{prefix}{next(_token_counter):x}"


def _owner(purpose):
    # One description per call site and process, shared by its locks; a
    # forked child describes itself anew.
    cache_key = (current_pid(), purpose)
    owner = _owners.get(cache_key)
    if owner is None:
        if len(_owners) > 4096:
            _owners.clear()
        owner = _owners[cache_key] = describe(purpose)
    return owner


def _caller():
    # The code that asked for the lock, for the owner description: cheap
    # (one frame lookup) and what an operator wants to see.
    try:
        frame = sys._getframe(2)
    except ValueError:
        return ""
    code = frame.f_code
    where = code.co_filename.rsplit("/", 2)[-1]
    return f"{where}:{frame.f_lineno} in {code.co_qualname}"


def _check_callable(fn):
    if not callable(fn):
        raise TypeError(
            f"run_exclusive needs a function to call, not {fn!r}; pass it "
            "without calling it: run_exclusive(key, job), not job()."
        )


def _describe_fn(fn):
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else name
