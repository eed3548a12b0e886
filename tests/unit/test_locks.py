"""LockManager API on the in-process backend: validation, objects, renewal."""

import asyncio
import logging
import threading
import time

import pytest
from django.test import override_settings

from coordination import backends
from coordination.exceptions import (
    ChannelNameError,
    ConfigurationError,
    LockAcquireError,
    LockNotHeldError,
)
from coordination.locks import Lock, LockManager
from coordination.locks.backends.local import LocalBackend
from coordination.services import services


@pytest.fixture
def locks():
    with override_settings(COORDINATION={"APP_NAME": "unit",
                                         "LOCKS": {"BACKEND": "local"}}):
        yield services.lock_manager


def test_the_manager_is_the_configured_one(locks):
    from nocoplugins import app

    assert isinstance(locks, LockManager)
    assert app.lock_manager is locks
    assert isinstance(locks.backend, LocalBackend)


@pytest.mark.parametrize("key", ["", "a b", "tab\t", "x" * 201, None, 3])
def test_bad_keys_raise_channel_name_error(locks, key):
    with pytest.raises(ChannelNameError):
        locks.acquire(key)
    with pytest.raises(ValueError):
        locks.lock(key)


@pytest.mark.parametrize("ttl", [0, -1, "5", True, float("inf"), float("nan")])
def test_bad_ttl_says_what_to_pass(locks, ttl):
    with pytest.raises(ValueError, match="positive number of seconds"):
        locks.acquire("k", ttl=ttl)


@pytest.mark.parametrize("timeout", [-1, "1", True, float("nan")])
def test_bad_timeout(locks, timeout):
    with pytest.raises(ValueError, match="timeout"):
        locks.acquire("k", timeout=timeout)


def test_default_ttl_comes_from_settings():
    with override_settings(COORDINATION={
            "LOCKS": {"BACKEND": "local", "DEFAULT_TTL": 7}}):
        lock = services.lock_manager.acquire("ttl-default")
        assert lock.ttl == 7
        lock.release()


def test_locks_are_not_reentrant(locks):
    with locks.acquire("re") as lock:
        with pytest.raises(LockAcquireError, match="'re'"):
            locks.try_acquire("re")
        assert lock.held()
    assert not lock.held()


def test_lock_from_acquire_is_a_context_manager_that_releases(locks):
    with locks.acquire("cm", ttl=5) as lock:
        assert isinstance(lock, Lock) and lock.held()
    assert not lock.held()
    assert lock.release() is False
    locks.try_acquire("cm").release()


def test_extend_after_release_raises(locks):
    lock = locks.acquire("ext")
    assert lock.release() is True
    with pytest.raises(LockNotHeldError, match="Acquire it again"):
        lock.extend(5)


def test_held_turns_false_when_the_lease_runs_out(locks):
    lock = locks.acquire("short", ttl=0.05)
    time.sleep(0.08)
    assert not lock.held()
    assert lock.release() is False


def test_owner_description_names_the_caller(locks):
    with locks.lock("owned", ttl=5):
        (row,) = [r for r in locks.held_locks() if r["key"] == "owned"]
    owner = row["owner"]
    assert owner["instance"] == services.instance_id
    assert {"host", "pid", "command"} <= set(owner)
    assert "test_owner_description_names_the_caller" in owner["purpose"]


def test_run_exclusive_names_the_function(locks):
    seen = {}

    def job():
        seen.update(locks.held_locks()[0]["owner"])
        return 42

    assert locks.run_exclusive("fn", job) == 42
    assert seen["purpose"].endswith("job")


def test_register_adapter_needs_the_contract(locks):
    with pytest.raises(TypeError, match="BaseLockBackend"):
        LockManager.register_adapter("bad", dict)


def test_registered_adapter_is_used(monkeypatch):
    # Keep the registration to this test.
    monkeypatch.setitem(backends._registered, "LOCKS", {})

    class Recording(LocalBackend):
        calls = []

        def release(self, key, owner_token):
            self.calls.append(key)
            return super().release(key, owner_token)

    LockManager.register_adapter("recording", Recording)
    with override_settings(COORDINATION={"LOCKS": {"BACKEND": "recording"}}):
        services.lock_manager.try_acquire("via-adapter").release()
    assert Recording.calls == ["via-adapter"]


