"""The connection a Celery task thread keeps for claims and outcomes."""

import time

import pytest
from django.db import connection, connections
from django.utils import timezone

from coordination.models import Event
from coordination.queue import store
from tests.support.queue import kept_connections

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def close_kept():
    yield
    # Or the test database could not be dropped at the end of the run.
    store.close_kept_connections()


def new_event():
    now = timezone.now()
    event = Event(channel="kept", payload={}, created=now, run_after=now)
    store.insert(event, "default")
    return event.pk


def test_claims_survive_the_fixup_closing_every_connection():
    ids = [new_event() for _ in range(3)]
    with kept_connections() as opened:
        for event_id in ids:
            # What Celery's Django fixup does before and after each task.
            connections.close_all()
            (event,) = store.claim("me", 30, event_id=event_id)
            assert store.succeed(event)
            connections.close_all()
    assert len(opened) == 1
    assert set(Event.objects.values_list("status", flat=True)) == {"succeeded"}


def test_kept_connection_dropped_by_the_server_is_replaced(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only; .ci/run also runs the suite on PostgreSQL")
    first, second = new_event(), new_event()
    with store.kept_connection():
        assert store.waiting_row(first) is not None
    with connection.cursor() as cursor:
        # The server ends the kept session (an idle timeout, a restart). It
        # is the one whose last query looked up ``first``.
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND query LIKE %s",
            [f'%"id" = {first} %'],
        )
        assert cursor.fetchall() == [(True,)]
    time.sleep(0.1)
    monkeypatch.setattr(store, "KEPT_CHECK_AFTER", 0)
    with store.kept_connection():
        (event,) = store.claim("me", 30, event_id=second)
    assert event.pk == second


def test_a_claimed_event_reads_as_the_orm_reads_it():
    # The claim builds Event objects from its own statement: every field
    # must come back typed as the ORM gives it (JSON, aware dates, booleans).
    now = timezone.now()
    event = Event(channel="kept", payload={"n": [1, 2], "s": "é"}, created=now,
                  run_after=now, timeout=2.5, max_retries=3)
    store.insert(event, "default")
    (claimed,) = store.claim("me", 30, event_id=event.pk)
    stored = Event.objects.get(pk=event.pk)
    for field in Event._meta.concrete_fields:
        assert getattr(claimed, field.attname) == getattr(stored, field.attname), (
            field.name)
    assert claimed.payload == {"n": [1, 2], "s": "é"}
    assert claimed.timed_out is False and claimed.started.tzinfo is not None
    assert claimed._state.db == "default" and not claimed._state.adding
