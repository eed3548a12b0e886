"""The Redis lock backend's waiter queue and its quiet registration.

The queue tests run on the shared Redis; those that change the server (an
ACL, a script flush) on a private one. POLL_INTERVAL is 30 s wherever a
waiter must be woken by a release: far beyond the test's timeouts, so it
can only get the lock in time by being handed it, not by looking again
after a poll.
"""

import asyncio
import contextlib
import threading

import pytest
import redis
from django.test import override_settings

from coordination.services import services

QUEUE = "coordination:lock:{queue:k}:q"


@pytest.fixture
def locks(redis_url, redis_client):
    config = {"BACKEND": "redis",
              "OPTIONS": {"URL": redis_url, "POLL_INTERVAL": 30}}
    with override_settings(COORDINATION={"APP_NAME": "queue", "LOCKS": config}):
        yield services.lock_manager


def _wait_for_queue_length(client, length):
    for _ in range(500):
        if client.llen(QUEUE) == length:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{length} waiters never registered: "
                         f"{client.lrange(QUEUE, 0, -1)}")


def _waiter(locks, name, order, errors, timeout=10):
    def run():
        try:
            with locks.acquire("k", ttl=30, timeout=timeout) as lock:
                order.append((name, lock.token))
        except Exception as exc:  # reported by the test
            errors.append((name, exc))
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_waiters_are_served_in_arrival_order(locks, redis_client):
    holder = locks.acquire("k", ttl=30)
    order, errors, threads = [], [], []
    for n, name in enumerate(["first", "second", "third"], start=1):
        threads.append(_waiter(locks, name, order, errors))
        _wait_for_queue_length(redis_client, n)
    holder.release()
    for thread in threads:
        thread.join(15)
    assert errors == []
    assert [name for name, _ in order] == ["first", "second", "third"]
    tokens = [holder.token] + [token for _, token in order]
    assert tokens == sorted(set(tokens))
    # Nothing is left behind for the key but its free lease, which keeps
    # the fencing number.
    assert redis_client.keys("coordination:lock:{queue:k}*") == [
        b"coordination:lock:{queue:k}:h"]
    assert redis_client.get("coordination:lock:{queue:k}:h").split(b"|")[1:5:3] == [
        b"0", b""]


def test_a_waiter_that_gave_up_leaves_the_queue(locks, redis_client):
    holder = locks.acquire("k", ttl=30)
    order, errors = [], []
    quitter = _waiter(locks, "quitter", order, errors, timeout=0.3)
    _wait_for_queue_length(redis_client, 1)
    patient = _waiter(locks, "patient", order, errors, timeout=5)
    _wait_for_queue_length(redis_client, 2)
    quitter.join(5)
    assert [name for name, _ in errors] == ["quitter"]
    # Its entry is gone; the patient waiter's is the one left.
    assert redis_client.llen(QUEUE) == 1
    holder.release()
    patient.join(10)
    assert [name for name, _ in order] == ["patient"]
    assert len(errors) == 1


def test_a_dead_waiter_is_passed_over(locks, redis_client):
    holder = locks.acquire("k", ttl=30)
    # Ahead of the live waiter: the entry of a waiter that died (its
    # registration deadline long gone) and one no entry parser knows (an
    # older version's plain token). The release must pass both over, not
    # hand the lease to either.
    redis_client.rpush(QUEUE, "dead0|1|30000|{}", "plaintoken")
    order, errors = [], []
    patient = _waiter(locks, "patient", order, errors, timeout=5)
    _wait_for_queue_length(redis_client, 3)
    holder.release()
    patient.join(10)
    assert errors == []
    assert [name for name, _ in order] == ["patient"]
    assert redis_client.llen(QUEUE) == 0


def test_commands_go_out_without_hiredis(locks, monkeypatch):
    # hiredis is optional: without it the backend packs through redis-py.
    from coordination.locks.backends import redis as backend_module

    monkeypatch.setattr(backend_module, "_pack_command", None)
    first = locks.acquire("k", ttl=5)
    waiter_got = []
    thread = threading.Thread(target=lambda: waiter_got.append(
        locks.acquire("k", ttl=5, timeout=5)))
    thread.start()
    threading.Event().wait(0.2)
    assert first.release() is True
    thread.join(10)
    (second,) = waiter_got
    assert second.token > first.token
    assert second.release() is True


