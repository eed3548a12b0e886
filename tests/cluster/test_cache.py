"""Several real processes share one cache on Redis."""

import time

import pytest

from tests.support.processes import result, spawn

PROCESSES = 4
THREADS = 13  # 4 x 13 = 52 concurrent callers


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("locks,mode", [
    ("redis", "sync"), ("database", "sync"), ("redis", "async"),
])
def test_processes_and_threads_on_a_cold_key_run_the_function_once(
    locks, mode, redis_url, redis_client, tmp_path
):
    # The store is Redis; the cross-process lock comes from the lock
    # manager, on Redis or on the test database.
    children = [
        spawn("tests.cluster.cache_nodes:wrap_cold_key", redis_url, str(tmp_path),
              THREADS, locks, mode)
        for _ in range(PROCESSES)
    ]
    deadline = time.monotonic() + 90
    while len(list(tmp_path.glob("ready-*"))) < PROCESSES:
        if time.monotonic() > deadline or any(c.poll() is not None for c in children):
            break
        time.sleep(0.05)
    (tmp_path / "go").touch()
    results = [result(child) for child in children]

    calls = (tmp_path / "calls").read_text().split()
    assert len(calls) == 1
    (value,) = {tuple(sorted(r.items())) for rs in results for r in rs}
    assert dict(value) == {"computed_by": int(calls[0])}
    assert sum(len(rs) for rs in results) == PROCESSES * THREADS
    stored = redis_client.get("tests:cluster:cold")
    assert stored == f'{{"computed_by":{calls[0]}}}'.encode()
