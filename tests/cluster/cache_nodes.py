"""Functions run in child processes by tests/cluster/test_cache.py."""

import os
import threading
import time
from pathlib import Path

from django.test import override_settings

from tests.support.cache import cache_settings


def wrap_cold_key(redis_url, workdir, threads, locks):
    """Call ``wrap`` on one cold key from ``threads`` threads at once.

    Every call of the function appends a line to ``workdir/calls``. The
    process says it is ready, then waits for the test's "go" file, so all
    processes call ``wrap`` together.
    """
    from coordination.services import services

    workdir = Path(workdir)
    if locks == "redis":
        locks = {"BACKEND": "redis", "OPTIONS": {"URL": redis_url}}
    else:
        locks = {"BACKEND": locks}
    settings = cache_settings(redis_url, default_store="redis", locks=locks)
    with override_settings(**settings):
        cache = services.get("cache_manager").create_cache("cluster")

        def compute():
            with open(workdir / "calls", "a") as calls:
                calls.write(f"{os.getpid()}\n")
            time.sleep(0.5)  # long enough for every caller to arrive
            return {"computed_by": os.getpid()}

        start = threading.Barrier(threads)
        results = []

        def worker():
            start.wait()
            results.append(cache.wrap("cold", compute))

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        (workdir / f"ready-{os.getpid()}").touch()
        while not (workdir / "go").exists():
            time.sleep(0.01)
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(60)
        services.reset()
    return results
