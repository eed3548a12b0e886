"""One thread per process renews the leases of running critical sections."""

from __future__ import annotations

import logging
import threading
import time

from .. import forksafe
from ..instance import pid

logger = logging.getLogger(__name__)


class Renewer:
    """Extends each registered lock about every third of its ttl.

    A renewal that finds the lock gone marks it lost (``held()`` turns
    False, logged with key and owner). A renewal that fails with an error is
    retried with back-off until the local lease runs out, then the lock is
    marked lost too.

    The locks live in a dict (lock -> when to renew it): a process holds few
    locks at a time, so the thread scans them, and adding or forgetting one
    costs a dict operation and, only when it is due before the thread would
    wake, a notify.
    """

    retry_min = 0.05

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._due: dict[object, float] = {}
        self._thread: threading.Thread | None = None
        self._pid = pid()
        self._stopping = False
        self._wake_at = 0.0

    def add(self, lock):
        due = time.monotonic() + lock.ttl / 3
        lock._renewing = True
        with self._cond:
            if self._pid != pid():
                # A forked child: the parent's thread does not exist here.
                self._pid, self._thread, self._due = pid(), None, {}
            self._due[lock] = due
            self._stopping = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="coordination-lock-renewal",
                    daemon=True,
                )
                self._thread.start()
            elif due < self._wake_at:
                self._cond.notify()

    def forget(self, lock):
        with self._cond:
            self._due.pop(lock, None)

    def stop(self, timeout=5.0):
        """Stop the thread once no lock needs it (it restarts on demand)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread, busy = self._thread, bool(self._due)
        if thread is not None and thread is not threading.current_thread():
            if not busy:
                thread.join(timeout)

    def _run(self):
        while True:
            with self._cond:
                due = self._wait_for_due()
                if due is None:
                    return
            with forksafe.busy():
                for lock in due:
                    self._renew(lock)

    def _wait_for_due(self):
        """The locks due now, waiting for one; None when told to stop."""
        while True:
            if not self._due and self._stopping:
                self._thread = None
                return None
            now = time.monotonic()
            due = [lock for lock, when in self._due.items() if when <= now]
            if due:
                for lock in due:
                    # Rescheduled after the renewal; meanwhile not due.
                    self._due[lock] = float("inf")
                return due
            wake = min(self._due.values(), default=now + 1.0)
            self._wake_at = wake
            self._cond.wait(max(wake - now, 0.0))
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
        self._schedule(lock, time.monotonic() + lock.ttl / 3)

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
            if lock in self._due:
                self._due[lock] = when
