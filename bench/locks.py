"""Lock benchmark: our LockManager against the raw tools, in one run.

    .venv/bin/python bench/locks.py [--quick]

Environment: REDIS_URL (default redis://127.0.0.1:6379/15; the bench only
touches keys under "bench"), DATABASE_URL for PostgreSQL (default
postgres://postgres@127.0.0.1:5432/coordination_bench, created if missing).
SQLite runs on a temporary file.

Prints three tables:

1. uncontended acquire+release, one process (median and mean per pair);
2. contended: 4 processes x 200 read-modify-write increments of a counter in
   shared memory under one key, repeated five times in a shuffled order:
   throughput, the median and p99 wait for the lock, the CPU the processes
   spent per increment, and our throughput over the best raw tool's as the
   median of the repetitions; with, for reference, the floor of any
   hand-over through a Redis list (a bare baton, not a usable lock);
3. how the wait grows with 1, 4 and 16 contenders.
Every contended run checks the final counter (no lost update).
"""

import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import django  # noqa: E402
import environ  # noqa: E402
from django.conf import settings  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
PG_URL = os.environ.get(
    "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/coordination_bench")
TMP = Path(tempfile.mkdtemp(prefix="locks-bench-"))
QUICK = "--quick" in sys.argv


def _ensure_pg_database(url):
    import psycopg

    config = environ.Env.db_url_config(url)
    try:
        psycopg.connect(_pg_dsn(url), connect_timeout=5).close()
    except psycopg.OperationalError:
        admin = url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(_pg_dsn(admin), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{config["NAME"]}"')


def _pg_dsn(url):
    return url.replace("postgres://", "postgresql://", 1)


_ensure_pg_database(PG_URL)
settings.configure(
    DATABASES={
        "default": environ.Env.db_url_config(PG_URL),
        "sqlite": {"ENGINE": "django.db.backends.sqlite3",
                   "NAME": str(TMP / "bench.sqlite3"),
                   "OPTIONS": {"timeout": 30}},
    },
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                    "coordination"],
    USE_TZ=True,
    COORDINATION={"APP_NAME": "bench", "LOCKS": {"BACKEND": "local"}},
    LOGGING_CONFIG=None,
)
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402
from django.test import override_settings  # noqa: E402

from coordination.locks import LockManager  # noqa: E402
from coordination.services import services  # noqa: E402

CONFIGS = {
    "redis": {"BACKEND": "redis", "OPTIONS": {"URL": REDIS_URL}},
    "database-pg": {"BACKEND": "database"},
    "database-pg-async": {"BACKEND": "database",
                          "OPTIONS": {"SYNCHRONOUS_COMMIT": False}},
    "database-pg-advisory": {"BACKEND": "database",
                             "OPTIONS": {"MODE": "advisory"}},
    "database-sqlite": {"BACKEND": "database",
                        "OPTIONS": {"DATABASE": "sqlite"}},
}


def manager(name):
    """A fresh LockManager on the named backend configuration."""
    with override_settings(COORDINATION={"APP_NAME": "bench",
                                         "LOCKS": CONFIGS[name]}):
        locks = LockManager(services)
        locks.backend  # built now, from this configuration
    return locks


# -- raw tools -----------------------------------------------------------------

def redis_client():
    import redis

    return redis.Redis.from_url(REDIS_URL)


class RedisPyLock:
    def __init__(self, sleep):
        self.client, self.sleep = redis_client(), sleep

    def __call__(self, key):
        return self.client.lock(f"bench:{key}", timeout=30, sleep=self.sleep)


class PythonRedisLock:
    def __init__(self):
        import redis_lock

        self.module, self.client = redis_lock, redis_client()

    def __call__(self, key):
        return self.module.Lock(self.client, f"bench:rl:{key}", expire=30)


