"""Every read and write of event rows that must be atomic.

Claiming is one ``UPDATE ... WHERE id IN (SELECT ...) RETURNING id``: on
PostgreSQL the inner select takes ``FOR UPDATE SKIP LOCKED``, so concurrent
claimers pass over each other's rows instead of waiting; on SQLite the
statement holds the database write lock, which serialises it. Every later
write is conditional on the claim (status, owner and attempt number), so a
runner that lost its lease can no longer change the row.
"""

import copy
import datetime
import functools
import random
import threading
import time
from contextlib import contextmanager

from django.db import connections, router
from django.db.models import BooleanField, F, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from ..instance import pid
from .models import Event

RUNNING = Event.Status.RUNNING
PENDING = Event.Status.PENDING
FAILED = Event.Status.FAILED
CANCELLED = Event.Status.CANCELLED
SUCCEEDED = Event.Status.SUCCEEDED


def db_alias(write=True):
    if write:
        return router.db_for_write(Event)
    return router.db_for_read(Event)


# -- a kept connection for the runner's own statements -------------------------

_kept = threading.local()


@contextmanager
def kept_connection():
    """Run this thread's claim and outcome statements on a connection of its
    own, kept from one use to the next.

    For the Celery task: Celery's Django fixup closes every database
    connection of the thread before and after each task (unless
    ``CELERY_DB_REUSE_MAX`` is set), so the claim would open a new one for
    every event. The kept connection is not registered in
    ``django.db.connections``, so the fixup leaves it alone; the handler in
    between still uses the thread's usual connection, under the project's
    settings. The kept connection is built from the same settings without
    ``"pool"``: held for the thread's life, it would take a pool slot away
    for good.
    """
    depth = getattr(_kept, "depth", 0)
    _kept.depth = depth + 1
    try:
        yield
    finally:
        _kept.depth = depth


