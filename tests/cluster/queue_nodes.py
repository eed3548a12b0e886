"""Handlers and process entry points for the event queue cluster tests.

Every handler writes what it did to the ``npq_run`` table, so the test
process can count runs made by other processes.
"""

import json
import os
import threading
import time
from collections import Counter

from django.db import connection, transaction
from django.db.backends.signals import connection_created

RUN_TABLE = "npq_run"
CHANNELS = ("npq-count", "npq-fail", "npq-sleep", "npq-honour", "npq-kill",
            "npq-conc", "npq-wait", "npq-nodb")

# Database connections opened so far, per thread of this process.
_opened = Counter()


def _count_opened(sender, connection, **kwargs):
    _opened[threading.get_ident()] += 1


connection_created.connect(_count_opened)


def create_run_table():
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {RUN_TABLE} (event_id bigint, "
            "instance varchar(200), attempt int, peak int, note varchar(50))"
        )
        cursor.execute(f"DELETE FROM {RUN_TABLE}")


def note_run(context, peak=0, note=""):
    from coordination.instance import instance_id

    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {RUN_TABLE} (event_id, instance, attempt, peak, note) "
            "VALUES (%s, %s, %s, %s, %s)",
            [context.event_id, instance_id(), context.attempt, peak, note],
        )


def runs(event_id=None):
    sql = f"SELECT event_id, instance, attempt, peak, note FROM {RUN_TABLE}"
    args = []
    if event_id is not None:
        sql += " WHERE event_id = %s"
        args = [event_id]
    with connection.cursor() as cursor:
        cursor.execute(sql + " ORDER BY attempt", args)
        return cursor.fetchall()


def count(payload, context):
    note_run(context)


def fail(payload, context):
    note_run(context)
    raise RuntimeError("always fails")


def sleep(payload, context):
    # Ignores its signal.
    note_run(context)
    time.sleep(payload["seconds"])


def honour(payload, context):
    note_run(context)
    if context.signal.wait(30):
        note_run(context, note=f"stopped:{context.signal.reason}")
    context.signal.raise_if_aborted()


def kill_me(payload, context):
    note_run(context, note=str(os.getpid()))
    if context.attempt == 0:
        time.sleep(120)  # the test kills this process meanwhile


_lock = threading.Lock()
_running = [0]


def concurrent(payload, context):
    with _lock:
        _running[0] += 1
        peak = _running[0]
    try:
        note_run(context, peak=peak)
        context.signal.wait(payload.get("seconds", 0.2))
    finally:
        with _lock:
            _running[0] -= 1


def wait(payload, context):
    note_run(context)
    if context.signal.wait(60):
        note_run(context, note=f"stopped:{context.signal.reason}")


def no_database(payload, context):
    """Uses no database: appends to ``payload["file"]`` how many database
    connections its thread has opened so far (for the claims and outcomes
    of this event and the ones before it on the thread)."""
    thread = threading.get_ident()
    line = json.dumps([context.event_id, os.getpid(), thread, _opened[thread]])
    with open(payload["file"], "a") as out:
        out.write(line + "\n")


HANDLERS = {
    "npq-count": (count, None), "npq-fail": (fail, 1), "npq-sleep": (sleep, 1),
    "npq-honour": (honour, 1), "npq-kill": (kill_me, 1),
    "npq-conc": (concurrent, 2), "npq-wait": (wait, 1),
    "npq-nodb": (no_database, 1),
}


def subscribe_all(process=True):
    """Subscribe every test channel (``process=False``: publish only)."""
    from nocoplugins import app

    for channel, (handler, concurrency) in HANDLERS.items():
        app.event_queue.subscribe(
            channel, process=handler, concurrency=concurrency,
            idle=None if process else (lambda: False),
        )


def serve(stop_file, deadline=600):
    """Process events until ``stop_file`` exists (database backend worker)."""
    subscribe_all()
    end = time.monotonic() + deadline
    while not os.path.exists(stop_file) and time.monotonic() < end:
        time.sleep(0.05)
    return "stopped"


def publish(channel, total, batch, serve_too, done_file):
    """Publish ``total`` events in transactions of ``batch``.

    With ``serve_too`` this process also processes events until
    ``done_file`` exists; returns the ids published.
    """
    from nocoplugins import app

    subscribe_all(process=serve_too)
    ids = []
    for start in range(0, total, batch):
        with transaction.atomic():
            for n in range(start, min(start + batch, total)):
                ids.append(app.event_queue.publish(channel, {"n": n}))
    end = time.monotonic() + 300
    while serve_too and not os.path.exists(done_file) and time.monotonic() < end:
        time.sleep(0.05)
    return ids