class BareBaton:
    """Not a usable lock: the floor of any hand-over through a Redis list.

    One element (the baton) in a list; BLPOP takes it, LPUSH gives it back,
    and Redis wakes the first client blocked on the list. No lease, no
    fencing, no recovery from a holder that dies: one blocking command to
    acquire and one to release, sent on a bare redis-py connection (no
    command path, as our backend does).
    """

    def __init__(self):
        import redis

        pool = redis.ConnectionPool.from_url(REDIS_URL)
        self.conn = pool.connection_class(**pool.connection_kwargs)
        self.made = set()

    def call(self, *command):
        self.conn.send_command(*command)
        return self.conn.read_response()

    def __call__(self, key):
        key = f"bench:baton:{key}"
        if key not in self.made:
            # The first process to get here puts the one baton in the list.
            if self.call("SET", f"{key}:made", 1, "NX"):
                self.call("LPUSH", key, 1)
            self.made.add(key)
        return _Baton(self, key)


class _Baton:
    def __init__(self, tool, key):
        self.tool, self.key = tool, key

    def __enter__(self):
        self.tool.call("BLPOP", self.key, 30)

    def __exit__(self, *exc):
        self.tool.call("LPUSH", self.key, 1)


class AdvisoryLock:
    def __init__(self):
        import psycopg

        self.conn = psycopg.connect(_pg_dsn(PG_URL), autocommit=True)

    def __call__(self, key):
        return _Advisory(self.conn, hash(key) & 0x7FFFFFFF)


class _Advisory:
    def __init__(self, conn, number):
        self.conn, self.number = conn, number

    def __enter__(self):
        self.conn.execute("SELECT pg_advisory_lock(%s)", (self.number,))

    def __exit__(self, *exc):
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.number,))


class RowPair:
    """INSERT then DELETE of a row, each a durable autocommit transaction."""

    def __init__(self):
        import psycopg

        self.conn = psycopg.connect(_pg_dsn(PG_URL), autocommit=True)
        self.conn.execute("CREATE TABLE IF NOT EXISTS bench_row_lock "
                          "(key text PRIMARY KEY)")

    def __call__(self, key):
        return _Row(self.conn, key)


class _Row:
    def __init__(self, conn, key):
        self.conn, self.key = conn, key

    def __enter__(self):
        self.conn.execute("INSERT INTO bench_row_lock VALUES (%s)", (self.key,))

    def __exit__(self, *exc):
        self.conn.execute("DELETE FROM bench_row_lock WHERE key = %s",
                          (self.key,))


class Ours:
    def __init__(self, name, exclusive=False):
        self.locks, self.exclusive = manager(name), exclusive

    def __call__(self, key):
        if self.exclusive:
            return self.locks.lock(key, ttl=30)
        return self.locks.acquire(key, ttl=30)


TOOLS = {
    "redis-py Lock": lambda: RedisPyLock(0.1),
    "redis-py Lock sleep=1ms": lambda: RedisPyLock(0.001),
    "python-redis-lock": PythonRedisLock,
    "floor: bare BLPOP/LPUSH baton": BareBaton,
    "ours redis": lambda: Ours("redis"),
    "ours redis lock() (renewed)": lambda: Ours("redis", True),
    "pg_advisory_lock": AdvisoryLock,
    "INSERT+DELETE durable (pg)": RowPair,
    "ours database pg": lambda: Ours("database-pg"),
    "ours database pg lock() (renewed)": lambda: Ours("database-pg", True),
    "ours database pg no fsync": lambda: Ours("database-pg-async"),
    "ours database pg advisory": lambda: Ours("database-pg-advisory"),
    "ours database pg advisory lock()": lambda: Ours("database-pg-advisory", True),
    "ours database sqlite": lambda: Ours("database-sqlite"),
}


# -- uncontended -----------------------------------------------------------

