"""Locks across real processes: exclusion, crashes, expiry, Redis restarts.

Children (tests/cluster/locks_nodes.py) run Django on the test database;
the database backend runs on it (SQLite file, or PostgreSQL with
DATABASE_URL), the redis backend on REDIS_URL or a private redis-server.
"""

import json
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from coordination.exceptions import LockAcquireError
from coordination.services import services
from tests.support.processes import child_env, result, run, spawn

pytestmark = pytest.mark.django_db(transaction=True)

NODES = "tests.cluster.locks_nodes"


CONFIGS = ["database", "redis"]
if "postgresql" in settings.DATABASES["default"]["ENGINE"]:
    CONFIGS.append("database-advisory")


@pytest.fixture(params=CONFIGS)
def config(request):
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        request.getfixturevalue("redis_client")
        return {"BACKEND": "redis", "OPTIONS": {"URL": url}}
    if request.param == "database-advisory":
        return {"BACKEND": "database", "OPTIONS": {"MODE": "advisory"}}
    return {"BACKEND": "database"}


def _locks(config):
    override = override_settings(COORDINATION={"APP_NAME": "cluster",
                                               "LOCKS": config})
    override.enable()
    return override, services.lock_manager


@pytest.fixture
def locks(config):
    override, manager = _locks(config)
    yield manager
    override.disable()


