"""The event queue across real processes, on every backend.

One contract suite runs against the ``database`` backend (worker processes
polling the table) and the ``celery`` backend with a real Celery worker on
RabbitMQ and on Redis. Handlers live in ``tests.cluster.queue_nodes`` and
record each run in a table, so the counts come from the database.
"""

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
from django.db import transaction
from django.test import override_settings

from coordination.models import Event
from coordination.services import services
from tests.cluster import queue_nodes
from tests.support.processes import ROOT, child_env, result, spawn
from tests.support.queue import FAST, status_of, wait_done, wait_for
from tests.support.servers import port_open, require

pytestmark = pytest.mark.django_db(transaction=True)

CELERY_QUEUE = f"npq-tests-{os.getpid()}"
COMMON = {**FAST, "LEASE": 5, "SWEEP_INTERVAL": 0.3}
BACKENDS = {
    "database": {"BACKEND": "database", "OPTIONS": COMMON},
    "celery-amqp": {"BACKEND": "celery", "OPTIONS": {
        **{k: v for k, v in COMMON.items() if k != "POLL_INTERVAL"},
        "APP": "tests.celery_app.amqp_app", "QUEUE": CELERY_QUEUE,
        "HOLD_DELAY": 0.05, "BROKER_DELAY_MAX": 0.5,
    }},
    "celery-redis": {"BACKEND": "celery", "OPTIONS": {
        **{k: v for k, v in COMMON.items() if k != "POLL_INTERVAL"},
        "APP": "tests.celery_app.redis_app", "QUEUE": CELERY_QUEUE,
        "HOLD_DELAY": 0.05, "BROKER_DELAY_MAX": 0.5,
    }},
}


class Cluster:
    """Worker processes for one backend, restarted when a test kills one."""

    def __init__(self, name, tmp):
        self.name = name
        self.config = BACKENDS[name]
        self.env = child_env(COORDINATION_EVENT_QUEUE=json.dumps(self.config))
        self.stop_file = str(tmp / "stop")
        self.log = open(tmp / "workers.log", "a")
        self.workers = []

    @property
    def celery(self):
        return self.config["BACKEND"] == "celery"

    def start_worker(self, pool="threads", queue=CELERY_QUEUE, env=None):
        if self.celery:
            app = self.config["OPTIONS"]["APP"].rsplit(".", 1)[1]
            cmd = [sys.executable, "-m", "celery", "-A", f"tests.celery_app:{app}",
                   "worker", "-Q", queue, "-P", pool, "-c", "1" if pool == "prefork"
                   else "4",
                   "-n", f"npq-{uuid.uuid4().hex[:8]}@%h", "-l", "warning",
                   "--without-gossip", "--without-mingle", "--without-heartbeat"]
            proc = subprocess.Popen(cmd, env=env or self.env, cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=self.log)
        else:
            proc = spawn("tests.cluster.queue_nodes:serve", self.stop_file,
                         env=self.env, stdout=subprocess.DEVNULL, stderr=self.log)
        self.workers.append(proc)
        return proc

    def restart_dead(self):
        self.workers = [p for p in self.workers if p.poll() is None]
        if not self.workers:
            self.start_worker()

    def close(self):
        open(self.stop_file, "w").close()
        for proc in self.workers:
            if self.celery:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.log.close()

    def settings(self):
        from django.conf import settings

        return override_settings(COORDINATION={
            **settings.COORDINATION, "EVENT_QUEUE": self.config
        })


def purge(config, delete=False):
    from django.utils.module_loading import import_string
    from kombu import Exchange, Queue

    app = import_string(config["OPTIONS"]["APP"])
    with app.connection_for_write() as conn:
        for name in (CELERY_QUEUE, CELERY_QUEUE + "-prefork"):
            # As Celery declares a queue it was not told about.
            bound = Queue(name, Exchange(name), name)(conn.default_channel)
            bound.declare()
            if delete:
                bound.delete()
                bound.exchange.delete()
            else:
                bound.purge()