def uncontended(names, seconds):
    """Samples per tool, taken in interleaved batches so that the noise of a
    shared machine hits every tool alike."""
    tools = {name: TOOLS[name]() for name in names}
    # A key per tool: the row-mode tools share one table, and the dead row
    # versions one tool leaves behind would slow every other reader of it.
    keys = {name: f"uncontended-{n}" for n, name in enumerate(names)}
    samples = {name: [] for name in names}
    for name, tool in tools.items():
        for _ in range(20):  # warm up connections, scripts, prepared plans
            with tool(keys[name]):
                pass
    # Each round in a new order: on this VM a tool's position in the round
    # changed its figure by up to 1.9x (the same raw advisory pair on two
    # connections), so a fixed order favours whoever sits in a good spot.
    order = list(tools)
    shuffle = random.Random(0).shuffle
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        shuffle(order)
        for name in order:
            tool, key = tools[name], keys[name]
            for _ in range(20):
                start = time.perf_counter()
                with tool(key):
                    pass
                samples[name].append(time.perf_counter() - start)
    return samples


# -- contended ---------------------------------------------------------------

def _worker(name, key, count, counter, ready, go, out, deadline_s):
    if name.startswith("ours"):
        # Fresh connections in the child.
        connections.close_all()
    tool = TOOLS[name]()
    with tool(f"{key}-warm"):
        pass
    ready.put(os.getpid())
    go.wait()
    waits, done = [], 0
    deadline = time.monotonic() + deadline_s
    cpu = time.process_time()

    while done < count and time.monotonic() < deadline:
        start = time.perf_counter()
        with tool(key):
            waits.append(time.perf_counter() - start)
            value = counter.value
            time.sleep(0)  # let another process run mid-update, if it can
            counter.value = value + 1
        done += 1
    out.put((done, waits, time.monotonic(), time.process_time() - cpu))


def contended(name, processes, count, deadline_s=15.0):
    ctx = multiprocessing.get_context("fork")
    # Shared memory without a lock of its own: only the lock under test
    # keeps the read-modify-write whole.
    counter = ctx.RawValue("q", 0)
    key = f"contended-{time.monotonic_ns()}"
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    connections.close_all()
    children = [ctx.Process(target=_worker, args=(
        name, key, count, counter, ready, go, out, deadline_s))
        for _ in range(processes)]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=60)
    started = time.monotonic()
    go.set()
    results = [out.get(timeout=deadline_s + 60) for _ in children]
    for child in children:
        child.join(30)
    done = sum(r[0] for r in results)
    elapsed = max(r[2] for r in results) - started
    return summary({
        "done": done, "expected": processes * count, "elapsed": elapsed,
        "counter_ok": counter.value == done,
        "waits": [w for r in results for w in r[1]],
        "cpu": sum(r[3] for r in results),
    })


def summary(row):
    waits = sorted(row["waits"])
    row["throughput"] = row["done"] / row["elapsed"]
    row["cpu_per"] = row["cpu"] / max(row["done"], 1)
    row["median"] = statistics.median(waits) if waits else float("nan")
    row["p99"] = waits[int(len(waits) * 0.99) - 1] if waits else float("nan")
    return row


def merge(runs):
    return summary({
        "done": sum(r["done"] for r in runs),
        "expected": sum(r["expected"] for r in runs),
        "elapsed": sum(r["elapsed"] for r in runs),
        "counter_ok": all(r["counter_ok"] for r in runs),
        "waits": [w for r in runs for w in r["waits"]],
        "cpu": sum(r["cpu"] for r in runs),
    })


# -- report ------------------------------------------------------------------

def ms(value):
    return f"{value * 1000:8.3f}"