def _wait_for(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def _counter_run(config, tmp_path, processes, count, with_tokens=False,
                 env=None):
    (tmp_path / "counter").write_text("0")
    children = [spawn(f"{NODES}:increment", config, "counter", str(tmp_path),
                      count, 5, with_tokens, env=env) for _ in range(processes)]
    (tmp_path / "go").write_text("go")
    return [result(child, timeout=600) for child in children]


def test_four_processes_lose_no_update(config, tmp_path):
    results = _counter_run(config, tmp_path, 4, 200)
    assert int((tmp_path / "counter").read_text()) == 800
    assert [r["overlaps"] for r in results] == [0, 0, 0, 0]
    values = sorted(v for r in results for v, _ in r["seen"])
    assert values == list(range(800))


def test_tokens_grow_in_the_order_holders_got_the_lock(config, tmp_path):
    results = _counter_run(config, tmp_path, 3, 30, with_tokens=True)
    seen = sorted(tuple(pair) for r in results for pair in r["seen"])
    assert [v for v, _ in seen] == list(range(90))
    tokens = [t for _, t in seen]
    assert tokens == sorted(tokens) and len(set(tokens)) == 90


def test_killed_holder_blocks_others_at_most_its_ttl(config, locks, tmp_path):
    ready = tmp_path / "ready"
    child = spawn(f"{NODES}:hold_forever", config, "crash", str(ready), 1.0)
    try:
        _wait_for(ready)
        with pytest.raises(LockAcquireError):
            locks.try_acquire("crash")
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        # Renewal died with the process, so the lease ends within its ttl
        # (1 s); the margin covers a loaded machine.
        lock = locks.acquire("crash", timeout=1.0 + 10)
        assert lock.token > json.loads(ready.read_text())
        assert lock.release() is True
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()


def test_stopped_holder_blocks_others_at_most_its_ttl(config, locks, tmp_path):
    # SIGSTOP: the process (and its renewal) is frozen but its connections
    # stay open, as in a long pause; the lease must still end.
    ready = tmp_path / "ready"
    child = spawn(f"{NODES}:hold_forever", config, "frozen", str(ready), 1.0)
    try:
        _wait_for(ready)
        child.send_signal(signal.SIGSTOP)
        lock = locks.acquire("frozen", timeout=1.0 + 10)
        assert lock.token > json.loads(ready.read_text())
        child.send_signal(signal.SIGCONT)
        time.sleep(0.5)  # the holder's renewal fails; it must not get it back
        with pytest.raises(LockAcquireError):
            locks.try_acquire("frozen")
        assert lock.held() and lock.release() is True
    finally:
        child.send_signal(signal.SIGCONT)
        child.kill()
        child.communicate()


def test_expired_holder_cannot_touch_the_successor(config, locks, tmp_path):
    ready, proceed = tmp_path / "ready", tmp_path / "proceed"
    child = spawn(f"{NODES}:outlive_lease", config, "expired", str(ready),
                  str(proceed), 0.3)
    _wait_for(ready)
    successor = locks.acquire("expired", ttl=30, timeout=30)
    proceed.write_text("go")
    old = result(child)
    assert old == {"token": old["token"], "released": False,
                   "extended": False, "held": False}
    assert successor.token > old["token"]
    assert successor.held()
    with pytest.raises(LockAcquireError):
        locks.try_acquire("expired")
    assert successor.release() is True


def test_run_exclusive_keeps_a_short_ttl_to_the_end(config, locks, tmp_path):
    ready = tmp_path / "ready"
    done = tmp_path / "ready.done"
    child = spawn(f"{NODES}:long_job", config, "long", str(ready), 0.6, 2.5)
    _wait_for(ready)
    refused = 0
    while True:
        try:
            lock = locks.try_acquire("long")
        except LockAcquireError:
            refused += 1
            time.sleep(0.05)
            continue
        # Got it: only possible once the child's work had finished.
        assert done.exists()
        lock.release()
        break
    assert result(child) == "done"
    assert refused > 5


def _held_through_restart(config, tmp_path, restart, env=None):
    """A holder and two waiters on one key while ``restart()`` runs: the
    holder must learn of its loss before anyone gets the key, the waiters
    take turns with larger tokens, and the cluster works normally after."""
    holder_ready = tmp_path / "holder"
    holder = spawn(f"{NODES}:hold_through_restart", config, "restart",
                   str(holder_ready), 3.0, env=env)
    _wait_for(holder_ready)
    waiters = []
    for n in range(2):
        ready = tmp_path / f"waiter{n}"
        waiters.append(spawn(f"{NODES}:wait_then_hold", config, "restart",
                             str(ready), 0.3, 3.0, env=env))
        _wait_for(ready)
    time.sleep(0.5)  # the waiters are waiting on the server by now

    restart()

    old = result(holder)
    got = sorted((result(w) for w in waiters), key=lambda r: r["got_at"])
    # The holder learnt it lost the lock, and nobody got it before that.
    assert old["held"] is False
    assert got[0]["got_at"] > old["lost_at"]
    # The two waiters took turns, with larger tokens than before the loss.
    assert got[1]["got_at"] >= got[0]["left_at"]
    assert all(r["held"] for r in got)
    assert old["token"] < got[0]["token"] < got[1]["token"]

    # And the cluster works normally afterwards.
    results = _counter_run(config, tmp_path, 2, 50, env=env)
    assert int((tmp_path / "counter").read_text()) == 100
    assert [r["overlaps"] for r in results] == [0, 0]


def test_redis_restart_while_held_and_waited(redis_server, tmp_path):
    config = {"BACKEND": "redis", "OPTIONS": {"URL": redis_server.url,
                                              "POLL_INTERVAL": 0.2}}
    # The holder renews every second (ttl 3 s): a short outage usually falls
    # between two renewals, so the waiters reconnect before the holder can
    # notice its loss, and must hold back on their own.
    _held_through_restart(config, tmp_path,
                          lambda: redis_server.restart(down_for=0.05))


def test_postgresql_restart_ends_advisory_locks_and_holds_back_grants(
        postgres_server, tmp_path):
    # Advisory locks live in the server's memory: a restart frees them all
    # while the holder still runs. Nobody may get the key before the holder
    # has learnt of its loss (its renewal fails), so for RESTART_GRACE
    # seconds after the server starts nothing is granted.
    env = child_env(LOCKS_DATABASE_URL=postgres_server.url)
    assert run(f"{NODES}:migrate", "locks", env=env) == "migrated"
    config = {"BACKEND": "database", "OPTIONS": {
        "MODE": "advisory", "DATABASE": "locks", "RESTART_GRACE": 2.0}}
    time.sleep(2.0)  # the grace after the first start
    _held_through_restart(config, tmp_path, postgres_server.restart, env=env)
