"""Locks as rows of ``coordination_lock`` (SQLite, PostgreSQL, MySQL).

Each key has one row that is kept when the lock is released, so its fencing
number keeps growing and release is a one-row UPDATE. Acquisition is one
statement (an upsert that takes the row only when it is free or expired), so
two instances can never both win. The backend talks to the database on its
own connection per thread, in autocommit: a lock taken inside the caller's
``transaction.atomic()`` is visible to others at once, and no transaction is
open while the caller's code runs.

On PostgreSQL that connection runs with ``synchronous_commit = off`` unless
``OPTIONS["SYNCHRONOUS_COMMIT"]`` is True; docs/locks.md explains why that is
safe for the fencing numbers and what a server crash can cost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from django.db import DatabaseError, IntegrityError, connections
from django.db.utils import load_backend

from ...names import dumps
from .base import BaseLockBackend

logger = logging.getLogger(__name__)

TABLE = "coordination_lock"
COLUMNS = ("namespace", "key", "owner_token", "fencing", "owner",
           "acquired_at", "expires_at")


class DatabaseBackend(BaseLockBackend):
    """A lock row per key; waiters poll with a short, bounded back-off."""

    allowed_options = {"DATABASE", "SYNCHRONOUS_COMMIT"}

    @staticmethod
    def validate_options(options):
        errors = []
        alias = options.get("DATABASE", "default")
        from django.conf import settings

        if alias not in settings.DATABASES:
            errors.append(
                f'COORDINATION["LOCKS"]["OPTIONS"]["DATABASE"] is {alias!r}, '
                "which is not in DATABASES; name one of "
                f"{', '.join(map(repr, settings.DATABASES))}."
            )
        if not isinstance(options.get("SYNCHRONOUS_COMMIT", False), bool):
            errors.append(
                'COORDINATION["LOCKS"]["OPTIONS"]["SYNCHRONOUS_COMMIT"] must '
                "be True or False."
            )
        return errors

    def __init__(self, namespace, options=None):
        super().__init__(namespace, options)
        self.alias = self.options.get("DATABASE", "default")
        self.synchronous_commit = self.options.get("SYNCHRONOUS_COMMIT", False)
        self._local = threading.local()
        # Every connection opened, whichever thread, so close() reaches all.
        self._opened = []
        self._opened_lock = threading.Lock()

    # -- connection ------------------------------------------------------------

    def _connection(self):
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            # Our own connection, so the caller's transaction never holds a
            # lock row and a lock is visible to others as soon as taken.
            # From the live settings dict: the test runner renames the
            # database there, not in settings.DATABASES.
            settings_dict = dict(connections[self.alias].settings_dict)
            wrapper = load_backend(settings_dict["ENGINE"]).DatabaseWrapper
            conn = wrapper(settings_dict, self.alias)
            local.conn, local.pid = conn, os.getpid()
        if conn.connection is None:
            conn.ensure_connection()
            with self._opened_lock:
                self._opened.append((conn, os.getpid()))
            if conn.vendor == "postgresql" and not self.synchronous_commit:
                with conn.cursor() as cursor:
                    cursor.execute("SET synchronous_commit = off")
        return conn

    def _run(self, build, fetch=False):
        """Run the statement ``build(conn)`` returns; reconnect once."""
        for attempt in (0, 1):
            conn = self._connection()
            sql, params = build(conn)
            try:
                with conn.cursor() as cursor:
                    cursor.execute(sql, params)
                    if fetch:
                        return cursor.fetchone()
                    return cursor.rowcount
            except IntegrityError:
                raise
            except DatabaseError:
                if attempt or conn.is_usable():
                    raise
                logger.warning(
                    "Lock database connection lost; reconnecting alias=%s",
                    self.alias, extra={"action": "lock_db_reconnect"},
                )
                self._drop()
        return None

    def _drop(self):
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            self._close(conn)

    def _close(self, conn):
        with self._opened_lock:
            self._opened = [o for o in self._opened if o[0] is not conn]
        # Connections of other threads (the renewal thread) too: a thread
        # that uses one again reconnects.
        conn.inc_thread_sharing()
        try:
            conn.close()
        except DatabaseError:
            pass
        finally:
            conn.dec_thread_sharing()

    def close(self):
        with self._opened_lock:
            # A forked child must not close its parent's sockets.
            opened = [c for c, pid in self._opened if pid == os.getpid()]
        for conn in opened:
            self._close(conn)

    # -- SQL pieces per vendor -------------------------------------------

    def _parts(self, conn, ttl=None):
        """(now, expires, fence) SQL expressions and their parameters."""
        if conn.vendor == "postgresql":
            # The server's clock, so that instances with skewed clocks agree.
            return ("clock_timestamp()", [],
                    "clock_timestamp() + %s * interval '1 second'", [ttl],
                    "(extract(epoch from clock_timestamp()) * 1000000)::bigint",
                    [])
        now = datetime.now(timezone.utc)
        expires = now + timedelta(seconds=ttl or 0)
        return ("%s", [self._adapt(conn, now)], "%s", [self._adapt(conn, expires)],
                "%s", [time.time_ns() // 1000])

    @staticmethod
    def _adapt(conn, value):
        return conn.ops.adapt_datetimefield_value(value)

    @staticmethod
    def _q(conn, name):
        return conn.ops.quote_name(name)

    # -- operations ------------------------------------------------------------

    def try_acquire_once(self, key, owner_token, ttl, owner):
        owner_json = dumps(owner, what="lock owner")
        conn = self._connection()
        if conn.vendor in ("postgresql", "sqlite"):
            row = self._run(lambda c: self._upsert(c, key, owner_token, ttl,
                                                   owner_json), fetch=True)
            return None if row is None else int(row[0])
        return self._acquire_generic(key, owner_token, ttl, owner_json)

    def _upsert(self, conn, key, owner_token, ttl, owner_json):
        q = lambda n: self._q(conn, n)  # noqa: E731
        now, now_p, expires, exp_p, fence, fence_p = self._parts(conn, ttl)
        greatest = "GREATEST" if conn.vendor == "postgresql" else "MAX"
        cast = "::jsonb" if conn.vendor == "postgresql" else ""
        sql = (
            f"INSERT INTO {q(TABLE)} AS l ({', '.join(map(q, COLUMNS))}) "
            f"VALUES (%s, %s, %s, {fence}, %s{cast}, {now}, {expires}) "
            f"ON CONFLICT ({q('namespace')}, {q('key')}) DO UPDATE SET "
            f"{q('owner_token')} = excluded.{q('owner_token')}, "
            f"{q('fencing')} = {greatest}(l.{q('fencing')} + 1, "
            f"excluded.{q('fencing')}), "
            f"{q('owner')} = excluded.{q('owner')}, "
            f"{q('acquired_at')} = excluded.{q('acquired_at')}, "
            f"{q('expires_at')} = excluded.{q('expires_at')} "
            f"WHERE l.{q('owner_token')} = '' "
            f"OR l.{q('expires_at')} <= excluded.{q('acquired_at')} "
            f"RETURNING {q('fencing')}"
        )
        params = [self.namespace, key, owner_token, *fence_p, owner_json,
                  *now_p, *exp_p]
        return sql, params

    def _acquire_generic(self, key, owner_token, ttl, owner_json):
        # Databases without INSERT ... ON CONFLICT ... RETURNING (MySQL):
        # take over with one conditional UPDATE, or create with one INSERT
        # that the unique constraint lets only one instance win.
        def take(conn):
            q = lambda n: self._q(conn, n)  # noqa: E731
            now, now_p, expires, exp_p, fence, fence_p = self._parts(conn, ttl)
            sql = (
                f"UPDATE {q(TABLE)} SET {q('owner_token')} = %s, "
                f"{q('fencing')} = GREATEST({q('fencing')} + 1, {fence}), "
                f"{q('owner')} = %s, {q('acquired_at')} = {now}, "
                f"{q('expires_at')} = {expires} WHERE {q('namespace')} = %s "
                f"AND {q('key')} = %s AND ({q('owner_token')} = '' OR "
                f"{q('expires_at')} <= {now})"
            )
            return sql, [owner_token, *fence_p, owner_json, *now_p, *exp_p,
                         self.namespace, key, *now_p]

        def insert(conn):
            q = lambda n: self._q(conn, n)  # noqa: E731
            now, now_p, expires, exp_p, fence, fence_p = self._parts(conn, ttl)
            sql = (
                f"INSERT INTO {q(TABLE)} ({', '.join(map(q, COLUMNS))}) "
                f"VALUES (%s, %s, %s, {fence}, %s, {now}, {expires})"
            )
            return sql, [self.namespace, key, owner_token, *fence_p,
                         owner_json, *now_p, *exp_p]

        if not self._run(take):
            try:
                self._run(insert)
            except IntegrityError:
                return None
        row = self._run(lambda c: (
            f"SELECT {self._q(c, 'fencing')} FROM {self._q(c, TABLE)} WHERE "
            f"{self._q(c, 'namespace')} = %s AND {self._q(c, 'key')} = %s AND "
            f"{self._q(c, 'owner_token')} = %s",
            [self.namespace, key, owner_token]), fetch=True)
        return None if row is None else int(row[0])

    def _update_held(self, set_sql, set_params, key, owner_token, ttl=None):
        def build(conn):
            q = lambda n: self._q(conn, n)  # noqa: E731
            now, now_p, expires, exp_p, _, _ = self._parts(conn, ttl)
            assignments = set_sql(q, now, expires)
            params = set_params(now_p, exp_p)
            sql = (
                f"UPDATE {q(TABLE)} SET {assignments} WHERE "
                f"{q('namespace')} = %s AND {q('key')} = %s AND "
                f"{q('expires_at')} > {now} AND "
                + (f"{q('owner_token')} = %s" if owner_token is not None
                   else f"{q('owner_token')} <> ''")
            )
            params += [self.namespace, key, *now_p]
            if owner_token is not None:
                params.append(owner_token)
            return sql, params

        return self._run(build) == 1

    def release(self, key, owner_token):
        return self._update_held(
            lambda q, now, expires: f"{q('owner_token')} = '', "
                                    f"{q('expires_at')} = {now}",
            lambda now_p, exp_p: [*now_p], key, owner_token,
        )

    def extend(self, key, owner_token, ttl):
        return self._update_held(
            lambda q, now, expires: f"{q('expires_at')} = {expires}",
            lambda now_p, exp_p: [*exp_p], key, owner_token, ttl,
        )

    def force_release(self, key):
        return self._update_held(
            lambda q, now, expires: f"{q('owner_token')} = '', "
                                    f"{q('expires_at')} = {now}",
            lambda now_p, exp_p: [*now_p], key, None,
        )

    def held_locks(self) -> list[dict[str, Any]]:
        from ..models import LockRecord

        now = datetime.now(timezone.utc)
        rows = (LockRecord.objects.using(self.alias)
                .filter(namespace=self.namespace, expires_at__gt=now)
                .exclude(owner_token="").order_by("key"))
        return [{
            "key": row.key,
            "token": row.fencing,
            "owner": row.owner,
            "acquired_at": row.acquired_at,
            "expires_at": row.expires_at,
        } for row in rows]
