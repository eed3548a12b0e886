"""The event queue API and the database backend, in this process.

These run on the test database (SQLite by default, PostgreSQL with
DATABASE_URL) with the worker threads of the ``database`` backend.
"""

import datetime
import threading

import pytest
from django.db import connections, transaction
from django.utils import timezone

from coordination.exceptions import (
    ChannelNameError,
    ChannelNotSubscribed,
    ConfigurationError,
    PayloadError,
)
from coordination.models import Event
from coordination.services import services
from tests.support.queue import queue_settings, status_of, wait_done, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queue():
    with queue_settings():
        yield services.event_queue


def record(calls):
    def process(payload, context):
        calls.append((payload, context.event_id, context.attempt))
    return process


def always_fails(payload, context):
    raise RuntimeError(f"boom {payload}")


# Bad input


def test_publish_to_a_channel_not_subscribed_raises(queue):
    with pytest.raises(ChannelNotSubscribed, match="subscribe"):
        queue.publish("nobody", {})
    assert not Event.objects.exists()


def test_unencodable_payload_writes_nothing(queue):
    queue.subscribe("c", process=record([]))
    with pytest.raises(PayloadError):
        queue.publish("c", {"when": timezone.now()})
    with pytest.raises(PayloadError):
        queue.publish("c", (1, 2))
    assert not Event.objects.exists()


@pytest.mark.parametrize("kwargs", [
    {"timeout": 0}, {"timeout": -1}, {"delay": -1}, {"max_retries": -1},
    {"max_retries": 1.5}, {"timeout": "1"},
])
def test_bad_publish_options_raise(queue, kwargs):
    queue.subscribe("c", process=record([]))
    with pytest.raises((ValueError, TypeError)):
        queue.publish("c", {}, **kwargs)
    assert not Event.objects.exists()


def test_bad_subscriptions_raise(queue):
    with pytest.raises(ChannelNameError):
        queue.subscribe("two words", process=record([]))
    with pytest.raises(TypeError):
        queue.subscribe("c", process=None)
    with pytest.raises(ValueError):
        queue.subscribe("c", process=record([]), concurrency=0)


def test_bad_options_are_configuration_errors():
    with queue_settings(WORKERS=0, RETRY_DELAY=-1):
        with pytest.raises(ConfigurationError, match="WORKERS"):
            services.event_queue.backend


# Running events


def test_event_runs_once_with_its_payload_and_context(queue):
    calls = []
    queue.subscribe("c", process=record(calls))
    event_id = queue.publish("c", {"n": [1, "two", None]})
    event = wait_done(event_id)
    assert event.status == "succeeded"
    assert event.attempts == 1
    assert event.started and event.finished and event.lease_owner == ""
    assert calls == [({"n": [1, "two", None]}, event_id, 0)]
    assert queue.get(event_id).status == "succeeded"
    assert queue.get(event_id + 1000) is None


def test_subscribing_again_replaces_the_handler(queue):
    first, second = [], []
    queue.subscribe("c", process=record(first))
    queue.subscribe("c", process=record(second))
    wait_done(queue.publish("c", 1))
    assert first == [] and len(second) == 1
    assert queue.unsubscribe("c") is True
    assert queue.unsubscribe("c") is False
    with pytest.raises(ChannelNotSubscribed):
        queue.publish("c", 1)


def test_async_handler(queue):
    calls = []

    async def process(payload, context):
        calls.append(payload)

    queue.subscribe("c", process=process)
    assert wait_done(queue.publish("c", "x")).status == "succeeded"
    assert calls == ["x"]


def test_rolled_back_publish_never_runs(queue):
    calls = []
    queue.subscribe("c", process=record(calls))
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            queue.publish("c", "rolled back")
            1 / 0
    # Events of a channel with concurrency=1 run in order: once a later
    # event is done, the rolled-back one would have run already.
    wait_done(queue.publish("c", "committed"))
    assert [payload for payload, *_ in calls] == ["committed"]
    assert Event.objects.count() == 1