def main():
    call_command("migrate", "coordination", verbosity=0)
    call_command("migrate", "coordination", database="sqlite", verbosity=0)
    client = redis_client()
    for name in client.scan_iter(match="bench:*", count=500):
        client.delete(name)
    seconds = 0.5 if QUICK else 1.5
    print(f"machine: {os.cpu_count()} cores, shared; python {sys.version.split()[0]}")
    print(f"redis {REDIS_URL}  postgresql {PG_URL}\n")

    print("1. uncontended acquire+release, one process")
    print(f"{'lock':40} {'pairs':>7} {'median ms':>10} {'mean ms':>9}")
    names = [n for n in TOOLS if n not in (
        "redis-py Lock sleep=1ms", "floor: bare BLPOP/LPUSH baton")]
    medians = {}
    for name, samples in uncontended(names, seconds * len(names)).items():
        medians[name] = statistics.median(samples)
        print(f"{name:40} {len(samples):7d} {ms(medians[name]):>10} "
              f"{ms(statistics.fmean(samples)):>9}")
    for ours, raw in (("ours redis", "redis-py Lock"),
                      ("ours database pg", "pg_advisory_lock"),
                      ("ours database pg no fsync", "pg_advisory_lock"),
                      ("ours database pg advisory", "pg_advisory_lock"),
                      ("INSERT+DELETE durable (pg)", "pg_advisory_lock")):
        print(f"   {ours} / {raw}: {medians[ours] / medians[raw]:.2f}x")
    print()

    count = 50 if QUICK else 200
    print(f"2. contended: 4 processes x {count} increments on one key")
    print(f"{'lock':40} {'done':>9} {'ok':>3} {'incr/s':>8} {'median ms':>10} "
          f"{'p99 ms':>9} {'p99/med':>7} {'cpu ms/incr':>11}")
    names = ["redis-py Lock", "redis-py Lock sleep=1ms", "python-redis-lock",
             "pg_advisory_lock", "floor: bare BLPOP/LPUSH baton", "ours redis",
             "ours redis lock() (renewed)",
             "ours database pg", "ours database pg advisory",
             "ours database sqlite"]
    # Every tool runs the whole 4 x count once per repetition, the tools in
    # a new order each time. One repetition takes a fraction of a second per
    # tool, and on this shared VM a single one moved a ratio by up to 1.4x;
    # the ratios below are medians over the repetitions.
    repeats = 1 if QUICK else 5
    runs = {name: [] for name in names}
    order = list(names)
    for _ in range(repeats):
        random.Random(len(runs[names[0]])).shuffle(order)
        for name in order:
            runs[name].append(contended(name, 4, count))
    rows = {}
    for name in names:
        row = rows[name] = merge(runs[name])
        print(f"{name:40} {row['done']:4d}/{row['expected']:<4d} "
              f"{'yes' if row['counter_ok'] else 'NO':>3} "
              f"{row['throughput']:8.0f} {ms(row['median']):>10} "
              f"{ms(row['p99']):>9} {row['p99'] / row['median']:7.1f} "
              f"{ms(row['cpu_per']):>11}")
    raw = ["redis-py Lock", "redis-py Lock sleep=1ms", "python-redis-lock",
           "pg_advisory_lock"]
    best = max(raw, key=lambda n: rows[n]["throughput"])

    def against_best(name):
        ratios = sorted(
            mine["done"] / mine["elapsed"] / (theirs["done"] / theirs["elapsed"])
            for mine, theirs in zip(runs[name], runs[best]))
        return (f"{statistics.median(ratios):.2f}x (each repetition "
                f"{', '.join(f'{r:.2f}' for r in ratios)})")

    print(f"   {repeats} repetition{'s' if repeats > 1 else ''}, the rows above "
          f"their totals; best raw: {best}")
    for name in ("ours redis", "ours redis lock() (renewed)",
                 "floor: bare BLPOP/LPUSH baton"):
        print(f"   {name} / best raw: {against_best(name)}")
    print()

    print("3. wait for the lock by number of contenders (run_exclusive-style "
          "lock(), renewed)")
    print(f"{'backend':22} {'contenders':>10} {'incr/s':>8} {'median ms':>10} "
          f"{'p99 ms':>9}")
    for name in ["ours redis lock() (renewed)", "ours database pg",
                 "ours database pg advisory lock()"]:
        for processes in (1, 4, 16):
            per = max(20, (200 if not QUICK else 50) * 4 // processes // 2)
            row = contended(name, processes, per)
            label = (name.replace("ours ", "").replace(" lock() (renewed)", "")
                     .replace(" lock()", ""))
            print(f"{label:22} {processes:10d} {row['throughput']:8.0f} "
                  f"{ms(row['median']):>10} {ms(row['p99']):>9}"
                  + ("" if row["counter_ok"] else "  LOST UPDATE"))


if __name__ == "__main__":
    main()