@pytest.fixture(scope="module", params=list(BACKENDS))
def cluster(request, django_db_setup, django_db_blocker, tmp_path_factory):
    name = request.param
    if name == "celery-amqp":
        from django.conf import settings

        error = port_open(settings.CELERY_BROKER_URL, 5672)
        if error is not None:
            require("RabbitMQ", settings.CELERY_BROKER_URL, error)
    if name == "celery-redis":
        url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
        error = port_open(url, 6379)
        if error is not None:
            require("Redis", url, error)
    cluster = Cluster(name, tmp_path_factory.mktemp(name))
    with django_db_blocker.unblock():
        queue_nodes.create_run_table()
    if cluster.celery:
        purge(cluster.config)
    cluster.start_worker()
    yield cluster
    cluster.close()
    if cluster.celery:
        purge(cluster.config, delete=True)


@pytest.fixture
def queue(cluster):
    cluster.restart_dead()
    queue_nodes.create_run_table()
    with cluster.settings():
        queue_nodes.subscribe_all(process=False)  # this process only publishes
        yield services.event_queue


def test_thousand_events_from_two_processes_run_exactly_once(cluster, queue,
                                                             tmp_path):
    done = str(tmp_path / "done")
    # With the database backend the publishers process events too: three
    # processes share the work. With Celery the worker does it all.
    serve_too = not cluster.celery
    publishers = [
        spawn("tests.cluster.queue_nodes:publish", "npq-count", 500, 100,
              serve_too, done, env=cluster.env, stderr=cluster.log)
        for _ in range(2)
    ]
    try:
        wait_for(lambda: Event.objects.filter(
            channel="npq-count", status="succeeded").count() == 1000, 240, 0.2)
    finally:
        open(done, "w").close()
    ids = sum((result(p) for p in publishers), [])
    assert len(set(ids)) == 1000
    runs = queue_nodes.runs()
    seen = [row[0] for row in runs]
    assert len(runs) == 1000, [r for r in runs if seen.count(r[0]) > 1]
    assert {row[0] for row in runs} == set(ids)
    assert set(Event.objects.values_list("attempts", flat=True)) == {1}
    if serve_too:
        assert len({row[1] for row in runs}) >= 2  # work was shared


def test_events_reuse_the_runner_connection(queue, tmp_path):
    # A Celery worker of a Django project closes every database connection
    # of its thread before and after each task (Celery's Django fixup).
    # The claim and the outcome must not open a new connection for every
    # event: a reconnection costs several times the claim itself.
    report = tmp_path / "report"
    for _ in range(10):
        event_id = queue.publish("npq-nodb", {"file": str(report)})
        assert wait_done(event_id).status == "succeeded"
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(lines) == 10
    opened = {}
    for _, pid, thread, count in lines:
        opened.setdefault((pid, thread), []).append(count)
    # Ten events on at most four threads: some thread ran three or more.
    assert max(len(counts) for counts in opened.values()) >= 3
    # After a thread's first event (whose outcome may open the connection
    # the thread keeps), its count stays put: later claims and outcomes
    # opened nothing. Earlier tests' handlers opened connections, so the
    # count itself can be anything.
    assert all(len(set(counts[1:])) <= 1 for counts in opened.values()), opened


def test_rolled_back_publish_never_runs_committed_one_does(queue):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            queue.publish("npq-count", "rolled back")
            raise RuntimeError("roll back")
    with transaction.atomic():
        event_id = queue.publish("npq-count", "committed")
        # Not visible to any worker before the commit.
        assert status_of(event_id) == "pending"
    assert wait_done(event_id).status == "succeeded"
    assert [row[0] for row in queue_nodes.runs()] == [event_id]
    assert Event.objects.count() == 1


def test_always_failing_event_tries_four_times_then_fails(queue, admin_client):
    event_id = queue.publish("npq-fail", {}, max_retries=3)
    event = wait_done(event_id)
    assert (event.status, event.attempts) == ("failed", 4)
    assert "RuntimeError: always fails" in event.last_error
    assert [row[2] for row in queue_nodes.runs(event_id)] == [0, 1, 2, 3]

    response = admin_client.post(
        "/admin/coordination/event/",
        {"action": "retry_events", "_selected_action": [event_id]},
    )
    assert response.status_code == 302
    wait_for(lambda: len(queue_nodes.runs(event_id)) == 8)
    event = wait_done(event_id)
    assert (event.status, event.attempts) == ("failed", 4)


