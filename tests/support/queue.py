"""Helpers for the event queue tests."""

import time
from contextlib import contextmanager

from django.db.backends.signals import connection_created
from django.test import override_settings

FAST = {"RETRY_DELAY": 0.05, "RETRY_DELAY_MAX": 0.2, "POLL_INTERVAL": 0.1,
        "CHECK_INTERVAL": 0.1, "SWEEP_INTERVAL": 0.5}


def queue_settings(backend="database", **options):
    """override_settings for the event queue with quick retry and polling."""
    from django.conf import settings

    opts = dict(FAST)
    if backend != "database":
        opts.pop("POLL_INTERVAL")
    opts.update(options)
    coordination = dict(settings.COORDINATION)
    coordination["EVENT_QUEUE"] = {"BACKEND": backend, "OPTIONS": opts}
    return override_settings(COORDINATION=coordination)


def wait_for(condition, timeout=30, interval=0.02):
    """Poll ``condition`` until it is truthy; return it, or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def status_of(event_id):
    from coordination.models import Event

    return Event.objects.filter(pk=event_id).values_list("status", flat=True).first()


def wait_done(event_id, timeout=30):
    wait_for(lambda: status_of(event_id) in ("succeeded", "failed", "cancelled"),
             timeout)
    from coordination.models import Event

    return Event.objects.get(pk=event_id)


@contextmanager
def kept_connections():
    """Run the block in ``store.kept_connection()`` and yield the database
    connections opened meanwhile (the kept one among them); close the kept
    ones afterwards, or the test database could not be dropped."""
    from coordination.queue import store

    opened = []

    def note(sender, connection, **kwargs):
        opened.append(connection)

    connection_created.connect(note)
    try:
        with store.kept_connection():
            yield opened
    finally:
        connection_created.disconnect(note)
        store.close_kept_connections()