def test_committed_publish_runs_after_commit(queue):
    calls = []
    queue.subscribe("c", process=record(calls))
    with transaction.atomic():
        event_id = queue.publish("c", "later")
        assert calls == []
    assert wait_done(event_id).status == "succeeded"
    assert calls == [("later", event_id, 0)]


def test_failing_handler_is_retried_then_failed_and_can_be_retried(queue):
    attempts = []

    def process(payload, context):
        attempts.append(context.attempt)
        raise RuntimeError("always broken")

    queue.subscribe("c", process=process)
    event_id = queue.publish("c", {}, max_retries=3)
    event = wait_done(event_id)
    assert (event.status, event.attempts) == ("failed", 4)
    assert attempts == [0, 1, 2, 3]
    assert "RuntimeError: always broken" in event.last_error
    assert "Traceback" in event.last_error
    assert not event.timed_out

    assert queue.retry(event_id) is True
    assert queue.retry(event_id) is False  # pending now, nothing to retry
    event = wait_done(event_id)
    assert (event.status, event.attempts) == ("failed", 4)
    assert attempts == [0, 1, 2, 3] * 2


def test_retries_back_off(queue):
    times = []

    def process(payload, context):
        times.append(timezone.now())
        if context.attempt < 2:
            raise ValueError("not yet")

    with queue_settings(RETRY_DELAY=0.2, RETRY_DELAY_MAX=10):
        q = services.event_queue
        q.subscribe("c", process=process)
        event = wait_done(q.publish("c", {}, max_retries=5))
    assert (event.status, event.attempts) == ("succeeded", 3)
    # 0.2 s then 0.4 s, each jittered by at most a quarter.
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.15 and gaps[1] >= 0.3


def test_handler_ignoring_its_timeout_is_recorded_as_timed_out(queue):
    seen = threading.Event()

    def process(payload, context):
        seen.wait(0.5)  # ignores context.signal
        return "done anyway"

    queue.subscribe("c", process=process)
    event = wait_done(queue.publish("c", {}, timeout=0.1))
    assert (event.status, event.timed_out) == ("failed", True)
    assert "Timed out after 0.1 s" in event.last_error


def test_handler_honouring_its_timeout_stops(queue):
    outcome = []

    def process(payload, context):
        aborted = context.signal.wait(30)
        outcome.append((aborted, context.signal.reason))
        context.signal.raise_if_aborted()

    queue.subscribe("c", process=process)
    event = wait_done(queue.publish("c", {}, timeout=0.1, max_retries=1))
    assert outcome == [(True, "timeout"), (True, "timeout")]
    assert (event.status, event.attempts, event.timed_out) == ("failed", 2, True)


def test_cancel_pending_event(queue):
    calls = []
    queue.subscribe("c", process=record(calls))
    event_id = queue.publish("c", {}, delay=60)
    assert queue.cancel(event_id) is True
    assert queue.cancel(event_id) is False
    assert status_of(event_id) == "cancelled"
    assert calls == []
    # A retry makes it due now, whatever its delay was.
    assert queue.retry(event_id) is True
    assert wait_done(event_id).status == "succeeded"
    assert len(calls) == 1


def test_cancel_running_event_signals_it_and_it_ends_cancelled(queue):
    started, outcome = threading.Event(), []

    def process(payload, context):
        started.set()
        outcome.append(context.signal.wait(30))
        outcome.append(context.signal.reason)
        return "ignores the cancel"

    queue.subscribe("c", process=process)
    event_id = queue.publish("c", {}, max_retries=3)
    assert started.wait(30)
    assert queue.cancel(event_id) is True
    wait_for(lambda: len(outcome) == 2)
    event = wait_done(event_id)
    assert outcome == [True, "cancelled"]
    assert (event.status, event.attempts) == ("cancelled", 1)


