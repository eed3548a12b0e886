"""What the event queue makes durable on SQLite.

SQLite's counterpart of the PostgreSQL rule in test_queue_durability.py: in
WAL mode, claims and successes commit at ``synchronous = NORMAL`` (no
fsync; a power loss may undo them and the event runs again), while a
publish, and everything else the connection runs, keeps the project's
level. In rollback-journal mode NORMAL could corrupt the file on a power
loss, so nothing is changed there.
"""

import pytest
from django.db import connection, transaction
from django.utils import timezone

from coordination.models import Event
from coordination.queue import store
from tests.support.queue import kept_connections

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def sqlite():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only; .ci/run also runs the suite on SQLite")


@pytest.fixture
def wal():
    connection.ensure_connection()
    raw = connection.connection
    assert raw.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    raw.execute("PRAGMA synchronous = FULL")
    yield
    raw = connection.connection
    raw.execute("PRAGMA journal_mode = DELETE")


def levels_during(write, on=connection):
    """The synchronous level seen by each statement ``write`` runs on the
    connection ``on``."""
    seen = []

    def spy(execute, sql, params, many, context):
        seen.append((sql.split()[0].upper(),
                     on.connection.execute("PRAGMA synchronous").fetchone()[0]))
        return execute(sql, params, many, context)

    with on.execute_wrapper(spy):
        result = write()
    return seen, result


def new_event():
    now = timezone.now()
    event = Event(channel="durable", payload={"n": 1}, created=now, run_after=now)
    store.insert(event, "default")
    return event


def level():
    return connection.connection.execute("PRAGMA synchronous").fetchone()[0]


def test_wal_claims_and_successes_skip_the_fsync_publish_does_not(wal):
    seen, event = levels_during(new_event)
    assert seen == [("INSERT", 2)]

    seen, claimed = levels_during(lambda: store.claim("owner-a", 30, event_id=event.pk))
    assert seen == [("UPDATE", 1)]
    assert [e.pk for e in claimed] == [event.pk]
    assert level() == 2  # put back for the handler's own writes

    seen, ok = levels_during(lambda: store.succeed_many(claimed))
    assert (seen, ok) == ([("UPDATE", 1)], 1)
    assert level() == 2
    assert Event.objects.get(pk=event.pk).status == store.SUCCEEDED

    second = new_event()
    (claimed,) = store.claim("owner-a", 30, event_id=second.pk)
    seen, ok = levels_during(lambda: store.succeed(claimed))
    assert (seen, ok) == ([("UPDATE", 1)], True)
    assert level() == 2


def test_a_project_level_at_normal_or_below_is_left_alone(wal):
    connection.connection.execute("PRAGMA synchronous = OFF")
    event = new_event()
    seen, _ = levels_during(lambda: store.claim("owner-a", 30, event_id=event.pk))
    assert seen == [("UPDATE", 0)]
    assert level() == 0


def test_rollback_journal_keeps_full_sync():
    connection.ensure_connection()
    assert connection.connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    event = new_event()
    seen, claimed = levels_during(lambda: store.claim("owner-a", 30, event_id=event.pk))
    assert seen == [("UPDATE", 2)]
    assert [e.pk for e in claimed] == [event.pk]


def test_inside_the_callers_transaction_nothing_is_relaxed(wal):
    event = new_event()
    with transaction.atomic():
        seen, (claimed,) = levels_during(
            lambda: store.claim("owner-a", 30, event_id=event.pk))
        assert seen == [("UPDATE", 2)]
        assert store.succeed(claimed)
    assert Event.objects.get(pk=event.pk).status == store.SUCCEEDED


def test_kept_connection_skips_the_fsync_for_its_whole_session(wal):
    # The connection a Celery task thread keeps runs only claims and
    # outcomes, so it is set to NORMAL once instead of around each of them.
    event = new_event()
    with kept_connections() as opened:
        (claimed,) = store.claim("owner-a", 30, event_id=event.pk)
        (kept,) = opened
        assert kept.connection.execute("PRAGMA synchronous").fetchone()[0] == 1
        seen, ok = levels_during(lambda: store.succeed(claimed), on=kept)
    assert (seen, ok) == ([("UPDATE", 1)], True)
    # The thread's usual connection, which handlers use, keeps FULL.
    assert level() == 2
    assert Event.objects.get(pk=event.pk).status == store.SUCCEEDED