def test_timeouts(queue):
    ignored = queue.publish("npq-sleep", {"seconds": 1.0}, timeout=0.2)
    honoured = queue.publish("npq-honour", {}, timeout=0.2)
    for event_id in (ignored, honoured):
        event = wait_done(event_id)
        assert (event.status, event.timed_out) == ("failed", True)
        assert "Timed out after 0.2 s" in event.last_error
    assert [row[4] for row in queue_nodes.runs(honoured)] == ["", "stopped:timeout"]


def test_cancel_reaches_the_process_running_the_event(queue):
    event_id = queue.publish("npq-wait", {}, max_retries=2)
    wait_for(lambda: queue_nodes.runs(event_id))
    assert queue.cancel(event_id) is True
    wait_for(lambda: len(queue_nodes.runs(event_id)) == 2)
    assert queue_nodes.runs(event_id)[1][4] == "stopped:cancelled"
    event = wait_done(event_id)
    assert (event.status, event.attempts) == ("cancelled", 1)


def test_concurrency_two_never_runs_more_than_two_per_instance(queue):
    ids = [queue.publish("npq-conc", {"seconds": 0.2}) for _ in range(8)]
    for event_id in ids:
        assert wait_done(event_id).status == "succeeded"
    peaks = [row[3] for row in queue_nodes.runs()]
    assert len(peaks) == 8
    assert max(peaks) == 2


def test_worker_killed_mid_event_runs_it_again(cluster, queue):
    cluster.start_worker()  # a second worker to take over
    event_id = queue.publish("npq-kill", {})
    (first,) = wait_for(lambda: queue_nodes.runs(event_id))
    os.kill(int(first[4]), signal.SIGKILL)
    event = wait_done(event_id, timeout=60)
    assert (event.status, event.attempts) == ("succeeded", 2)
    second = queue_nodes.runs(event_id)[1]
    assert second[1] != first[1] and second[2] == 1


def test_long_delay_waits_in_the_database_then_runs(cluster, queue):
    event_id = queue.publish("npq-count", {}, delay=1.0)
    if cluster.celery:
        # Longer than BROKER_DELAY_MAX: no message yet, housekeeping sends it.
        assert Event.objects.get(pk=event_id).dispatched_at is None
    event = wait_done(event_id)
    assert event.status == "succeeded" and event.started >= event.run_after


def test_row_committed_without_dispatch_is_picked_up(queue):
    # As left by a publisher that died between its commit and the dispatch.
    event = Event.objects.create(channel="npq-count", payload={})
    assert wait_done(event.pk).status == "succeeded"
    assert len(queue_nodes.runs(event.pk)) == 1


def test_prefork_child_killed_mid_event_runs_it_again(cluster, queue):
    if not cluster.celery:
        pytest.skip("the prefork pool is Celery's")
    # A queue of its own, served by a prefork worker with one child.
    config = {**cluster.config, "OPTIONS": {
        **cluster.config["OPTIONS"], "QUEUE": CELERY_QUEUE + "-prefork"}}
    env = child_env(COORDINATION_EVENT_QUEUE=json.dumps(config))
    worker = cluster.start_worker("prefork", config["OPTIONS"]["QUEUE"], env)
    from django.conf import settings

    with override_settings(COORDINATION={**settings.COORDINATION,
                                         "EVENT_QUEUE": config}):
        services.event_queue.subscribe(
            "npq-kill", process=queue_nodes.kill_me, idle=lambda: False)
        event_id = services.event_queue.publish("npq-kill", {})
        (first,) = wait_for(lambda: queue_nodes.runs(event_id), 60)
        os.kill(int(first[4]), signal.SIGKILL)  # the pool's child
        event = wait_done(event_id, timeout=60)
    assert (event.status, event.attempts) == ("succeeded", 2)
    assert worker.poll() is None  # the parent lives on
    assert queue_nodes.runs(event_id)[1][4] != first[4]