def test_unknown_backend_fails_on_first_use():
    with override_settings(COORDINATION={"LOCKS": {"BACKEND": "nope"}}):
        with pytest.raises(ConfigurationError, match="database, local, redis"):
            services.lock_manager.acquire("k")


def test_redis_backend_needs_a_url():
    with override_settings(COORDINATION={"LOCKS": {"BACKEND": "redis"}}):
        with pytest.raises(ConfigurationError, match="'URL'"):
            services.lock_manager.acquire("k")


def test_renewal_keeps_a_short_ttl_lock(locks):
    with locks.lock("renewed", ttl=0.15) as lock:
        time.sleep(0.4)
        assert lock.held()
        with pytest.raises(LockAcquireError):
            locks.try_acquire("renewed")
    assert not lock.held()


def test_lost_renewal_is_reported(locks, caplog):
    caplog.set_level(logging.WARNING, logger="coordination.locks")
    with locks.lock("stolen", ttl=0.15) as lock:
        assert locks.force_release("stolen") is True
        other = locks.acquire("stolen", ttl=5)
        deadline = time.monotonic() + 5
        while lock.held() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not lock.held()
    # Leaving the block must not release the new holder's lock.
    assert other.held() and other.release() is True
    lost = [r for r in caplog.records if r.action == "lock_lost"]
    assert lost and "stolen" in lost[0].getMessage()
    assert services.instance_id in lost[0].getMessage()


def test_a_release_racing_a_renewal_is_not_reported_lost(locks, caplog):
    # ttl 0.03 s: the renewer extends every 10 ms, so some renewals land
    # while a lock is being released; they must find it released and say
    # nothing, and the renewer must not keep released locks.
    caplog.set_level(logging.WARNING, logger="coordination.locks")
    for _ in range(100):
        with locks.lock("busy", ttl=0.03):
            time.sleep(0.012)
    assert [r.getMessage() for r in caplog.records] == []
    assert locks._renewer._due == {}


def test_threads_never_overlap(locks):
    state = {"value": 0, "inside": 0, "overlap": False}

    def increment():
        state["inside"] += 1
        if state["inside"] > 1:
            state["overlap"] = True
        value = state["value"]
        time.sleep(0)
        state["value"] = value + 1
        state["inside"] -= 1

    def worker():
        for _ in range(50):
            locks.run_exclusive("counter", increment, ttl=5)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state == {"value": 200, "inside": 0, "overlap": False}


def test_async_twins(locks):
    async def main():
        lock = await locks.aacquire("async", ttl=5)
        with pytest.raises(LockAcquireError):
            await locks.atry_acquire("async")
        await lock.aextend(5)
        assert await lock.arelease() is True
        async with locks.lock("async", ttl=0.15) as held:
            await asyncio.sleep(0.3)
            assert held.held()
        assert not held.held()

        async def job():
            await asyncio.sleep(0)
            return "async"

        assert await locks.arun_exclusive("async", job) == "async"
        assert await locks.arun_exclusive("async", lambda: "sync") == "sync"

    asyncio.run(main())


def test_a_failing_release_is_logged_not_raised(monkeypatch, caplog):
    class Unreachable(LocalBackend):
        def release(self, key, owner_token):
            raise ConnectionError("server down")

    monkeypatch.setitem(backends._registered, "LOCKS", {})
    LockManager.register_adapter("unreachable", Unreachable)
    with override_settings(COORDINATION={"LOCKS": {"BACKEND": "unreachable"}}):
        locks = services.lock_manager
        assert locks.run_exclusive("down", lambda: "result", ttl=5) == "result"
        lock = locks.acquire("down2", ttl=5)
        assert lock.release() is False
    failures = [r for r in caplog.records if r.action == "lock_release_error"]
    assert len(failures) == 2 and "down" in failures[0].getMessage()


def test_run_exclusive_needs_a_function(locks):
    with pytest.raises(TypeError, match="without calling it"):
        locks.run_exclusive("fn-check", 42)
    # Nothing was acquired.
    locks.try_acquire("fn-check").release()
