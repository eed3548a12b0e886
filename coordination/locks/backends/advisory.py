"""PostgreSQL locks held as advisory locks, each by a session of its own.

``COORDINATION["LOCKS"] = {"BACKEND": "database", "OPTIONS": {"MODE":
"advisory"}}``. Taking a free key is one ``pg_try_advisory_lock`` and
releasing it one ``pg_advisory_unlock``: PostgreSQL's lock table in shared
memory, no row written and no WAL flush, which is why this mode costs about
as much as the raw advisory pair while the row mode pays for a row write and
an fsync. What the row mode gets from its table, this mode gets as follows:

- Exclusion: PostgreSQL's own. Each held lock has its own session (taken
  from a small per-process pool), so one lock can be ended (force release,
  an expired lease) without touching the process's other locks. A session
  that dies (the holder process was killed) frees its lock at once.
- Waiting: a blocking ``pg_advisory_lock`` in slices of ``WAIT_SLICE``
  seconds (``lock_timeout``), so waiters are queued by the server and woken
  when the lock is freed.
- Fencing: the server clock in microseconds at the grant, and never less
  than the last fencing number recorded in the key's row plus one.
- Leases: a lock held longer than ``WRITE_AFTER`` seconds gets its row in
  ``coordination_lock`` (owner, acquisition time, expiry), written by this
  process's lock thread on the lock's own session; ``extend`` (renewal)
  moves the expiry there. Short locks never write. The lock thread also
  ends, in this process, the locks whose lease ran out unrenewed. A waiter
  that finds the holder's lease expired (its process is stopped or cut
  off), or a holder that has had no row for ``STALE_AFTER`` seconds, ends
  the holder's session with ``pg_terminate_backend`` and logs it.
- Restarts: a server restart ends every advisory lock while holders may
  still be running, so for ``RESTART_GRACE`` seconds after PostgreSQL
  starts no lock is granted (the holders' renewals fail, so they learn of
  the loss first; docs/locks.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
import time
import weakref
from typing import Any

import psycopg
from django.db import connections
from django.db.utils import load_backend

from ... import forksafe
from .database import TABLE, DatabaseBackend

logger = logging.getLogger("coordination.locks.backends.database")

# Sessions kept open per process for the next locks, beyond those held.
IDLE_SESSIONS = 4

_CLOCK_US = "(extract(epoch from clock_timestamp()) * 1000000)::bigint"
_FLOOR = (f"COALESCE((SELECT fencing + 1 FROM {TABLE} WHERE namespace = %s "
          "AND key = %s), 0)")
# (granted, fencing number)
TRY = f"SELECT pg_try_advisory_lock(%s, %s), GREATEST({_CLOCK_US}, {_FLOOR})"
# The same, queued up to lock_timeout; the fencing number is read once
# granted (and would be larger than the last holder's anyway, since it was
# asked for while that holder held the key).
WAIT = (
    "SELECT set_config('lock_timeout', %s, false), pg_advisory_lock(%s, %s), "
    f"GREATEST({_CLOCK_US}, {_FLOOR})"
)
# Seconds of the restart grace left, read when a session opens: a session
# cannot outlive a server restart, so that once is enough.
GRACE_LEFT = (
    "SELECT extract(epoch from pg_postmaster_start_time() + %s * "
    "interval '1 second' - clock_timestamp())::float8"
)
UNLOCK = "SELECT pg_advisory_unlock(%s, %s)"
UNLOCK_ROW = (
    f"WITH cleared AS (UPDATE {TABLE} SET owner_token = '', expires_at = "
    "clock_timestamp() WHERE namespace = %s AND key = %s AND owner_token = %s "
    "RETURNING 1) SELECT pg_advisory_unlock(%s, %s)"
)
# The lease row, tagged with the session that holds the lock; acquired_at
# is the server's clock less the seconds held so far.
WRITE = (
    f"INSERT INTO {TABLE} AS l (namespace, key, owner_token, fencing, owner, "
    "acquired_at, expires_at) VALUES (%s, %s, %s, %s, %s::jsonb || "
    "jsonb_build_object('session', pg_backend_pid()), clock_timestamp() - %s * "
    "interval '1 second', clock_timestamp() + %s * interval '1 second') "
    "ON CONFLICT (namespace, key) DO UPDATE SET "
    "owner_token = excluded.owner_token, fencing = GREATEST(l.fencing, "
    "excluded.fencing), owner = excluded.owner, acquired_at = "
    "excluded.acquired_at, expires_at = excluded.expires_at"
)
# The session holding a key, and whether it may be ended: its lease row
# expired, or it has had none for too long.
HOLDER = (
    "SELECT p.pid, l.owner, COALESCE(l.expires_at <= clock_timestamp(), "
    "a.state_change <= clock_timestamp() - %s * interval '1 second') "
    "FROM pg_locks p LEFT JOIN pg_stat_activity a ON a.pid = p.pid "
    f"LEFT JOIN {TABLE} l ON l.namespace = %s AND l.key = %s "
    "AND l.owner_token <> '' AND l.owner->>'session' = p.pid::text "
    "WHERE p.locktype = 'advisory' AND p.granted AND p.objsubid = 2 "
    "AND p.database = (SELECT oid FROM pg_database WHERE datname = "
    "current_database()) AND p.classid::bigint = %s AND p.objid::bigint = %s"
)
TERMINATE = "SELECT pg_terminate_backend(%s, 5000)"
CLEAR = (f"UPDATE {TABLE} SET owner_token = '', expires_at = clock_timestamp() "
         "WHERE namespace = %s AND key = %s AND owner_token <> ''")
HELD = (
    "SELECT key, fencing, owner, acquired_at, expires_at, "
    f"(owner->>'session')::int FROM {TABLE} WHERE namespace = %s "
    "AND owner_token <> '' AND owner ? 'session' ORDER BY key"
)
GRANTED = (
    "SELECT pid, classid::bigint, objid::bigint FROM pg_locks WHERE locktype = "
    "'advisory' AND granted AND objsubid = 2 AND database = (SELECT oid FROM "
    "pg_database WHERE datname = current_database())"
)


@functools.lru_cache(maxsize=4096)
def lock_ids(namespace, key):
    """The two int4 of the advisory lock of ``key`` in ``namespace``."""
    digest = hashlib.blake2b(f"{namespace}\0{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest[:4], "big", signed=True),
            int.from_bytes(digest[4:], "big", signed=True))


class _Hold:
    __slots__ = ("key", "owner_token", "session", "ids", "fence", "owner_json",
                 "ttl", "since", "until", "written", "mutex")

    def __init__(self, key, owner_token, session, ids, fence, owner_json, ttl):
        self.key, self.owner_token, self.session = key, owner_token, session
        self.ids, self.fence, self.owner_json = ids, fence, owner_json
        self.ttl = ttl
        self.since = time.monotonic()
        self.until = self.since + ttl
        self.written = False
        # Serialises the holder's release with the lock thread's writes.
        self.mutex = threading.Lock()


class AdvisoryBackend(DatabaseBackend):
    """Locks as session-level advisory locks (PostgreSQL only)."""

    lists_rows = False

    def __init__(self, namespace, options=None):
        super().__init__(namespace, options)
        self.grace = float(self.options.get("RESTART_GRACE", 30.0))
        self.write_after = float(self.options.get("WRITE_AFTER", 0.1))
        self.stale_after = float(self.options.get("STALE_AFTER", 5.0))
        self.wait_slice = float(self.options.get("WAIT_SLICE", 0.5))
        self._idle: list = []
        self._holds: dict[str, _Hold] = {}
        self._cond = threading.Condition()
        self._thread = None
        self._thread_pid = None
        # When the sleeping lock thread wakes next (0: it is awake).
        self._thread_wake = 0.0
        self._last_grant = 0.0
        self._grace_logged = 0.0
        # Sessions a forked child inherited: never used, never closed (that
        # would end the parent's session), only kept from the collector.
        self._inherited: list = []
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    def _after_fork(self):
        self._inherited += self._idle + [h.session for h in self._holds.values()]
        self._idle = []
        self._holds = {}
        # The parent's threads are gone; so may be a lock they held.
        self._cond = threading.Condition()
        self._thread, self._thread_pid, self._thread_wake = None, None, 0.0

    # -- sessions -------------------------------------------------------------

    def _open(self):
        settings_dict = dict(connections[self.alias].settings_dict)
        wrapper = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(
            settings_dict, self.alias)
        # Django's parameters (host, port, OPTIONS such as sslmode), but a
        # plain psycopg connection: no Django adapters or client-side
        # cursor around two tiny statements, and prepared statements on
        # (Django's default turns them off).
        params = wrapper.get_connection_params()
        for name in ("context", "cursor_factory", "prepare_threshold"):
            params.pop(name, None)
        session = psycopg.connect(
            **params, autocommit=True,
            prepare_threshold=0 if self.prepare else None)
        # Nothing this session writes needs to survive a server crash: the
        # advisory locks do not either.
        session.execute("SET synchronous_commit = off")
        left = session.execute(GRACE_LEFT, (self.grace,)).fetchone()[0]
        session.grace_until = time.monotonic() + left if left > 0 else 0.0
        return session

    def _session(self):
        with self._cond:
            if self._idle:
                return self._idle.pop()
        return self._open()

    def _put_back(self, session):
        with self._cond:
            if len(self._idle) < IDLE_SESSIONS and not session.closed:
                self._idle.append(session)
                return
        self._discard(session)

    @staticmethod
    def _discard(session):
        try:
            session.close()
        except Exception:
            pass

    # -- acquisition ----------------------------------------------------------

    def try_acquire_once(self, key, owner_token, ttl, owner):
        granted = self.acquire(key, owner_token, ttl, owner, 0)
        return None if granted is None else granted[0]

    def acquire(self, key, owner_token, ttl, owner, wait):
        deadline = None if wait is None else time.monotonic() + wait
        backoff = 0.05
        first = True
        while True:
            started = time.monotonic()
            remaining = None if deadline is None else deadline - started
            # A free key is taken without blocking; a busy one is waited for
            # on the server, in slices: between two, look for a holder whose
            # lease ran out.
            wait_slice = None
            if not first and (remaining is None or remaining > 0):
                wait_slice = (self.wait_slice if remaining is None
                              else min(self.wait_slice, remaining))
            try:
                fence, pause = self._attempt(key, owner_token, ttl, owner,
                                             wait_slice)
                if fence is not None:
                    return fence, started
                first = False
                out_of_time = remaining is not None and (
                    deadline - time.monotonic() <= 0)
                if pause:
                    self._note_grace(key)
                elif (wait_slice is not None or out_of_time) and (
                        self._end_stale_holder(key)):
                    # After a slice in vain (or before giving up): the
                    # holder's lease had run out; try again at once.
                    continue
                backoff = 0.05
            except psycopg.OperationalError:
                # The server is down or restarting: wait for it, within
                # the caller's timeout.
                if remaining is not None and remaining <= backoff:
                    raise
                logger.warning(
                    "PostgreSQL unreachable while waiting for lock=%s; retrying "
                    "in %.2fs", key, backoff, exc_info=True,
                    extra={"action": "lock_db_unreachable", "lock": key})
                pause, backoff = backoff, min(backoff * 2, 1.0)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            if pause:
                time.sleep(min(pause, 0.5, remaining or 0.5))

    def _attempt(self, key, owner_token, ttl, owner, wait_slice):
        """One try, blocking up to ``wait_slice`` seconds (None: not at all).

        Returns (fencing number or None when busy, seconds of restart grace
        left, in which nothing is granted).
        """
        ids = lock_ids(self.namespace, key)
        for retry in (False, True):
            session = self._session()
            grace = session.grace_until and session.grace_until - time.monotonic()
            if grace and grace > 0:
                self._put_back(session)
                return None, grace
            try:
                if wait_slice is None:
                    granted, fence = session.execute(
                        TRY, (*ids, self.namespace, key)).fetchone()
                else:
                    timeout = f"{max(1, int(wait_slice * 1000))}ms"
                    try:
                        _, _, fence = session.execute(
                            WAIT, (timeout, *ids, self.namespace, key)).fetchone()
                        granted = True
                    except psycopg.errors.LockNotAvailable:
                        granted = False
                break
            except psycopg.OperationalError:
                self._discard(session)
                if retry:
                    raise
                # A kept session the server dropped (restart): a new one.
                logger.warning(
                    "Lock session lost; reconnecting alias=%s", self.alias,
                    extra={"action": "lock_db_reconnect", "lock": key})
            except Exception:
                self._discard(session)
                raise
        if not granted:
            self._put_back(session)
            return None, 0
        hold = _Hold(key, owner_token, session, ids, int(fence),
                     self.owner_json(owner), ttl)
        first_due = hold.since + min(self.write_after, ttl / 2)
        self._last_grant = hold.since
        with self._cond:
            self._holds[owner_token] = hold
            # Wake the lock thread only if it would sleep past this lock's
            # first deadline (waking it per lock costs more than the lock).
            if first_due < self._thread_wake:
                self._cond.notify()
        self._ensure_thread()
        return hold.fence, 0

    def _note_grace(self, key):
        now = time.monotonic()
        if now - self._grace_logged > 5:
            self._grace_logged = now
            logger.warning(
                "PostgreSQL started less than %ss ago: lock=%s and every other "
                "key of app=%s wait until then, so that holders cut off by the "
                "restart learn it first", self.grace, key, self.namespace,
                extra={"action": "lock_restart_grace", "lock": key},
            )

    def _end_stale_holder(self, key):
        """End the session holding ``key`` if its lease ran out; True if so."""
        a, b = lock_ids(self.namespace, key)
        session = self._session()
        try:
            rows = session.execute(HOLDER, (
                self.stale_after, self.namespace, key,
                a & 0xFFFFFFFF, b & 0xFFFFFFFF)).fetchall()
            ended = False
            for pid, owner, stale in rows:
                if not stale:
                    continue
                logger.warning(
                    "Ending the session pid=%s holding lock=%s of app=%s: its "
                    "lease ran out (holder stopped or cut off) owner=%s", pid,
                    key, self.namespace, _owner_dict(owner),
                    extra={"action": "lock_expired_holder", "lock": key},
                )
                ended = bool(session.execute(TERMINATE, (pid,)).fetchone()[0])
        except Exception:
            self._discard(session)
            raise
        self._put_back(session)
        return ended

    # -- holders --------------------------------------------------------------

    def _take(self, owner_token):
        with self._cond:
            return self._holds.pop(owner_token, None)

    def release(self, key, owner_token):
        hold = self._take(owner_token)
        if hold is None or hold.key != key:
            return False
        return self._unlock(hold)

    def _unlock(self, hold):
        a, b = hold.ids
        with hold.mutex:
            try:
                if hold.written:
                    row = hold.session.execute(UNLOCK_ROW, (
                        self.namespace, hold.key, hold.owner_token, a, b)).fetchone()
                else:
                    row = hold.session.execute(UNLOCK, (a, b)).fetchone()
            except Exception:
                # Session ended (force release, expired lease, server gone):
                # the lock went with it.
                self._discard(hold.session)
                return False
        self._put_back(hold.session)
        return bool(row[0])

    def extend(self, key, owner_token, ttl):
        with self._cond:
            hold = self._holds.get(owner_token)
        if hold is None or hold.key != key or time.monotonic() >= hold.until:
            return False
        if not self._write(hold, ttl):
            return False
        hold.until = time.monotonic() + ttl
        return True

    def _write(self, hold, ttl):
        """Write or move the lease row on the hold's own session."""
        with hold.mutex:
            with self._cond:
                if self._holds.get(hold.owner_token) is not hold:
                    return False  # released meanwhile
            try:
                hold.session.execute(WRITE, (
                    self.namespace, hold.key, hold.owner_token, hold.fence,
                    hold.owner_json, time.monotonic() - hold.since, ttl))
            except Exception:
                logger.warning(
                    "Lost the session holding lock=%s token=%s; the lock is gone",
                    hold.key, hold.fence, exc_info=True,
                    extra={"action": "lock_session_lost", "lock": hold.key},
                )
                if self._take(hold.owner_token) is hold:
                    self._discard(hold.session)
                return False
            hold.written = True
        return True

    # -- the lock thread: lease rows, and leases that ran out ------------------

    def _ensure_thread(self):
        with self._cond:
            if (self._thread is not None and self._thread.is_alive()
                    and self._thread_pid == os.getpid()):
                return
            self._thread_pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="coordination-lock-sessions", daemon=True)
            self._thread.start()

    def _run(self):
        while True:
            with self._cond:
                if self._thread_pid != os.getpid():
                    return
                now = time.monotonic()
                due, wake = [], None
                for hold in self._holds.values():
                    at = hold.until if hold.written else min(
                        hold.until, hold.since + min(self.write_after, hold.ttl / 2))
                    if at <= now:
                        due.append(hold)
                    elif wake is None or at < wake:
                        wake = at
                if not due:
                    if wake is None and now - self._last_grant < 1.0:
                        # Locks come and go faster than this thread wakes:
                        # look again in a while rather than be woken for
                        # each (it found none held in 2712 of 3000 wakes).
                        wake = now + self.write_after
                    self._thread_wake = float("inf") if wake is None else wake
                    self._cond.wait(None if wake is None else wake - now)
                    self._thread_wake = 0.0
                    continue
            with forksafe.busy():
                for hold in due:
                    if time.monotonic() >= hold.until:
                        self._expire(hold)
                    elif not hold.written:
                        self._write(hold, max(hold.until - time.monotonic(), 0.001))

    def _expire(self, hold):
        if self._take(hold.owner_token) is not hold:
            return
        logger.warning(
            "Lease of lock=%s token=%s ran out before release; freeing it",
            hold.key, hold.fence,
            extra={"action": "lock_lease_expired", "lock": hold.key},
        )
        self._unlock(hold)

    # -- operators ------------------------------------------------------------

    def force_release(self, key):
        a, b = lock_ids(self.namespace, key)
        session = self._session()
        try:
            pids = [row[0] for row in session.execute(HOLDER, (
                0, self.namespace, key, a & 0xFFFFFFFF, b & 0xFFFFFFFF)).fetchall()]
            ended = False
            for pid in pids:
                ended = bool(session.execute(TERMINATE, (pid,)).fetchone()[0]) or ended
            session.execute(CLEAR, (self.namespace, key))
        except Exception:
            self._discard(session)
            raise
        self._put_back(session)
        return ended

    def held_locks(self) -> list[dict[str, Any]]:
        # This process's own locks are written first, so they are listed even
        # when younger than WRITE_AFTER; other processes' appear after it.
        with self._cond:
            unwritten = [h for h in self._holds.values() if not h.written]
        for hold in unwritten:
            self._write(hold, max(hold.until - time.monotonic(), 0.001))
        session = self._session()
        try:
            rows = session.execute(HELD, (self.namespace,)).fetchall()
            granted = set(session.execute(GRANTED).fetchall())
        except Exception:
            self._discard(session)
            raise
        self._put_back(session)
        held = []
        for key, fence, owner, acquired, expires, pid in rows:
            # Held only if that session still holds that key's lock (a row
            # outlives a holder whose session was ended).
            a, b = lock_ids(self.namespace, key)
            if (pid, a & 0xFFFFFFFF, b & 0xFFFFFFFF) in granted:
                held.append({"key": key, "token": fence,
                             "owner": _owner_dict(owner),
                             "acquired_at": acquired, "expires_at": expires})
        return held

    def close(self):
        with self._cond:
            idle, self._idle = self._idle, []
            holds = list(self._holds.values())
            self._holds.clear()
            self._thread_pid = None
            self._cond.notify_all()
        for session in idle + [h.session for h in holds]:
            self._discard(session)
        super().close()


def _after_fork(ref):
    backend = ref()
    if backend is not None:
        backend._after_fork()


def _owner_dict(owner):
    # Django's connection setup makes psycopg load jsonb as text.
    if isinstance(owner, str):
        owner = json.loads(owner)
    return {k: v for k, v in (owner or {}).items() if k != "session"}
