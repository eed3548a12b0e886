"""Locks held in this process only: for tests and single-process use.

Every backend instance of one namespace shares the same table, so managers
rebuilt after a settings change still see the locks taken before.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from .base import BaseLockBackend

_tables: dict[str, "_Table"] = {}
_tables_lock = threading.Lock()


class _Table:
    def __init__(self):
        self.condition = threading.Condition()
        # key -> [owner_token, fencing, expires (monotonic), owner, acquired]
        self.held: dict[str, list] = {}
        self.fencing: dict[str, int] = {}


def _forget_tables():
    # A forked child is another process: it starts with no locks (and no
    # condition variable some thread of the parent may have held).
    global _tables_lock
    _tables.clear()
    _tables_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_tables)


def _table(namespace):
    with _tables_lock:
        table = _tables.get(namespace)
        if table is None:
            table = _tables[namespace] = _Table()
        return table


class LocalBackend(BaseLockBackend):
    """Leases in a dict guarded by a condition variable.

    Waiters sleep on the condition and are woken by every release; an
    expired lease is noticed within the wait slice.
    """

    # Longest sleep of a waiter before it looks for an expired lease.
    wait_slice = 0.05

    def __init__(self, namespace, options=None):
        super().__init__(namespace, options)
        self._pid = os.getpid()
        self._shared = _table(namespace)

    @property
    def _table(self):
        if self._pid != os.getpid():
            self._pid, self._shared = os.getpid(), _table(self.namespace)
        return self._shared

    def _live(self, key, now):
        entry = self._table.held.get(key)
        if entry is not None and entry[2] <= now:
            del self._table.held[key]
            return None
        return entry

    def try_acquire_once(self, key, owner_token, ttl, owner):
        with self._table.condition:
            return self._take(key, owner_token, ttl, owner)

    def _take(self, key, owner_token, ttl, owner):
        now = time.monotonic()
        if self._live(key, now) is not None:
            return None
        fencing = self._table.fencing.get(key, 0) + 1
        self._table.fencing[key] = fencing
        self._table.held[key] = [
            owner_token, fencing, now + ttl, owner, datetime.now(timezone.utc),
        ]
        return fencing

    def acquire(self, key, owner_token, ttl, owner, wait):
        deadline = None if wait is None else time.monotonic() + wait
        with self._table.condition:
            while True:
                started = time.monotonic()
                fencing = self._take(key, owner_token, ttl, owner)
                if fencing is not None:
                    return fencing, started
                timeout = self.wait_slice
                entry = self._table.held.get(key)
                if entry is not None:
                    timeout = min(timeout, entry[2] - time.monotonic())
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    timeout = min(timeout, remaining)
                self._table.condition.wait(max(timeout, 0.0))

    def release(self, key, owner_token):
        with self._table.condition:
            entry = self._live(key, time.monotonic())
            if entry is None or entry[0] != owner_token:
                return False
            del self._table.held[key]
            self._table.condition.notify_all()
            return True

    def extend(self, key, owner_token, ttl):
        with self._table.condition:
            entry = self._live(key, time.monotonic())
            if entry is None or entry[0] != owner_token:
                return False
            entry[2] = time.monotonic() + ttl
            return True

    def held_locks(self) -> list[dict[str, Any]]:
        now_mono = time.monotonic()
        now = datetime.now(timezone.utc)
        with self._table.condition:
            rows = []
            for key in sorted(self._table.held):
                entry = self._live(key, now_mono)
                if entry is None:
                    continue
                rows.append({
                    "key": key,
                    "token": entry[1],
                    "owner": dict(entry[3]),
                    "acquired_at": entry[4],
                    "expires_at": now + timedelta(seconds=entry[2] - now_mono),
                })
            return rows

    def force_release(self, key):
        with self._table.condition:
            entry = self._live(key, time.monotonic())
            if entry is None:
                return False
            del self._table.held[key]
            self._table.condition.notify_all()
            return True
