"""Functions run in child processes by tests/cluster/test_cache.py."""

import asyncio
import os
import threading
import time
from pathlib import Path

from django.test import override_settings

from tests.support.cache import cache_settings


def wrap_cold_key(redis_url, workdir, threads, locks, mode="sync"):
    """Call ``wrap`` on one cold key from ``threads`` threads at once.

    With ``mode="async"`` the callers are asyncio tasks calling ``awrap``
    with an async function, on one event loop.

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

        def count_call():
            with open(workdir / "calls", "a") as calls:
                calls.write(f"{os.getpid()}\n")

        def compute():
            count_call()
            time.sleep(0.5)  # long enough for every caller to arrive
            return {"computed_by": os.getpid()}

        start = threading.Barrier(threads)
        results = []

        def worker():
            start.wait()
            results.append(cache.wrap("cold", compute))

        async def acompute():
            count_call()
            await asyncio.sleep(0.5)
            return {"computed_by": os.getpid()}

        async def callers():
            return await asyncio.gather(
                *[cache.awrap("cold", acompute) for _ in range(threads)]
            )

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        (workdir / f"ready-{os.getpid()}").touch()
        while not (workdir / "go").exists():
            time.sleep(0.01)
        if mode == "async":
            results = asyncio.run(callers())
        else:
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join(60)
        services.reset()
    return results
