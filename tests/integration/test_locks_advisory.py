"""The database backend's advisory mode, on the suite's PostgreSQL.

The contract, admin and cluster suites run this mode too; these tests check
what is particular to it: the lease row, fencing numbers that continue the
row mode's, forked children, and ending a holder whose lease ran out.
"""

import os
import time

import pytest
from django.db import connection
from django.test import override_settings

from coordination.exceptions import LockAcquireError
from coordination.locks import LockManager
from coordination.locks.backends.advisory import AdvisoryBackend
from coordination.models import LockRecord
from coordination.services import services

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only; .ci/run also runs the suite on PostgreSQL")


def manager(**options):
    config = {"BACKEND": "database", "OPTIONS": {"MODE": "advisory", **options}}
    with override_settings(COORDINATION={"APP_NAME": "advisory", "LOCKS": config}):
        locks = LockManager(services)
        assert isinstance(locks.backend, AdvisoryBackend)
    return locks


def row(key):
    return LockRecord.objects.filter(namespace="advisory", key=key).first()


def test_short_locks_write_no_row_long_ones_do():
    locks = manager(WRITE_AFTER=0.2)
    with locks.acquire("short", ttl=30):
        pass
    assert row("short") is None

    lock = locks.acquire("long", ttl=30)
    time.sleep(0.6)
    record = row("long")
    assert record is not None and record.fencing == lock.token
    assert record.owner["pid"] == os.getpid()
    assert record.owner["session"] != connection.connection.info.backend_pid
    assert lock.release() is True
    assert row("long").owner_token == ""
    locks.stop()


def test_tokens_continue_above_the_row_modes():
    LockRecord.objects.create(namespace="advisory", key="switched",
                              fencing=2**62)
    locks = manager()
    with locks.acquire("switched", ttl=5) as lock:
        assert lock.token == 2**62 + 1
    locks.stop()


def test_an_unrenewed_lease_ends_in_its_own_process():
    locks = manager()
    lock = locks.acquire("lapse", ttl=0.3)
    time.sleep(0.8)
    # The backend's lock thread freed it: another manager gets it at once.
    other = manager()
    again = other.try_acquire("lapse", ttl=5)
    assert again.token > lock.token
    assert lock.release() is False
    again.release()
    locks.stop()
    other.stop()


def test_a_holder_whose_lease_ran_out_is_ended_by_the_next_taker(caplog):
    holder = manager()
    lock = holder.acquire("frozen", ttl=0.3)
    time.sleep(0.2)
    holder.held_locks()  # its lease row is written now
    # Stand-in for a stopped process: its lock thread does nothing more.
    holder.backend._thread_pid = -1
    with holder.backend._cond:
        holder.backend._cond.notify_all()
    time.sleep(0.5)
    taker = manager()
    got = taker.acquire("frozen", ttl=5, timeout=5)
    assert got.token > lock.token
    assert any(r.action == "lock_expired_holder" and "frozen" in r.getMessage()
               for r in caplog.records)
    assert lock.release() is False  # its session was ended
    got.release()
    taker.stop()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_a_forked_child_leaves_the_parents_sessions_alone():
    locks = manager()
    lock = locks.acquire("forked", ttl=30)
    pid = os.fork()
    if pid == 0:
        # The child sees no hold of its own and closes nothing it inherited.
        code = 0 if locks.backend.release("forked", lock._owner_token) is False else 1
        locks.backend.close()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with pytest.raises(LockAcquireError):
        manager().try_acquire("forked")
    assert lock.release() is True
    locks.stop()


def test_a_waiter_ends_a_holder_that_stops_after_it_started_waiting(caplog):
    holder = manager(WAIT_SLICE=0.2)
    lock = holder.acquire("later", ttl=0.6)
    holder.held_locks()  # its lease row is written now
    holder.backend._thread_pid = -1  # stopped: nothing ends it locally
    with holder.backend._cond:
        holder.backend._cond.notify_all()
    taker = manager(WAIT_SLICE=0.2)
    started = time.monotonic()
    # Busy when the wait starts; the lease runs out while it waits.
    got = taker.acquire("later", ttl=5, timeout=5)
    assert 0.3 < time.monotonic() - started < 3
    assert got.token > lock.token
    assert any(r.action == "lock_expired_holder" for r in caplog.records)
    got.release()
    taker.stop()
