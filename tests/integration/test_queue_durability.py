"""What the event queue makes durable on PostgreSQL.

Publishing must survive a server crash (the caller was told the event
exists); a claim or a success need not (lost, the event runs again, which
at-least-once allows). So claims and successes switch ``synchronous_commit``
off for their own transaction only, and never inside the caller's.
"""

import pytest
from django.db import connection, transaction
from django.utils import timezone

from coordination.models import Event
from coordination.queue import store
from tests.support.queue import kept_connections

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only; .ci/run also runs the suite on PostgreSQL")


def new_event():
    now = timezone.now()
    event = Event(channel="durable", payload={"n": 1}, created=now, run_after=now)
    store.insert(event, "default")
    return event


def setting_after(write):
    # In one explicit transaction, so the setting made by the statement can
    # be read before the transaction ends; rolled back afterwards.
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        try:
            result = write()
            cursor.execute("SELECT current_setting('synchronous_commit')")
            return cursor.fetchone()[0], result
        finally:
            cursor.execute("ROLLBACK")


def test_publish_waits_for_the_wal_flush():
    setting, _ = setting_after(new_event)
    assert setting == "on"


def test_claim_and_success_skip_the_wal_flush():
    event = new_event()
    setting, claimed = setting_after(
        lambda: store.claim("owner-a", 30, event_id=event.pk)
    )
    assert setting == "off"
    assert [e.pk for e in claimed] == [event.pk]

    # The claim was rolled back; claim for real, then record the outcome.
    (claimed,) = store.claim("owner-a", 30, event_id=event.pk)
    assert setting_after(lambda: store.succeed(claimed)) == ("off", True)
    assert setting_after(lambda: store.succeed_many([claimed])) == ("off", 1)
    # Only for that transaction: the session keeps its durable default.
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('synchronous_commit')")
        assert cursor.fetchone()[0] == "on"


def test_inside_the_callers_transaction_nothing_is_relaxed():
    event = new_event()
    with transaction.atomic():
        (claimed,) = store.claim("owner-a", 30, event_id=event.pk)
        assert store.succeed(claimed)
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('synchronous_commit')")
            assert cursor.fetchone()[0] == "on"
    assert Event.objects.get(pk=event.pk).status == store.SUCCEEDED


def test_kept_connection_skips_the_flush_for_its_whole_session():
    # The connection a Celery task thread keeps runs only claims and
    # outcomes: synchronous_commit is off for its session, set once.
    event = new_event()
    with kept_connections() as opened:
        (claimed,) = store.claim("owner-a", 30, event_id=event.pk)
        assert store.succeed(claimed)
        (kept,) = opened
        with kept.cursor() as cursor:
            cursor.execute("SELECT current_setting('synchronous_commit')")
            assert cursor.fetchone() == ("off",)
    # Publishing on the usual connection still waits for the flush.
    assert setting_after(new_event)[0] == "on"
    assert Event.objects.get(pk=event.pk).status == "succeeded"