def _own_statement(function):
    """Run ``function`` on the thread's kept connection when
    :func:`kept_connection` is active, else on the usual one."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if not getattr(_kept, "depth", 0):
            return function(*args, **kwargs)
        alias = db_alias()
        previous = connections[alias]
        if previous.in_atomic_block:
            # The caller's transaction must see (and own) these writes.
            return function(*args, **kwargs)
        connections[alias] = _kept_wrapper(alias, previous)
        try:
            return function(*args, **kwargs)
        finally:
            connections[alias] = previous

    return wrapper


def close_kept_connections():
    """Close the connections this thread keeps (they reopen on next use)."""
    wrappers = getattr(_kept, "wrappers", None) or {}
    if getattr(_kept, "pid", None) == pid():
        for wrapper, _ in wrappers.values():
            wrapper.close()
    _kept.wrappers = {}
    _kept.pid = pid()


def close_if_broken(connection):
    """Close ``connection`` if it no longer answers (one round trip), so
    that its next query opens a fresh one; either way clear its error mark."""
    if connection.connection is not None and not connection.is_usable():
        connection.close()
    connection.errors_occurred = False


# A kept connection idle for this long is checked before use: the server,
# a proxy or a firewall may have dropped it meanwhile.
KEPT_CHECK_AFTER = 10.0


def _kept_wrapper(alias, usual):
    wrappers = getattr(_kept, "wrappers", None)
    if wrappers is None or _kept.pid != pid():
        # A forked child never uses its parent's sockets.
        wrappers = _kept.wrappers = {}
        _kept.pid = pid()
    now = time.monotonic()
    known = wrappers.get(alias)
    if known is None:
        settings_dict = copy.deepcopy(usual.settings_dict)
        settings_dict.get("OPTIONS", {}).pop("pool", None)
        wrapper = type(usual)(settings_dict, alias)
    else:
        wrapper, used_at = known
        if wrapper.errors_occurred or now - used_at >= KEPT_CHECK_AFTER:
            close_if_broken(wrapper)
    if wrapper.connection is None:
        wrapper.ensure_connection()
        _relax(wrapper)
    wrappers[alias] = (wrapper, now)
    return wrapper


def _relax(wrapper):
    """Let the kept connection's commits skip the disk flush, once for its
    session: it runs only claims and outcomes, which may (see ``no_flush``
    and ``sqlite_no_sync``), so each of them saves setting it around itself."""
    raw = wrapper.connection
    if wrapper.vendor == "postgresql":
        with wrapper.cursor() as cursor:
            cursor.execute("SET synchronous_commit = off")
    elif wrapper.vendor == "sqlite":
        if raw.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            return  # NORMAL is not crash-safe with a rollback journal
        raw.execute("PRAGMA synchronous = NORMAL")
    else:
        return
    wrapper._coordination_relaxed = raw


def _relaxed(connection):
    """Whether ``connection``'s session already skips the flush (a kept
    connection, see ``_relax``)."""
    raw = getattr(connection, "_coordination_relaxed", None)
    return raw is not None and raw is connection.connection


def later(seconds):
    return timezone.now() + datetime.timedelta(seconds=seconds)


def backoff(attempt, base, cap):
    """Delay before retry number ``attempt`` (1, 2, ...): doubling, jittered."""
    delay = min(base * 2 ** (attempt - 1), cap)
    return min(delay * random.uniform(0.75, 1.25), cap)


# Appended to a statement's WHERE clause: that statement's own transaction
# commits without waiting for the WAL flush. One statement, one round trip;
# a SET LOCAL would need its own BEGIN and COMMIT, which cost as much as the
# flush they save.
NO_FLUSH = "(SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"


def no_flush(alias):
    """Whether a write on ``alias`` may skip the WAL flush (PostgreSQL only).

    For claims and outcomes only: if the database server crashes, such a
    write may be lost, and then the event simply runs again, which the
    at-least-once guarantee allows. Publishing always waits for the flush.
    Inside the caller's transaction the setting would reach the caller's
    own commit, so there it is never used.
    """
    connection = connections[alias]
    return (connection.vendor == "postgresql" and not connection.in_atomic_block
            and not _relaxed(connection))


def _mark_succeeded(queryset):
    """Record the success of ``queryset``'s rows without waiting for the
    disk, where allowed (PostgreSQL: ``NO_FLUSH``; SQLite: see below)."""
    if no_flush(queryset.db):
        queryset = queryset.filter(RawSQL(NO_FLUSH, [], output_field=BooleanField()))
    with sqlite_no_sync(queryset.db):
        return queryset.update(status=SUCCEEDED, finished=timezone.now(),
                               lease_owner="", lease_expires=None)


@contextmanager
def sqlite_no_sync(alias):
    """On SQLite in WAL mode, commit the writes inside without an fsync.

    SQLite's own equivalent of ``NO_FLUSH``, for the same writes (claims
    and outcomes) and with the same reasoning: ``synchronous = NORMAL``
    keeps a WAL database consistent, and only a power loss or an OS crash
    can undo the last commits, after which the event runs again. It is set
    around the write and put back, since the worker threads' connections
    also run the handlers, whose own writes keep the project's setting. In
    rollback-journal mode NORMAL is not crash-safe, so nothing changes.
    """
    connection = connections[alias]
    if (connection.vendor != "sqlite" or connection.in_atomic_block
            or _relaxed(connection)):
        yield
        return
    connection.ensure_connection()
    raw = connection.connection
    # Read once per connection: (that connection, level to restore), where
    # 0 means leave it alone (not WAL, or already NORMAL or below).
    known = getattr(connection, "_coordination_sync", None)
    if known is None or known[0] is not raw:
        mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
        level = raw.execute("PRAGMA synchronous").fetchone()[0]
        known = (raw, level if mode == "wal" and level > 1 else 0)
        connection._coordination_sync = known
    previous = known[1]
    if not previous:
        yield
        return
    raw.execute("PRAGMA synchronous = NORMAL")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA synchronous = {int(previous)}")


def insert(event, alias, payload_json=None):
    """Write a new event row in one ``INSERT ... RETURNING`` statement.

    The same row ``event.save()`` would write, without the ORM's per-save
    work, which is most of what publishing costs besides the database.
    ``payload_json``, the payload already encoded by the caller, spares
    encoding it twice.
    """
    connection = connections[alias]
    if not connection.features.can_return_columns_from_insert:
        event.save(using=alias, force_insert=True)
        return event.pk
    sql, fields = _insert_statement(connection)
    params = []
    for field, prepare in fields:
        value = getattr(event, field.attname)
        if value is None:
            params.append(None)
        elif field.attname == "payload" and payload_json is not None:
            params.append(payload_json)
        elif prepare:
            params.append(field.get_db_prep_save(value, connection))
        else:
            params.append(value)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        event.pk = cursor.fetchone()[0]
    event._state.adding = False
    event._state.db = alias
    return event.pk


_INSERT_STATEMENTS = {}


def _insert_statement(connection):
    """The INSERT of one vendor, and per column whether its value needs the
    field's own conversion (JSON, and dates except on PostgreSQL) or goes to
    the driver as it is."""
    statement = _INSERT_STATEMENTS.get(connection.vendor)
    if statement is None:
        ops = connection.ops
        fields = [f for f in Event._meta.concrete_fields if not f.primary_key]
        columns = ", ".join(ops.quote_name(f.column) for f in fields)
        jsonb = "::jsonb" if connection.vendor == "postgresql" else ""
        marks = ", ".join(
            f"%s{jsonb}" if f.attname == "payload" else "%s" for f in fields
        )
        table = ops.quote_name(Event._meta.db_table)
        pk = ops.quote_name(Event._meta.pk.column)
        sql = f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING {pk}"
        plain = {"CharField", "TextField", "PositiveIntegerField", "FloatField",
                 "BooleanField"}
        if connection.vendor == "postgresql":
            # psycopg adapts aware datetimes itself.
            plain.add("DateTimeField")
        prepared = [(f, f.get_internal_type() not in plain) for f in fields]
        statement = _INSERT_STATEMENTS[connection.vendor] = (sql, prepared)
    return statement


_CLAIM_STATEMENTS = {}


def _claim_statement(connection, *, by_id, skip_flush):
    """The claim's SQL for one kind of connection (built once each way).

    Parameters, in order: status, owner, lease expiry, started, then the
    event id or the channel, the five of the runnable test, and for a
    channel the limit.
    """
    key = (type(connection), by_id, skip_flush)
    sql = _CLAIM_STATEMENTS.get(key)
    if sql is not None:
        return sql
    ops = connection.ops
    table = ops.quote_name(Event._meta.db_table)
    columns = ", ".join(ops.quote_name(f.column) for f in Event._meta.concrete_fields)
    runnable = (
        "((status = %s AND run_after <= %s) OR (status = %s AND "
        "lease_expires < %s AND attempts <= max_retries + %s))"
    )
    if by_id:
        # One known row: a plain conditional update.
        where = f"id = %s AND {runnable}"
    else:
        lock = ""
        if connection.features.has_select_for_update_skip_locked:
            lock = " FOR UPDATE SKIP LOCKED"
        where = (
            f"id IN (SELECT id FROM {table} WHERE channel = %s AND {runnable} "
            f"ORDER BY run_after, id LIMIT %s{lock})"
        )
    sql = _CLAIM_STATEMENTS[key] = (
        f"UPDATE {table} SET status = %s, attempts = attempts + 1, "
        f"lease_owner = %s, lease_expires = %s, started = %s "
        f"WHERE {where}{' AND ' + NO_FLUSH if skip_flush else ''} "
        f"RETURNING {columns}"
    )
    return sql


def _events(rows, connection):
    """Event objects from rows of all of Event's columns, converted as the
    ORM would (JSON decoded, SQLite's dates and booleans parsed) without
    its per-query set-up, which cost more than the claim statement."""
    names, converters = _row_reader(connection)
    events = []
    for row in rows:
        values = list(row)
        for index, functions, expression in converters:
            value = values[index]
            for function in functions:
                value = function(value, expression, connection)
            values[index] = value
        events.append(Event.from_db(connection.alias, names, values))
    return sorted(events, key=lambda e: (e.run_after, e.id))


_ROW_READERS = {}


def _row_reader(connection):
    """Event's field names, and per column the converters Django applies to
    it on this kind of connection. Built once per backend and time zone."""
    key = (type(connection), connection.timezone_name)
    reader = _ROW_READERS.get(key)
    if reader is None:
        fields = Event._meta.concrete_fields
        converters = []
        for index, field in enumerate(fields):
            expression = field.get_col(Event._meta.db_table)
            functions = (connection.ops.get_db_converters(expression)
                         + field.get_db_converters(connection))
            if functions:
                converters.append((index, functions, expression))
        reader = _ROW_READERS[key] = ([f.attname for f in fields], converters)
    return reader


@_own_statement
def claim(owner, lease, *, channel=None, event_id=None, limit=1, max_lost=3):
    """Take up to ``limit`` runnable events; return their rows.

    Runnable: pending and due, or running with an expired lease (its runner
    died) and fewer than ``max_lost`` extra tries used. Exactly one of
    ``channel`` and ``event_id`` narrows the search.
    """
    alias = db_alias()
    connection = connections[alias]
    adapt = connection.ops.adapt_datetimefield_value
    now = timezone.now()
    at = adapt(now)
    sql = _claim_statement(connection, by_id=event_id is not None,
                           skip_flush=no_flush(alias))
    runnable_args = [PENDING, at, RUNNING, at, max_lost]
    if event_id is not None:
        where_args = [event_id, *runnable_args]
    else:
        where_args = [channel, *runnable_args, limit]
    args = [
        RUNNING, owner, adapt(now + datetime.timedelta(seconds=lease)), at,
        *where_args,
    ]
    with sqlite_no_sync(alias), connection.cursor() as cursor:
        cursor.execute(sql, args)
        rows = _events(cursor.fetchall(), connection)
    return rows


def _mine(event):
    return Event.objects.using(db_alias()).filter(
        id=event.id, status=RUNNING, lease_owner=event.lease_owner,
        attempts=event.attempts,
    )


@_own_statement
def succeed(event):
    return _mark_succeeded(_mine(event)) == 1


@_own_statement
def unclaim(event):
    """Give a claim back as if it never happened (the runner cannot run it)."""
    return _mine(event).update(
        status=PENDING, attempts=F("attempts") - 1, lease_owner="",
        lease_expires=None, dispatched_at=timezone.now(),
    ) == 1


@_own_statement
def succeed_many(events):
    """Record several successes in one statement; return how many were ours."""
    if not events:
        return 0
    mine = Q()
    for event in events:
        mine |= Q(id=event.id, lease_owner=event.lease_owner,
                  attempts=event.attempts)
    return _mark_succeeded(
        Event.objects.using(db_alias()).filter(mine, status=RUNNING))


@_own_statement
def fail(event, error, *, timed_out, delay, dispatched):
    """Record a failed attempt: pending again after ``delay``, or failed.

    ``delay`` None means no retries are left. Returns the new status, or
    None when the row was no longer ours (cancelled meanwhile, or taken over
    after our lease expired).
    """
    fields = dict(last_error=error, timed_out=timed_out, lease_owner="",
                  lease_expires=None)
    if delay is not None:
        status = PENDING
        fields.update(status=status, run_after=later(delay),
                      dispatched_at=timezone.now() if dispatched else None)
    else:
        status = FAILED
        fields.update(status=status, finished=timezone.now())
    if _mine(event).update(**fields) != 1:
        return None
    event.status = status
    event.run_after = fields.get("run_after", event.run_after)
    return status


@_own_statement
def waiting_row(event_id):
    """(run_after, timeout) of ``event_id`` if it is pending, else None."""
    return Event.objects.using(db_alias()).filter(
        pk=event_id, status=PENDING
    ).values_list("run_after", "timeout").first()


@_own_statement
def unsent(event_id):
    """Mark a pending event as having no message out (housekeeping sends it
    when due)."""
    return Event.objects.using(db_alias()).filter(
        pk=event_id, status=PENDING
    ).update(dispatched_at=None) == 1


def renew(owner, ids, lease):
    """Extend our leases; return {id: status} of the rows as they are now."""
    alias = db_alias()
    Event.objects.using(alias).filter(
        id__in=ids, status=RUNNING, lease_owner=owner
    ).update(lease_expires=later(lease))
    rows = Event.objects.using(alias).filter(id__in=ids)
    return {
        pk: (status if owner_ == owner or status != RUNNING else "lost")
        for pk, status, owner_ in rows.values_list("id", "status", "lease_owner")
    }


def give_up_lost(max_lost):
    """Fail running events whose lease expired too many times."""
    now = timezone.now()
    return Event.objects.using(db_alias()).filter(
        status=RUNNING, lease_expires__lt=now,
        attempts__gt=F("max_retries") + max_lost,
    ).update(
        status=FAILED, finished=now, lease_owner="", lease_expires=None,
        last_error="The worker running this event was lost (killed or "
        "stalled past its lease) on every try.",
    )


def retry(event_id, using=None):
    return Event.objects.using(using or db_alias()).filter(
        id=event_id, status__in=(FAILED, CANCELLED)
    ).update(
        status=PENDING, attempts=0, run_after=timezone.now(), finished=None,
        timed_out=False, lease_owner="", lease_expires=None, dispatched_at=None,
    ) == 1


def cancel(event_id, using=None):
    return Event.objects.using(using or db_alias()).filter(
        id=event_id, status__in=(PENDING, RUNNING)
    ).update(
        status=CANCELLED, finished=timezone.now(), lease_expires=None,
    ) == 1


def undispatched(horizon, stale_after, limit=500):
    """Events no broker message is out for; rows (id, run_after, sent, timeout).

    That is: pending and due within ``horizon`` s but never sent (publisher
    died after commit, or a delay too long to trust to the broker) or sent
    ``stale_after`` s ago (message lost); or running with a lease that
    expired since the last send (the worker died).
    """
    now = timezone.now()
    due = Q(status=PENDING, run_after__lte=later(horizon)) & (
        Q(dispatched_at__isnull=True)
        | Q(dispatched_at__lt=now - datetime.timedelta(seconds=stale_after))
    )
    lost = Q(status=RUNNING, lease_expires__lt=now) & (
        Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=F("lease_expires"))
    )
    return list(
        Event.objects.using(db_alias()).filter(due | lost)
        .order_by("run_after", "id")
        .values_list("id", "run_after", "dispatched_at", "timeout")[:limit]
    )


def mark_sent(event_id, sent):
    """Stamp a send if ``dispatched_at`` is still ``sent`` (compare and set)."""
    qs = Event.objects.using(db_alias()).filter(pk=event_id)
    if sent is None:
        qs = qs.filter(dispatched_at__isnull=True)
    else:
        qs = qs.filter(dispatched_at=sent)
    return qs.update(dispatched_at=timezone.now()) == 1