@contextlib.contextmanager
def _held_on_private_redis(redis_server, poll):
    """(locks, holder, client): ``k`` held on a private Redis, and this
    process known to have found it busy, as after a first busy attempt."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    config = {"BACKEND": "redis",
              "OPTIONS": {"URL": redis_server.url, "POLL_INTERVAL": poll}}
    try:
        with override_settings(COORDINATION={"APP_NAME": "queue",
                                             "LOCKS": config}):
            locks = services.lock_manager
            holder = locks.acquire("k", ttl=5)
            locks.backend._busy["k"] = True
            yield locks, holder, client
    finally:
        services.reset()
        client.close()


def _refuse_client(client):
    # As an ACL or a proxy might: every command but CLIENT.
    client.execute_command("ACL", "SETUSER", "default", "on", "nopass", "~*",
                           "&*", "+@all", "-client")


def _wait_in_a_thread(locks, **options):
    got = []
    thread = threading.Thread(target=lambda: got.append(
        locks.acquire("k", ttl=5, **options)))
    thread.start()
    return thread, got


def test_a_server_refusing_client_reply_still_wakes_waiters(redis_server):
    _refuse_client(redis.Redis.from_url(redis_server.url))
    with _held_on_private_redis(redis_server, poll=30) as (locks, holder, client):
        thread, got = _wait_in_a_thread(locks, timeout=10)
        _wait_for_queue_length(client, 1)
        assert holder.release() is True
        thread.join(15)
        assert locks.backend._skips is False
        (lock,) = got
        assert lock.token > holder.token
        assert lock.release() is True


def test_a_waiter_recovers_when_redis_forgot_the_scripts(redis_server):
    with _held_on_private_redis(redis_server, poll=0.2) as (locks, holder, client):
        # The waiter's registration then fails without a reply to read
        # (CLIENT REPLY SKIP); it must notice at the end of its BLPOP.
        client.script_flush()
        thread, got = _wait_in_a_thread(locks, timeout=10)
        _wait_for_queue_length(client, 1)
        assert locks.backend._skips is True
        assert holder.release() is True
        thread.join(15)
        (lock,) = got
        assert lock.token > holder.token
        assert lock.release() is True


def test_client_reply_refused_after_it_was_asked(redis_server):
    with _held_on_private_redis(redis_server, poll=30) as (locks, holder, client):
        assert locks.backend._skip_replies() is True
        # Then an operator takes CLIENT away: the quiet registration's
        # first reply is an error and two replies are left unread.
        _refuse_client(client)
        seen = []

        def wait_then_use_the_same_connection():
            lock = locks.acquire("k", ttl=5, timeout=10)
            # Nothing stale left on this thread's connection: each answer
            # below is the one to its own command.
            again = None
            if lock.release():
                again = locks.try_acquire("k", ttl=5)
            seen.extend([lock.token, again and again.token,
                         again is not None and again.release()])

        thread = threading.Thread(target=wait_then_use_the_same_connection)
        thread.start()
        _wait_for_queue_length(client, 1)
        assert holder.release() is True
        thread.join(15)
        first, second, released = seen
        assert holder.token < first < second
        assert released is True
        # It forgot the old answer, and asking again gives the new one.
        assert locks.backend._skips is None
        assert locks.backend._skip_replies() is False


def _unreachable_warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("coordination.locks") and r.levelno >= 30]


def _wait_past(locks, holder, hold_for):
    """A waiter blocks while ``holder`` keeps the lock for ``hold_for`` s."""
    got = []
    thread = threading.Thread(target=lambda: got.append(
        locks.acquire("k", ttl=60, timeout=hold_for + 10)))
    thread.start()
    threading.Event().wait(hold_for)
    assert holder.release() is True
    thread.join(hold_for + 15)
    (lock,) = got
    assert lock.token > holder.token
    assert lock.release() is True


def test_a_waiter_blocks_longer_than_redis_py_read_timeout(redis_url, caplog):
    # redis-py 8 reads with a 5 s timeout unless told otherwise; a BLPOP of
    # POLL_INTERVAL = 6 s must not be cut off and reported as Redis being
    # unreachable.
    config = {"BACKEND": "redis", "OPTIONS": {"URL": redis_url, "POLL_INTERVAL": 6}}
    with override_settings(COORDINATION={"APP_NAME": "queue", "LOCKS": config}):
        locks = services.lock_manager
        _wait_past(locks, locks.acquire("k", ttl=60), 5.5)
    assert _unreachable_warnings(caplog) == []


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_socket_timeout_in_the_url_bounds_the_blpop(redis_url, caplog, flavour):
    url = redis_url + ("&" if "?" in redis_url else "?") + "socket_timeout=1"
    config = {"BACKEND": "redis", "OPTIONS": {"URL": url, "POLL_INTERVAL": 30}}
    with override_settings(COORDINATION={"APP_NAME": "queue", "LOCKS": config}):
        locks = services.lock_manager
        holder = locks.acquire("k", ttl=60)
        if flavour == "sync":
            _wait_past(locks, holder, 2.5)
        else:
            async def main():
                waiter = asyncio.ensure_future(
                    locks.aacquire("k", ttl=60, timeout=15))
                await asyncio.sleep(2.5)
                assert holder.release() is True
                lock = await waiter
                assert lock.token > holder.token
                assert await lock.arelease() is True
            asyncio.run(main())
    assert _unreachable_warnings(caplog) == []


def test_a_holder_past_its_ttl_still_hands_the_key_on(locks, redis_client):
    # The lease runs out with a waiter queued; nobody took it over, so the
    # late release hands it to the waiter (POLL_INTERVAL is 30 s, so the
    # waiter could not find it free by itself in time) and says the lease
    # was no longer held.
    holder = locks.acquire("k", ttl=0.3)
    order, errors = [], []
    waiter = _waiter(locks, "waiter", order, errors, timeout=5)
    _wait_for_queue_length(redis_client, 1)
    threading.Event().wait(0.5)
    assert holder.release() is False
    waiter.join(10)
    assert errors == []
    assert [name for name, _ in order] == ["waiter"]
    assert order[0][1] > holder.token