def test_cancel_from_another_instance_reaches_the_runner(queue):
    # The row is cancelled directly, as another process would: the lease
    # check notices it and fires the signal.
    started, outcome = threading.Event(), []

    def process(payload, context):
        started.set()
        outcome.append(context.signal.wait(30))

    queue.subscribe("c", process=process)
    event_id = queue.publish("c", {})
    assert started.wait(30)
    Event.objects.filter(pk=event_id).update(status="cancelled")
    wait_for(lambda: outcome)
    assert outcome == [True]
    assert status_of(event_id) == "cancelled"


def test_delay(queue):
    calls = []
    queue.subscribe("c", process=record(calls))
    event_id = queue.publish("c", {}, delay=0.3)
    event = Event.objects.get(pk=event_id)
    assert event.run_after >= event.created + datetime.timedelta(seconds=0.3)
    event = wait_done(event_id)
    assert event.started >= event.run_after


def test_concurrency_bounds_running_events(queue):
    lock, running, peak = threading.Lock(), [0], [0]

    def process(payload, context):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        # Hold until a second one runs (or a while), so the peak is reached.
        wait_for(lambda: peak[0] >= 2 or context.signal.wait(0.3), 5)
        with lock:
            running[0] -= 1

    queue.subscribe("c", process=process, concurrency=2)
    ids = [queue.publish("c", n) for n in range(8)]
    for event_id in ids:
        assert wait_done(event_id).status == "succeeded"
    assert peak == [2]


def test_concurrency_one_runs_in_order(queue):
    calls = []
    queue.subscribe("c", process=record(calls))
    with transaction.atomic():
        ids = [queue.publish("c", n) for n in range(10)]
    wait_done(ids[-1])
    assert [event_id for _, event_id, _ in calls] == ids


def test_unlimited_concurrency_uses_every_worker(queue):
    barrier = threading.Barrier(4, timeout=30)
    queue.subscribe("c", process=lambda p, c: barrier.wait(), concurrency=None)
    ids = [queue.publish("c", n) for n in range(4)]
    assert all(wait_done(i).status == "succeeded" for i in ids)


def test_idle_false_holds_work_back(queue):
    gate, asked = threading.Event(), []

    def idle():
        asked.append(1)
        return gate.is_set()

    calls = []
    queue.subscribe("c", process=record(calls), idle=idle)
    event_id = queue.publish("c", {})
    wait_for(lambda: len(asked) >= 3)
    assert status_of(event_id) == "pending" and calls == []
    gate.set()
    assert wait_done(event_id).status == "succeeded"


def test_undispatched_rows_and_expired_leases_are_picked_up(queue):
    calls = []
    queue.subscribe("c", process=record(calls))
    # A row committed by a process that died before dispatching, and one
    # whose runner died holding it.
    orphan = Event.objects.create(channel="c", payload="orphan")
    past = timezone.now() - datetime.timedelta(seconds=5)
    lost = Event.objects.create(
        channel="c", payload="lost", status="running", attempts=1,
        lease_owner="dead-instance", lease_expires=past, started=past,
    )
    assert wait_done(orphan.pk).status == "succeeded"
    event = wait_done(lost.pk)
    assert (event.status, event.attempts) == ("succeeded", 2)
    assert sorted(payload for payload, *_ in calls) == ["lost", "orphan"]


def test_live_lease_is_not_taken_over(queue):
    queue.subscribe("c", process=record([]))
    soon = timezone.now() + datetime.timedelta(seconds=60)
    held = Event.objects.create(
        channel="c", payload="held", status="running", attempts=1,
        lease_owner="other-instance", lease_expires=soon,
    )
    wait_done(queue.publish("c", "after"))
    assert status_of(held.pk) == "running"


def test_lost_too_often_ends_failed(queue):
    queue.subscribe("c", process=record([]))
    past = timezone.now() - datetime.timedelta(seconds=5)
    lost = Event.objects.create(
        channel="c", payload="x", status="running", attempts=4,
        lease_owner="dead-instance", lease_expires=past,
    )
    event = wait_done(lost.pk)
    assert event.status == "failed" and "lost" in event.last_error


