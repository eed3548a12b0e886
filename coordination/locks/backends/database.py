"""Locks as rows of ``coordination_lock`` (SQLite, PostgreSQL, MySQL).

Each key has one row that is kept when the lock is released, so its fencing
number keeps growing and release is a one-row UPDATE. Acquisition is one
statement (an upsert that takes the row only when it is free or expired), so
two instances can never both win. The backend talks to the database on its
own connection per thread, in autocommit: a lock taken inside the caller's
``transaction.atomic()`` is visible to others at once, and no transaction is
open while the caller's code runs.

On PostgreSQL, acquiring and extending commit durably, and releasing does
not wait for the WAL flush: one fsync per use instead of two, with no overlap
even after a server crash. ``OPTIONS["SYNCHRONOUS_COMMIT"] = False`` makes
acquire and extend asynchronous too; docs/locks.md says what that costs.
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

from .base import BaseLockBackend

logger = logging.getLogger(__name__)

TABLE = "coordination_lock"
COLUMNS = ("namespace", "key", "owner_token", "fencing", "owner",
           "acquired_at", "expires_at")


class DatabaseBackend(BaseLockBackend):
    """A lock row per key; waiters poll with a short, bounded back-off.

    With ``OPTIONS["MODE"] = "advisory"`` (PostgreSQL), the instance is an
    :class:`~.advisory.AdvisoryBackend` instead.
    """

    allowed_options = {"DATABASE", "SYNCHRONOUS_COMMIT", "PREPARE", "MODE",
                       "RESTART_GRACE", "WRITE_AFTER", "STALE_AFTER",
                       "WAIT_SLICE"}
    # Whether the admin lists the lock rows themselves (held_locks otherwise).
    lists_rows = True

    def __new__(cls, namespace, options=None):
        if cls is DatabaseBackend and (options or {}).get("MODE") == "advisory":
            from .advisory import AdvisoryBackend

            cls = AdvisoryBackend
        return super().__new__(cls)

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
        for name in ("SYNCHRONOUS_COMMIT", "PREPARE"):
            if not isinstance(options.get(name, False), bool):
                errors.append(
                    f'COORDINATION["LOCKS"]["OPTIONS"]["{name}"] must be True '
                    "or False."
                )
        mode = options.get("MODE", "row")
        if mode not in ("row", "advisory"):
            errors.append(
                f'COORDINATION["LOCKS"]["OPTIONS"]["MODE"] is {mode!r}; use '
                '"row" (the default) or "advisory" (PostgreSQL only).'
            )
        elif mode == "advisory" and alias in settings.DATABASES and (
            "postgresql" not in settings.DATABASES[alias].get("ENGINE", "")
        ):
            errors.append(
                f'COORDINATION["LOCKS"]["OPTIONS"]["MODE"] "advisory" needs '
                f"PostgreSQL, but DATABASES[{alias!r}] is "
                f"{settings.DATABASES[alias].get('ENGINE')!r}; use the row "
                'mode there (remove "MODE").'
            )
        for name in ("RESTART_GRACE", "WRITE_AFTER", "STALE_AFTER", "WAIT_SLICE"):
            value = options.get(name)
            if name in options and (
                isinstance(value, bool) or not isinstance(value, (int, float))
                or value < 0 or (value == 0 and name != "RESTART_GRACE")
            ):
                errors.append(
                    f'COORDINATION["LOCKS"]["OPTIONS"]["{name}"] is {value!r}; '
                    "it must be a positive number of seconds."
                )
        return errors

    def __init__(self, namespace, options=None):
        super().__init__(namespace, options)
        self.alias = self.options.get("DATABASE", "default")
        self.synchronous_commit = self.options.get("SYNCHRONOUS_COMMIT", True)
        self.prepare = self.options.get("PREPARE", True)
        self._local = threading.local()
        self._statements = {}
        # Every connection opened, whichever thread, so close() reaches all.
        self._opened = []
        self._opened_lock = threading.Lock()

    # -- connection -----------------------------------------------------------

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
            if conn.vendor == "postgresql":
                self._tune_postgresql(conn)
        return conn

    def _tune_postgresql(self, conn):
        if not self.synchronous_commit:
            # Our own connection, so this changes nothing for the caller's
            # transactions; docs/locks.md explains why it is safe here.
            with conn.cursor() as cursor:
                cursor.execute("SET synchronous_commit = off")
        if self.prepare:
            # Django leaves server-side prepared statements off (for
            # PgBouncer in transaction mode); the lock statements are few
            # and hot, so they are prepared on first use.
            conn.connection.prepare_threshold = 0

    def _run(self, op, params, fetch=False):
        """Run statement ``op`` with ``params(conn)``; reconnect once."""
        for attempt in (0, 1):
            conn = self._connection()
            sql = self._sql(conn)[op]
            try:
                return self._execute(conn, sql, params(conn), fetch)
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

    @staticmethod
    def _execute(conn, sql, params, fetch):
        if conn.vendor == "postgresql":
            # psycopg's own cursor binds parameters on the server, so the
            # statements can be prepared (planned once per connection),
            # which Django's client-side cursor cannot do.
            import psycopg

            with conn.wrap_database_errors:
                with psycopg.Cursor(conn.connection) as cursor:
                    cursor.execute(sql, params)
                    return cursor.fetchone() if fetch else cursor.rowcount
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone() if fetch else cursor.rowcount

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

    # -- SQL per vendor -------------------------------------------------------

    def _sql(self, conn):
        statements = self._statements.get(conn.vendor)
        if statements is None:
            statements = self._statements[conn.vendor] = _build_sql(conn)
        return statements

    def _times(self, conn, ttl=0.0):
        """Parameters for the clock placeholders, except on PostgreSQL,
        whose statements read the server's clock."""
        if conn.vendor == "postgresql":
            return None
        now = datetime.now(timezone.utc)
        adapt = conn.ops.adapt_datetimefield_value
        return (adapt(now), adapt(now + timedelta(seconds=ttl)),
                time.time_ns() // 1000)

    # -- operations -----------------------------------------------------------

    def try_acquire_once(self, key, owner_token, ttl, owner):
        owner_json = self.owner_json(owner)
        conn = self._connection()
        if conn.vendor not in ("postgresql", "sqlite"):
            return self._acquire_generic(key, owner_token, ttl, owner_json)

        def params(conn):
            times = self._times(conn, ttl)
            if times is None:
                return [self.namespace, key, owner_token, owner_json, ttl]
            now, expires, fence = times
            return [self.namespace, key, owner_token, fence, owner_json, now,
                    expires]

        row = self._run("upsert", params, fetch=True)
        return None if row is None else int(row[0])

    def _acquire_generic(self, key, owner_token, ttl, owner_json):
        # Databases without INSERT ... ON CONFLICT ... RETURNING (MySQL):
        # take over with one conditional UPDATE, or create with one INSERT
        # that the unique constraint lets only one instance win.
        def take(conn):
            now, expires, fence = self._times(conn, ttl)
            return [owner_token, fence, owner_json, now, expires,
                    self.namespace, key, now]

        def insert(conn):
            now, expires, fence = self._times(conn, ttl)
            return [self.namespace, key, owner_token, fence, owner_json, now,
                    expires]

        if not self._run("take", take):
            try:
                self._run("insert", insert)
            except IntegrityError:
                return None
        row = self._run("fencing", lambda conn: [self.namespace, key,
                                                 owner_token], fetch=True)
        return None if row is None else int(row[0])

    def _update(self, op, key, owner_token=None, ttl=0.0):
        def params(conn):
            times = self._times(conn, ttl)
            if times is None:
                first = [ttl] if op == "extend" else []
                tail = []
            else:
                now, expires, _ = times
                first = [expires if op == "extend" else now]
                tail = [now]
            owner = [owner_token] if owner_token is not None else []
            return [*first, self.namespace, key, *tail, *owner]

        return self._run(op, params) == 1

    def release(self, key, owner_token):
        return self._update("release", key, owner_token)

    def extend(self, key, owner_token, ttl):
        return self._update("extend", key, owner_token, ttl)

    def force_release(self, key):
        return self._update("force_release", key)

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


def _build_sql(conn):
    """The statements of one database vendor, built once."""
    q = conn.ops.quote_name
    table = q(TABLE)
    ns, key, token, fencing, owner = map(q, COLUMNS[:5])
    acquired, expires_at = q("acquired_at"), q("expires_at")
    if conn.vendor == "postgresql":
        # The server's clock, so that instances with skewed clocks agree.
        now = "clock_timestamp()"
        expires = "clock_timestamp() + %s * interval '1 second'"
        fence = "(extract(epoch from clock_timestamp()) * 1000000)::bigint"
        greatest, cast = "GREATEST", "::jsonb"
    else:
        now, expires, fence = "%s", "%s", "%s"
        greatest = "MAX" if conn.vendor == "sqlite" else "GREATEST"
        cast = ""
    columns = ", ".join(map(q, COLUMNS))
    held = f"{ns} = %s AND {key} = %s AND {expires_at} > {now}"
    # A release that a database crash loses only keeps the key looking held
    # until its ttl, which is safe; so releases skip the WAL flush, while
    # what grants or extends a lease stays durable (docs/locks.md).
    no_flush = ""
    if conn.vendor == "postgresql":
        no_flush = (" AND (SELECT set_config('synchronous_commit', 'off', true))"
                    " IS NOT NULL")
    if conn.vendor == "postgresql":
        values = f"%s, %s, %s, {fence}, %s{cast}, {now}, {expires}"
    else:
        values = "%s, %s, %s, %s, %s, %s, %s"
    return {
        # Take the row if it is free or expired, or create it: one statement.
        "upsert": (
            f"INSERT INTO {table} AS l ({columns}) VALUES ({values}) "
            f"ON CONFLICT ({ns}, {key}) DO UPDATE SET "
            f"{token} = excluded.{token}, "
            f"{fencing} = {greatest}(l.{fencing} + 1, excluded.{fencing}), "
            f"{owner} = excluded.{owner}, {acquired} = excluded.{acquired}, "
            f"{expires_at} = excluded.{expires_at} "
            f"WHERE l.{token} = '' OR l.{expires_at} <= excluded.{acquired} "
            f"RETURNING {fencing}"
        ),
        "take": (
            f"UPDATE {table} SET {token} = %s, "
            f"{fencing} = {greatest}({fencing} + 1, {fence}), {owner} = %s, "
            f"{acquired} = {now}, {expires_at} = {expires} "
            f"WHERE {ns} = %s AND {key} = %s AND ({token} = '' OR "
            f"{expires_at} <= {now})"
        ),
        "insert": f"INSERT INTO {table} ({columns}) VALUES ({values})",
        "fencing": (f"SELECT {fencing} FROM {table} WHERE {ns} = %s AND "
                    f"{key} = %s AND {token} = %s"),
        "release": (f"UPDATE {table} SET {token} = '', {expires_at} = {now} "
                    f"WHERE {held} AND {token} = %s{no_flush}"),
        "extend": (f"UPDATE {table} SET {expires_at} = {expires} "
                   f"WHERE {held} AND {token} = %s"),
        "force_release": (f"UPDATE {table} SET {token} = '', "
                          f"{expires_at} = {now} WHERE {held} AND {token} <> ''"
                          f"{no_flush}"),
    }
