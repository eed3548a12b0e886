"""The contract every lock backend fulfils.

A backend stores leases: a key is held by one owner token until the owner
releases it or its ttl runs out. The manager (``coordination.locks``) adds
validation, the ``Lock`` object, renewal and the public API on top, so a
backend only implements the few storage operations below.
"""

from __future__ import annotations

import time
from typing import Any

from asgiref.sync import sync_to_async

from ...names import dumps


class BaseLockBackend:
    """Base class of lock backends.

    ``namespace`` is the app name; keys of different namespaces never meet.
    ``options`` is ``COORDINATION["LOCKS"]["OPTIONS"]``.

    Subclasses implement :meth:`try_acquire_once`, :meth:`release`,
    :meth:`extend`, :meth:`held_locks` and :meth:`force_release`. They may
    override :meth:`acquire` to wait for a release signal instead of polling,
    and the ``a``-prefixed methods to do real async I/O; the defaults run the
    sync methods in a worker thread.

    Guarantees a backend must give:

    - at most one owner token holds a key at a time, until its lease ends;
    - every successful acquisition of a key returns a larger fencing number
      than any earlier acquisition of that key;
    - ``release`` and ``extend`` change nothing unless the caller's owner
      token still holds the key with an unexpired lease.
    """

    required_options: tuple[str, ...] = ()
    allowed_options: set[str] | None = set()

    # Polling bounds for backends without a release signal (seconds).
    poll_min = 0.002
    poll_max = 0.05

    def __init__(self, namespace: str, options: dict[str, Any] | None = None):
        self.namespace = namespace
        self.options = dict(options or {})
        self._owner_json: dict[int, tuple[dict, str]] = {}

    def owner_json(self, owner: dict) -> str:
        """``owner`` as JSON. The manager hands the same dict to every lock
        of a call site, so the text is remembered per dict."""
        cached = self._owner_json.get(id(owner))
        if cached is not None and cached[0] is owner:
            return cached[1]
        text = dumps(owner, what="lock owner")
        if len(self._owner_json) > 1024:
            self._owner_json.clear()
        self._owner_json[id(owner)] = (owner, text)
        return text

    # -- storage operations ---------------------------------------------------

    def try_acquire_once(
        self, key: str, owner_token: str, ttl: float, owner: dict
    ) -> int | None:
        """Take ``key`` if it is free or its lease ended.

        Return the new fencing number, or None when another owner holds it.
        """
        raise NotImplementedError

    def release(self, key: str, owner_token: str) -> bool:
        """Free ``key`` if ``owner_token`` holds it; True when it did."""
        raise NotImplementedError

    def extend(self, key: str, owner_token: str, ttl: float) -> bool:
        """Make the lease end ``ttl`` seconds from now, if still held."""
        raise NotImplementedError

    def held_locks(self) -> list[dict[str, Any]]:
        """The locks held now in this namespace, for the admin and command.

        Each is a dict with ``key``, ``token`` (fencing number), ``owner``
        (the description dict), ``acquired_at`` and ``expires_at`` (aware
        datetimes, or None when the backend does not know).
        """
        raise NotImplementedError

    def force_release(self, key: str) -> bool:
        """Free ``key`` whoever holds it (operators only); True if it was held."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop connections; the backend may be used again afterwards."""

    # -- waiting --------------------------------------------------------------

    def acquire(
        self,
        key: str,
        owner_token: str,
        ttl: float,
        owner: dict,
        wait: float | None,
    ) -> tuple[int, float] | None:
        """Take ``key``, waiting up to ``wait`` seconds (None: forever).

        Return ``(fencing, started)``, where ``started`` is a
        ``time.monotonic()`` reading taken before the server granted the
        lease (the holder counts its ttl from there, erring early), or None
        when ``wait`` ran out. The default polls with a growing, bounded
        interval; backends with a release signal override it.
        """
        deadline = None if wait is None else time.monotonic() + wait
        delay = self.poll_min
        while True:
            started = time.monotonic()
            token = self.try_acquire_once(key, owner_token, ttl, owner)
            if token is not None:
                return token, started
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                delay = min(delay, remaining)
            time.sleep(delay)
            delay = min(delay * 2, self.poll_max)

    # -- async twins ----------------------------------------------------------

    async def aacquire(
        self,
        key: str,
        owner_token: str,
        ttl: float,
        owner: dict,
        wait: float | None,
    ) -> tuple[int, float] | None:
        # Not thread-sensitive: a waiter must not block the sync thread that
        # other sync_to_async calls (ORM) run on.
        return await sync_to_async(self.acquire, thread_sensitive=False)(
            key, owner_token, ttl, owner, wait
        )

    async def arelease(self, key: str, owner_token: str) -> bool:
        return await sync_to_async(self.release, thread_sensitive=False)(
            key, owner_token
        )

    async def aextend(self, key: str, owner_token: str, ttl: float) -> bool:
        return await sync_to_async(self.extend, thread_sensitive=False)(
            key, owner_token, ttl
        )
