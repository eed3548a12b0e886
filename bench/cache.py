"""Cache benchmark: our API against the libraries underneath, in one run.

    REDIS_URL=redis://127.0.0.1:6379/2 .venv/bin/python bench/cache.py

Compares, on the same Redis and the same small JSON value:

- ``Cache.get``/``Cache.set`` with the plain Django cache API on the same
  django-redis alias (JSON serializer) and with raw redis-py GET/SET;
- a ``wrap`` hit with a raw Django ``get``;
- ``Cache.mget`` of 100 keys with django-redis ``get_many`` and raw MGET.

Each time is the median of several rounds (microseconds per call); each
ratio is the median of the ratios within a round, whose candidates ran in
alternating slices, so load from elsewhere on the machine weighs on both.
"""

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "15"))
CALLS = int(os.environ.get("BENCH_CALLS", "2000"))

settings.configure(
    INSTALLED_APPS=["coordination"],
    DATABASES={},
    CACHES={
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "redis": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "SERIALIZER": "coordination.cache.serializers.JSONSerializer"
            },
        },
    },
    COORDINATION={
        "APP_NAME": "bench",
        "CACHE_STORES": {"memory": "default", "redis": "redis"},
        "DEFAULT_CACHE_STORE": "redis",
        "LOCKS": {"BACKEND": "local"},
    },
)
django.setup()

from django.core.cache import caches  # noqa: E402

from coordination.services import services  # noqa: E402

VALUE = {"id": 42, "title": "A note", "tags": ["a", "b"], "done": False}


def compare(*fns, calls=CALLS):
    """Per-call times (microseconds) of each fn, one list per fn, a round each.

    The rounds interleave the candidates, so a burst of load from other
    processes hits them alike; each round is split in slices that alternate
    too, so that one candidate does not get all of a quiet spell.
    """
    slices = 10
    per_slice = max(1, calls // slices)
    timings = [[] for _ in fns]
    for _ in range(ROUNDS):
        spent = [0.0] * len(fns)
        for _ in range(slices):
            for i, fn in enumerate(fns):
                start = time.perf_counter()
                for _ in range(per_slice):
                    fn()
                spent[i] += time.perf_counter() - start
        for times, total in zip(timings, spent):
            times.append(total / (per_slice * slices) * 1e6)
    return timings


def summary(timings):
    """Median time of each candidate, and the median of the per-round ratios
    of the first to each other (ratios of neighbours in time, which a shared
    machine disturbs least)."""
    ours = timings[0]
    medians = [statistics.median(t) for t in timings]
    ratios = [statistics.median(a / b for a, b in zip(ours, other))
              for other in timings[1:]]
    return medians, ratios


def main():
    cache = services.get("cache_manager").create_cache("bench")
    django_cache = caches["redis"]
    raw = django_cache.client.get_client(write=True)
    raw.ping()

    cache.set("k", VALUE)
    django_cache.set("k", VALUE)
    keys = [f"m{i}" for i in range(100)]
    cache.mset({k: VALUE for k in keys})
    django_cache.set_many({k: VALUE for k in keys})
    raw_keys = [f"bench:bench:{k}" for k in keys]
    cache.wrap("w", lambda: VALUE)

    rows = []

    def row(name, timings, target):
        rows.append((name, *summary(timings), target))

    row("get", compare(
        lambda: cache.get("k"),
        lambda: django_cache.get("k"),
        lambda: raw.get("bench:bench:k"),
    ), "<= 1.15x Django")
    row("set", compare(
        lambda: cache.set("k", VALUE),
        lambda: django_cache.set("k", VALUE),
        lambda: raw.set("bench:bench:k", b'{"id":42}', px=300000),
    ), "<= 1.15x Django")
    row("wrap hit (vs get)", compare(
        lambda: cache.wrap("w", lambda: VALUE),
        lambda: django_cache.get("k"),
        lambda: raw.get("bench:bench:w"),
    ), "<= 1.2x Django get")
    row("mget 100 keys", compare(
        lambda: cache.mget(keys),
        lambda: django_cache.get_many(keys),
        lambda: raw.mget(raw_keys),
        calls=max(100, CALLS // 10),
    ), "<= Django get_many, aim 2x raw")

    cache.reset()
    django_cache.delete_many(["k", *keys])

    print(f"Redis {REDIS_URL}, median of {ROUNDS} rounds, microseconds per "
          "call; ratios are medians of per-round ratios\n")
    header = ("operation", "Cache", "Django API", "raw redis-py", "Cache/Django",
              "Cache/raw", "target")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, (ours, django_api, raw_call), (to_django, to_raw), target in rows:
        print(
            f"| {name} | {ours:.1f} | {django_api:.1f} | {raw_call:.1f} | "
            f"{to_django:.2f}x | {to_raw:.2f}x | {target} |"
        )


if __name__ == "__main__":
    main()
