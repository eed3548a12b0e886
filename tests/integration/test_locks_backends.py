"""One contract suite, run against every lock backend on real servers.

``database`` runs on the suite's database (SQLite file, or PostgreSQL with
DATABASE_URL); ``redis`` on the shared Redis (REDIS_URL).
"""

import asyncio
import logging
import threading
import time

import pytest
from django.conf import settings
from django.test import override_settings

from coordination.exceptions import LockAcquireError, LockNotHeldError
from coordination.services import services

BACKENDS = ["local", "database", "redis"]
if "postgresql" in settings.DATABASES["default"]["ENGINE"]:
    # Advisory locks are PostgreSQL's; .ci/run's PostgreSQL pass runs them.
    BACKENDS.append("database-advisory")

# The database backend writes on its own connection, so each test needs a
# real (flushed) test database rather than a rolled-back transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def _config(request, name):
    if name == "database":
        return {"BACKEND": "database"}
    if name == "database-advisory":
        return {"BACKEND": "database", "OPTIONS": {"MODE": "advisory"}}
    if name == "redis":
        url = request.getfixturevalue("redis_url")
        request.getfixturevalue("redis_client")  # flushed before and after
        return {"BACKEND": "redis", "OPTIONS": {"URL": url}}
    return {"BACKEND": name}


@pytest.fixture(params=BACKENDS)
def locks(request):
    config = _config(request, request.param)
    with override_settings(COORDINATION={"APP_NAME": "contract",
                                         "LOCKS": config}):
        yield services.lock_manager


@pytest.fixture
def key(request):
    # Local locks outlive a test; a fresh key per test keeps them apart.
    return f"{request.node.name}-{time.monotonic_ns()}"


def test_acquire_excludes_others_until_release(locks, key):
    lock = locks.acquire(key, ttl=5)
    assert lock.key == key and lock.held()
    assert isinstance(lock.token, int)
    with pytest.raises(LockAcquireError):
        locks.try_acquire(key)
    assert lock.release() is True
    assert lock.release() is False
    again = locks.try_acquire(key, ttl=5)
    assert again.token > lock.token
    again.release()


def test_tokens_grow_with_every_acquisition(locks, key):
    tokens = []
    for _ in range(5):
        with locks.acquire(key, ttl=5) as lock:
            tokens.append(lock.token)
    assert tokens == sorted(set(tokens))


def test_expired_holder_cannot_touch_the_successor(locks, key):
    old = locks.acquire(key, ttl=0.2)
    time.sleep(0.3)
    new = locks.acquire(key, ttl=5, timeout=5)
    assert new.token > old.token
    assert old.release() is False
    with pytest.raises(LockNotHeldError):
        old.extend(5)
    assert not old.held()
    with pytest.raises(LockAcquireError):
        locks.try_acquire(key)
    assert new.release() is True


def test_extend_moves_the_end_of_the_lease(locks, key):
    lock = locks.acquire(key, ttl=0.3)
    lock.extend(5)
    time.sleep(0.4)
    assert lock.held()
    with pytest.raises(LockAcquireError):
        locks.try_acquire(key)
    assert lock.release() is True


def test_a_waiter_gets_the_lock_when_it_is_released(locks, key):
    lock = locks.acquire(key, ttl=30)
    threading.Timer(0.2, lock.release).start()
    waited = locks.acquire(key, ttl=5, timeout=10)
    assert waited.token > lock.token and not lock.held()
    waited.release()


def test_a_waiter_gets_an_expired_lock(locks, key):
    lock = locks.acquire(key, ttl=0.2)
    waited = locks.acquire(key, ttl=5, timeout=10)
    assert waited.token > lock.token
    waited.release()


def test_timeout_raises_lock_acquire_error(locks, key):
    with locks.acquire(key, ttl=5):
        with pytest.raises(LockAcquireError, match="busy"):
            locks.acquire(key, timeout=0.2)


def test_run_exclusive_keeps_a_short_ttl_to_the_end(locks, key):
    def work():
        time.sleep(1.5)
        try:
            locks.try_acquire(key)
        except LockAcquireError:
            return "still held"
        return "lost"

    # A ttl of 0.5 s leaves the renewal thread (which may have to open its
    # own database connection first) time on a loaded machine.
    assert locks.run_exclusive(key, work, ttl=0.5) == "still held"
    locks.try_acquire(key).release()


def test_run_exclusive_releases_when_fn_raises(locks, key):
    def boom():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        locks.run_exclusive(key, boom)
    locks.try_acquire(key).release()


def test_threads_never_overlap(locks, key):
    state = {"value": 0, "inside": 0, "overlap": False}

    def increment():
        state["inside"] += 1
        state["overlap"] |= state["inside"] > 1
        value = state["value"]
        time.sleep(0.0005)
        state["value"] = value + 1
        state["inside"] -= 1

    def worker():
        for _ in range(25):
            locks.run_exclusive(key, increment, ttl=5, timeout=60)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state == {"value": 100, "inside": 0, "overlap": False}


def test_held_locks_and_force_release(locks, key):
    lock = locks.acquire(key, ttl=30)
    (row,) = [r for r in locks.held_locks() if r["key"] == key]
    assert row["token"] == lock.token
    assert row["owner"]["instance"] == services.instance_id
    assert row["expires_at"] > row["acquired_at"]
    assert locks.force_release(key) is True
    assert locks.force_release(key) is False
    assert key not in [r["key"] for r in locks.held_locks()]
    assert lock.release() is False
    locks.try_acquire(key).release()


def test_namespaces_keep_apps_apart(request, locks, key):
    backend_class = type(locks.backend)
    options = locks.backend.options
    one = backend_class("app-one", options)
    two = backend_class("app-two", options)
    try:
        assert one.try_acquire_once(key, "a" * 32, 5, {}) is not None
        assert two.try_acquire_once(key, "b" * 32, 5, {}) is not None
        assert one.try_acquire_once(key, "c" * 32, 5, {}) is None
    finally:
        one.force_release(key)
        two.force_release(key)
        one.close()
        two.close()


def test_lost_lock_is_noticed_by_renewal(locks, key, caplog):
    caplog.set_level(logging.WARNING, logger="coordination.locks")
    with locks.lock(key, ttl=0.3) as lock:
        locks.force_release(key)
        successor = locks.acquire(key, ttl=5)
        deadline = time.monotonic() + 5
        while lock.held() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not lock.held()
    assert successor.release() is True
    assert any(r.action == "lock_lost" and key in r.getMessage()
               for r in caplog.records)


def test_async_twins(locks, key):
    async def main():
        lock = await locks.aacquire(key, ttl=5)
        with pytest.raises(LockAcquireError):
            await locks.atry_acquire(key, timeout=0.05)
        await lock.aextend(5)
        assert await lock.arelease() is True
        async with locks.lock(key, ttl=0.2) as held:
            await asyncio.sleep(0.4)
            assert held.held()
        assert not held.held()

        async def job():
            return "done"

        return await locks.arun_exclusive(key, job)

    assert asyncio.run(main()) == "done"