def test_stop_waits_for_running_events(queue):
    started = threading.Event()

    def process(payload, context):
        started.set()
        context.signal.wait(0.3)

    queue.subscribe("c", process=process)
    event_id = queue.publish("c", {})
    assert started.wait(30)
    services.stop()
    assert status_of(event_id) == "succeeded"
    # Subscriptions stay; start() resumes.
    services.start()
    assert wait_done(queue.publish("c", {})).status == "succeeded"


def test_system_checks_name_bad_event_queue_options():
    from django.test import override_settings

    from coordination.checks import check_settings

    def queue_errors(section):
        with override_settings(COORDINATION={"EVENT_QUEUE": section}):
            return [e.msg for e in check_settings() if "EVENT_QUEUE" in e.msg]

    assert queue_errors({"BACKEND": "database"}) == []
    assert queue_errors({"BACKEND": "celery", "OPTIONS": {"QUEUE": "q"}}) == []
    (msg,) = queue_errors({"BACKEND": "database", "OPTIONS": {"WORKERS": 0}})
    assert "WORKERS" in msg and "int >= 1" in msg
    (msg,) = queue_errors({"BACKEND": "database", "OPTIONS": {"QUEUE": "q"}})
    assert "'QUEUE'" in msg and "WORKERS" in msg
    (msg,) = queue_errors({"BACKEND": "celery", "OPTIONS": {"RETRY_DELAY": -1}})
    assert "RETRY_DELAY" in msg
    (msg,) = queue_errors({"BACKEND": "rabbit"})
    assert "celery, database" in msg


def test_lease_is_renewed_while_a_long_event_runs():
    calls = []

    def process(payload, context):
        calls.append(context.attempt)
        context.signal.wait(1.0)  # twice the lease

    with queue_settings(LEASE=0.5):
        queue = services.event_queue
        queue.subscribe("c", process=process)
        event = wait_done(queue.publish("c", {}))
    assert (event.status, event.attempts, calls) == ("succeeded", 1, [0])


def test_async_twins(queue):
    import asyncio

    from asgiref.sync import sync_to_async

    calls = []
    queue.subscribe("c", process=record(calls))

    async def main():
        event_id = await queue.apublish("c", {"from": "async"}, max_retries=1)
        await sync_to_async(wait_done)(event_id)
        event = await queue.aget(event_id)
        changed = (await queue.acancel(event_id), await queue.aretry(event_id))
        # sync_to_async ran the ORM in its own thread: close its connection.
        await sync_to_async(connections.close_all)()
        return event, changed

    event, changed = asyncio.run(main())
    assert (event.status, event.payload) == ("succeeded", {"from": "async"})
    assert changed == (False, False)
    assert len(calls) == 1


def test_stop_gives_back_events_claimed_ahead():
    started, release = threading.Event(), threading.Event()

    def process(payload, context):
        started.set()
        release.wait(30)

    with queue_settings(WORKERS=1, PREFETCH=5):
        queue = services.event_queue
        queue.subscribe("c", process=process, concurrency=None)
        with transaction.atomic():
            ids = [queue.publish("c", n) for n in range(4)]
        assert started.wait(30)
        wait_for(lambda: Event.objects.filter(status="running").count() == 4)
        def stop():
            services.stop()
            connections.close_all()

        stopping = threading.Thread(target=stop)
        stopping.start()
        # The three waiting events go back while the first one still runs.
        wait_for(lambda: Event.objects.filter(status="pending").count() == 3)
        release.set()
        stopping.join(30)
        states = [status_of(i) for i in ids]
        assert states[0] == "succeeded"
        assert states[1:] == ["pending"] * 3
        assert set(Event.objects.filter(pk__in=ids[1:]).values_list(
            "attempts", flat=True)) == {0}
