"""The ``Lock`` handed to callers, and the ``lock()`` context manager."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ..exceptions import LockNotHeldError

if TYPE_CHECKING:
    from . import LockManager

logger = logging.getLogger(__name__)


class Lock:
    """A held lease on ``key``.

    ``token`` is the fencing number: it grows with every acquisition of the
    key, so a resource that remembers the largest token it has seen can
    refuse writes from a holder that lost its lock. A ``Lock`` is a context
    manager that releases on exit; it is renewed only when it comes from
    ``LockManager.lock()`` or ``run_exclusive``.
    """

    def __init__(self, manager: LockManager, key: str, token: int,
                 owner_token: str, ttl: float, owner: dict, started: float):
        self._manager = manager
        self.key = key
        self.token = token
        self.owner = owner
        self.ttl = ttl
        self._owner_token = owner_token
        # The server starts the lease after ``started``, so this local
        # deadline errs on the early side.
        self._valid_until = started + ttl
        self._released = False
        self._lost = False
        # Set by the renewer when it takes the lock on.
        self._renewing = False
        self._state = threading.Lock()

    def __repr__(self):
        state = "held" if self.held() else "not held"
        return f"<Lock key={self.key!r} token={self.token} {state}>"

    def held(self) -> bool:
        """True while this lock is believed held.

        False after release, after a failed renewal or extend, or once the
        lease ran out locally without renewal. It does not ask the server.
        """
        return (not self._released and not self._lost
                and time.monotonic() < self._valid_until)

    def release(self) -> bool:
        """Release the lock; False when it was no longer held.

        A lock taken over by someone else is left alone.
        """
        if self._released:
            return False
        self._released = True
        try:
            return self._manager._backend_release(self)
        finally:
            # After the release, which is then sent (and the next holder
            # woken) sooner. A renewal racing with it finds the lock gone
            # and, seeing it released, says nothing.
            if self._renewing:
                self._manager._renewer.forget(self)

    async def arelease(self) -> bool:
        if self._released:
            return False
        self._released = True
        try:
            return await self._manager._abackend_release(self)
        finally:
            if self._renewing:
                self._manager._renewer.forget(self)

    def extend(self, ttl: float | None = None) -> None:
        """Make the lease end ``ttl`` seconds from now (default: its ttl).

        Raises LockNotHeldError when the lock expired, was released or was
        taken over.
        """
        ttl = self._manager._check_ttl(ttl if ttl is not None else self.ttl)
        started = time.monotonic()
        if self._released or not self._manager._backend_extend(self, ttl):
            self._mark_lost("extend")
            raise LockNotHeldError(self._not_held_message())
        self._renewed(started, ttl)

    async def aextend(self, ttl: float | None = None) -> None:
        ttl = self._manager._check_ttl(ttl if ttl is not None else self.ttl)
        started = time.monotonic()
        if self._released or not await self._manager._abackend_extend(self, ttl):
            self._mark_lost("extend")
            raise LockNotHeldError(self._not_held_message())
        self._renewed(started, ttl)

    def _renewed(self, started, ttl):
        with self._state:
            self.ttl = ttl
            self._valid_until = started + ttl

    def _mark_lost(self, action):
        with self._state:
            if self._lost or self._released:
                return
            self._lost = True
        logger.warning(
            "Lost lock=%s token=%s owner=%s on %s; another holder may run now",
            self.key, self.token, self.owner, action,
            extra={"action": "lock_lost", "lock": self.key},
        )

    def _not_held_message(self):
        return (f"The lock {self.key!r} (token {self.token}) is no longer held: "
                "it was released, expired or taken over. Acquire it again.")

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    async def __aenter__(self) -> Lock:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.arelease()


class LockContext:
    """What ``LockManager.lock()`` returns: acquire, renew, release.

    Usable with ``with`` and ``async with``; binds the :class:`Lock`.
    """

    def __init__(self, manager: LockManager, key: str, ttl: float | None,
                 timeout: float | None, purpose: str):
        self._manager = manager
        self._key = key
        self._ttl = ttl
        self._timeout = timeout
        self._purpose = purpose
        self.lock: Lock | None = None

    def __enter__(self) -> Lock:
        self.lock = self._manager._acquire(
            self._key, self._ttl, self._timeout, self._purpose
        )
        self._manager._renewer.add(self.lock)
        return self.lock

    def __exit__(self, *exc_info: Any) -> None:
        lock, self.lock = self.lock, None
        if lock is not None:
            lock.release()

    async def __aenter__(self) -> Lock:
        self.lock = await self._manager._aacquire(
            self._key, self._ttl, self._timeout, self._purpose
        )
        self._manager._renewer.add(self.lock)
        return self.lock

    async def __aexit__(self, *exc_info: Any) -> None:
        lock, self.lock = self.lock, None
        if lock is not None:
            await lock.arelease()
