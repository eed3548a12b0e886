"""Functions run in child processes by tests/cluster/test_locks_cluster.py.

Each takes the LOCKS setting as a dict, so one test can drive every backend.
Files on disk are the shared resource: a read-modify-write counter, and an
"inside" marker created with O_EXCL that reveals two holders at once.
"""

import json
import os
import time
from pathlib import Path

from django.test import override_settings

from tests.support.processes import announce


def _manager(config):
    from coordination.services import services

    override = override_settings(COORDINATION={"APP_NAME": "cluster",
                                               "LOCKS": config})
    override.enable()
    return services.lock_manager


def _wait_for(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def increment(config, key, directory, count, ttl, with_tokens=False):
    """``count`` read-modify-write increments of a counter file under
    ``run_exclusive`` (or ``lock()``, to see the fencing tokens). Returns
    [value read, token] pairs and the overlaps seen."""
    locks = _manager(config)
    directory = Path(directory)
    counter, marker = directory / "counter", directory / "inside"
    _wait_for(directory / "go")
    seen, overlaps = [], 0

    def critical():
        nonlocal overlaps
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            overlaps += 1
            fd = None
        try:
            value = int(counter.read_text() or 0)
            counter.write_text(str(value + 1))
            return value
        finally:
            if fd is not None:
                os.close(fd)
                os.unlink(marker)

    for _ in range(count):
        if with_tokens:
            with locks.lock(key, ttl=ttl, timeout=120) as lock:
                seen.append([critical(), lock.token])
        else:
            seen.append([locks.run_exclusive(key, critical, ttl, timeout=120),
                         None])
    return {"seen": seen, "overlaps": overlaps}


def hold_forever(config, key, ready, ttl):
    """Take ``key`` (renewed) and sleep until killed."""
    locks = _manager(config)
    with locks.lock(key, ttl=ttl) as lock:
        announce(ready, json.dumps(lock.token))
        while True:
            time.sleep(1)


def outlive_lease(config, key, ready, proceed, ttl):
    """Take ``key`` without renewal, outlive the lease, then try to release
    and extend what a successor holds by now."""
    from coordination.exceptions import LockNotHeldError

    locks = _manager(config)
    lock = locks.acquire(key, ttl=ttl)
    announce(ready, json.dumps(lock.token))
    _wait_for(proceed)
    released = lock.release()
    try:
        lock.extend(30)
        extended = True
    except LockNotHeldError:
        extended = False
    return {"token": lock.token, "released": released, "extended": extended,
            "held": lock.held()}


def long_job(config, key, ready, ttl, seconds):
    """run_exclusive with a ttl much shorter than the work."""
    locks = _manager(config)

    def work():
        announce(ready, "in")
        time.sleep(seconds)
        # Still inside run_exclusive: the lock is released after this.
        announce(f"{ready}.done", "done")
        return "done"

    return locks.run_exclusive(key, work, ttl=ttl)


def hold_through_restart(config, key, ready, ttl):
    """Hold ``key`` (renewed) while Redis restarts; report when the lock was
    seen lost, as wall-clock times other processes can compare."""
    locks = _manager(config)
    with locks.lock(key, ttl=ttl) as lock:
        announce(ready, json.dumps(lock.token))
        start = time.time()
        while lock.held() and time.time() - start < 60:
            time.sleep(0.005)
        lost_at = time.time()
    return {"token": lock.token, "lost_at": lost_at, "held": lock.held()}


def wait_then_hold(config, key, ready, hold, ttl):
    """Wait for ``key``, then hold it for ``hold`` seconds; report when."""
    locks = _manager(config)
    announce(ready, "waiting")
    with locks.lock(key, ttl=ttl, timeout=120) as lock:
        got_at = time.time()
        time.sleep(hold)
        still = lock.held()
        # Before the release: a successor may get the lock right after it.
        left_at = time.time()
    return {"token": lock.token, "got_at": got_at, "left_at": left_at,
            "held": still}


def migrate(alias):
    """Create the tables on database ``alias`` (a private server)."""
    from django.core.management import call_command

    call_command("migrate", database=alias, verbosity=0)
    return "migrated"
