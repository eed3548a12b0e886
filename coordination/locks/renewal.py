"""One thread per process renews the leases of running critical sections."""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time

logger = logging.getLogger(__name__)


class Renewer:
    """Extends each registered lock about every third of its ttl.

    A renewal that finds the lock gone marks it lost (``held()`` turns
    False, logged with key and owner). A renewal that fails with an error is
    retried with back-off until the local lease runs out, then the lock is
    marked lost too.
    """

    retry_min = 0.05

    def __init__(self):
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, object]] = []
        self._locks: dict[int, object] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stopping = False
        self._wake_at = 0.0

    def add(self, lock):
        with self._cond:
            if self._pid != os.getpid():
                # A forked child: the parent's thread does not exist here.
                self._pid, self._thread = os.getpid(), None
                self._due, self._locks = [], {}
            self._locks[id(lock)] = lock
            due = self._next(lock)
            heapq.heappush(self._due, (due, id(lock), lock))
            self._stopping = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="coordination-lock-renewal",
                    daemon=True,
                )
                self._thread.start()
            elif due < self._wake_at:
                # Waking the thread costs a context switch per lock; only
                # do it when it would otherwise sleep past this lock's turn.
                self._cond.notify()

    def forget(self, lock):
        with self._cond:
            self._locks.pop(id(lock), None)

    def stop(self, timeout=5.0):
        """Stop the thread once no lock needs it (it restarts on demand)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            if not self._locks:
                thread.join(timeout)

    @staticmethod
    def _next(lock):
        return time.monotonic() + lock.ttl / 3

    def _run(self):
        while True:
            with self._cond:
                lock = self._wait_for_due()
                if lock is None:
                    return
            self._renew(lock)

    def _wait_for_due(self):
        while True:
            while self._due and id(self._due[0][2]) not in self._locks:
                heapq.heappop(self._due)
            if not self._due:
                if self._stopping:
                    self._thread = None
                    return None
                self._wait(1.0)
                continue
            due, _, lock = self._due[0]
            if self._locks.get(id(lock)) is not lock:
                heapq.heappop(self._due)
                continue
            delay = due - time.monotonic()
            if delay <= 0:
                heapq.heappop(self._due)
                return lock
            self._wait(delay)

    def _wait(self, delay):
        self._wake_at = time.monotonic() + delay
        self._cond.wait(delay)
        self._wake_at = 0.0

    def _renew(self, lock):
        started = time.monotonic()
        try:
            ok = lock._manager._backend_extend(lock, lock.ttl)
        except Exception:
            logger.exception(
                "Renewing lock=%s token=%s failed; retrying", lock.key,
                lock.token, extra={"action": "lock_renew_error", "lock": lock.key},
            )
            self._retry(lock)
            return
        if not ok:
            self._forget_lost(lock)
            return
        lock._renewed(started, lock.ttl)
        self._schedule(lock, self._next(lock))

    def _retry(self, lock):
        remaining = lock._valid_until - time.monotonic()
        if remaining <= 0:
            self._forget_lost(lock)
            return
        self._schedule(lock, time.monotonic() + min(
            max(self.retry_min, remaining / 4), remaining))

    def _forget_lost(self, lock):
        self.forget(lock)
        if not lock._released:
            lock._mark_lost("renewal")

    def _schedule(self, lock, when):
        with self._cond:
            if self._locks.get(id(lock)) is lock:
                heapq.heappush(self._due, (when, id(lock), lock))
