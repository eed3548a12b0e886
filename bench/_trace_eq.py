"""Event queue benchmark: our API against the raw library underneath.

    .venv/bin/python bench/event_queue.py [--quick]

Measures, in one run on the same broker and database:

1. publish throughput: ``event_queue.publish`` (Celery backend: the row
   plus the message, 100 per transaction) against raw Celery
   ``apply_async``, on RabbitMQ;
2. latency from publish to the start of the handler, against a raw Celery
   task, with a real Celery worker (threads pool) set up as in a Django
   project (Celery's Django fixup installed); beside it, the floor: a bare
   durable row and claim in the same worker, which is not our code;
3. the ``database`` backend on SQLite, no-op events end to end, against
   huey's ``SqliteHuey``, with 1, 2 and 4 worker processes.

Environment: CELERY_BROKER_URL (default RabbitMQ on localhost), REDIS_URL
(latency samples; default redis://127.0.0.1:6379/4), DATABASE_URL (default
a SQLite file in a temporary directory).
"""

import sys
from pathlib import Path

# This file is named queue.py: keep its folder off the path, or it would
# shadow the standard library's queue module.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BROKER = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/4")
QUEUE = "npq-bench"
LATENCY_KEY = "npq-bench-latency"
QUICK = "--quick" in sys.argv


def setup_django():
    import django
    import environ
    from django.conf import settings

    env = environ.Env()
    database = env.db_url_config(os.environ["BENCH_DATABASE_URL"])
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("OPTIONS", {})["timeout"] = 30
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                        "coordination"],
        DATABASES={"default": database},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        COORDINATION={"APP_NAME": "bench",
                      "EVENT_QUEUE": json.loads(os.environ["BENCH_QUEUE"])},
        LOGGING_CONFIG=None,
    )
    django.setup()


def celery_app():
    from celery import Celery

    app = Celery("npq-bench", broker=BROKER, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    worker_prefetch_multiplier=1, task_acks_late=True,
                    worker_hijack_root_logger=False)
    app.conf.imports = ["coordination.queue.tasks"]

    @app.task(name="bench.raw", ignore_result=True)
    def raw(sent=None):
        if sent is not None:
            record_latency(sent)

    @app.task(name="bench.floor", ignore_result=True)
    def floor(row_id, sent):
        if floor_claim(row_id):
            record_latency(sent)

    return app, raw


# The floor of any design with the queue's guarantees: a durable row
# written before the message is sent, and a conditional update that claims
# it before the handler runs. Bare SQL on a two-column table, on a
# connection each worker thread keeps, the claim without a durable commit.
FLOOR_TABLE = "npq_bench_floor"
_floor = threading.local()


def create_floor_table():
    from django.db import connection

    key = ("id bigserial PRIMARY KEY" if connection.vendor == "postgresql"
           else "id integer PRIMARY KEY AUTOINCREMENT")
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
        cursor.execute(f"CREATE TABLE {FLOOR_TABLE} ({key}, claimed int NOT NULL)")


def floor_publish(task, sent):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {FLOOR_TABLE} (claimed) VALUES (0) RETURNING id")
        row_id = cursor.fetchone()[0]
    task.apply_async((row_id, sent), queue=QUEUE)


def floor_claim(row_id):
    conn = getattr(_floor, "conn", None)
    if conn is None:
        import environ

        db = environ.Env().db_url_config(os.environ["BENCH_DATABASE_URL"])
        if db["ENGINE"].endswith("postgresql"):
            import psycopg

            conn = psycopg.connect(
                host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432,
                user=db["USER"] or "postgres", dbname=db["NAME"],
                autocommit=True)
            conn.execute("SET synchronous_commit = off")
            _floor.mark = "%s"
        else:
            import sqlite3

            conn = sqlite3.connect(db["NAME"], isolation_level=None, timeout=30)
            conn.execute("PRAGMA synchronous = NORMAL")
            _floor.mark = "?"
        _floor.conn = conn
    sql = (f"UPDATE {FLOOR_TABLE} SET claimed = 1 WHERE id = {_floor.mark} "
           "AND claimed = 0 RETURNING id")
    return conn.execute(sql, (row_id,)).fetchone() is not None


_tl = threading.local()
def _prerun(**kw):
    _tl.start = time.time()
def record_latency(sent):
    import redis
    now = time.time()
    redis.Redis.from_url(REDIS).rpush(LATENCY_KEY, f"{now - sent} {getattr(_tl,'start',now) - sent}")


def handler(payload, context):
    if payload and "sent" in payload:
        record_latency(payload["sent"])


def subscribe(process=True):
    from coordination.services import services

    services.event_queue.subscribe(
        "bench", process=handler, concurrency=None,
        idle=None if process else (lambda: False),
    )
    return services.event_queue


# Roles run in child processes -------------------------------------------


def role_celery_worker():
    setup_django()
    # What Celery installs by itself in a Django project's worker (it finds
    # DJANGO_SETTINGS_MODULE; this bench configures settings in code): among
    # other things, every database connection of the thread is closed
    # before and after each task.
    from celery.fixups.django import DjangoFixup

    DjangoFixup(APP).install()
    from celery.signals import task_prerun
    task_prerun.connect(_prerun, weak=False)
    subscribe()
    APP.worker_main(["worker", "-Q", QUEUE, "-P", "threads", "-c", "4",
                     "-l", "error", "--without-gossip", "--without-mingle",
                     "--without-heartbeat"])


def role_db_worker(go_file):
    setup_django()
    while not os.path.exists(go_file):
        time.sleep(0.005)
    subscribe()
    while True:
        time.sleep(1)


def role_huey_consumer(path, workers, worker_type, go_file):
    from huey.consumer import Consumer

    huey, _ = make_huey(path)
    while not os.path.exists(go_file):
        time.sleep(0.005)
    Consumer(huey, workers=workers, worker_type=worker_type, periodic=False,
             initial_delay=0.01, max_delay=0.1, check_worker_health=False).run()


def make_huey(path):
    from huey import SqliteHuey

    huey = SqliteHuey("npq-bench", filename=path)
    noop = huey.task(name="noop")(_one)
    return huey, noop


def _one():
    return 1


# The main process --------------------------------------------------------


def child(*args, queue_config, database_url):
    env = dict(os.environ, BENCH_QUEUE=json.dumps(queue_config),
               BENCH_DATABASE_URL=database_url, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, __file__, *map(str, args)],
                            env=env, stdout=subprocess.DEVNULL)


def stop(*procs):
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def purge(app, delete=False):
    from kombu import Exchange, Queue

    with app.connection_for_write() as conn:
        # As Celery declares a queue it was not told about.
        bound = Queue(QUEUE, Exchange(QUEUE), QUEUE)(conn.default_channel)
        bound.declare()
        if delete:
            bound.delete()
            bound.exchange.delete()
        else:
            bound.purge()


def rate(count, seconds):
    return f"{count / seconds:,.0f}/s"


def bench_publish(app, raw, rows):
    from django.db import transaction

    from coordination.services import services

    total = 500 if QUICK else 1000
    purge(app)
    queue = subscribe(process=False)
    queue.publish("bench", {})  # connect to broker and database first
    raw.apply_async(queue=QUEUE)
    # Batches of 100 alternate between the two, with the broker queue
    # emptied before each, so a burst of load on the machine or a growing
    # queue on the broker weighs on both alike.
    ours = theirs = 0.0
    for _ in range(total // 100):
        purge(app)
        start = time.perf_counter()
        with transaction.atomic():
            for n in range(100):
                queue.publish("bench", {"n": n})
        ours += time.perf_counter() - start
        purge(app)
        start = time.perf_counter()
        for n in range(100):
            raw.apply_async(({"n": n},), queue=QUEUE)
        theirs += time.perf_counter() - start
    purge(app)
    services.reset()
    rows.append(("publish, Celery backend (row + message)", rate(total, ours),
                 "raw apply_async", rate(total, theirs),
                 f"{theirs / ours:.2f}x"))


def bench_latency(app, raw, rows, database_url, config):
    import redis

    from coordination.services import services

    samples = 30 if QUICK else 60
    client = redis.Redis.from_url(REDIS)
    client.delete(LATENCY_KEY)
    purge(app)
    worker = child("celery-worker", queue_config=config, database_url=database_url)
    try:
        queue = subscribe(process=False)

        def measure(send):
            send()  # warm up
            client.blpop(LATENCY_KEY, 60)
            values = []; starts=[]; pubs=[]
            for _ in range(samples):
                t0=time.perf_counter(); send(); pubs.append(time.perf_counter()-t0)
                a, b = client.blpop(LATENCY_KEY, 60)[1].split()
                values.append(float(a)); starts.append(float(b))
            print(f"  total {statistics.median(values)*1e3:.2f}  prerun {statistics.median(starts)*1e3:.2f}  publish-call {statistics.median(pubs)*1e3:.2f}", flush=True)
            return statistics.median(values) * 1000, sorted(values)[
                int(samples * 0.9)] * 1000

        theirs = measure(lambda: raw.apply_async((time.time(),), queue=QUEUE))
        ours = measure(lambda: queue.publish("bench", {"sent": time.time()}))
        create_floor_table()
        floor_task = app.tasks["bench.floor"]
        floor = measure(lambda: floor_publish(floor_task, time.time()))
    finally:
        stop(worker)
        services.reset()
    rows.append(("latency publish->process, median / p90",
                 f"{ours[0]:.1f} / {ours[1]:.1f} ms", "raw Celery task",
                 f"{theirs[0]:.1f} / {theirs[1]:.1f} ms",
                 f"{ours[0] / theirs[0]:.2f}x"))
    rows.append(("  floor: bare durable row + claim (not ours)",
                 f"{floor[0]:.1f} / {floor[1]:.1f} ms", "raw Celery task",
                 f"{theirs[0]:.1f} / {theirs[1]:.1f} ms",
                 f"{floor[0] / theirs[0]:.2f}x"))


def bench_sqlite(rows, tmp):
    from django.db import connection, transaction

    from coordination.models import Event
    from coordination.services import services

    total = 200 if QUICK else 400
    config = {"BACKEND": "database", "OPTIONS": {"POLL_INTERVAL": 0.05}}
    database_url = os.environ["BENCH_DATABASE_URL"]
    queue = subscribe(process=False)
    for processes, threads in ((1, 1), (2, 1), (4, 1), (1, 4)):
        # Ours: N worker processes, each with `threads` worker threads.
        Event.objects.all().delete()
        with transaction.atomic():
            for n in range(total):
                queue.publish("bench", {})
        go = tmp / f"go-ours-{processes}-{threads}"
        cfg = dict(config, OPTIONS={**config["OPTIONS"], "WORKERS": threads})
        procs = [child("db-worker", go, queue_config=cfg, database_url=database_url)
                 for _ in range(processes)]
        time.sleep(2 if QUICK else 3)  # let them import Django
        start = time.perf_counter()
        go.touch()
        while Event.objects.filter(status="succeeded").count() < total:
            time.sleep(0.01)
        ours = time.perf_counter() - start
        stop(*procs)
        connection.close()

        # huey: the same number of worker processes (or threads).
        path = str(tmp / f"huey-{processes}-{threads}.db")
        huey, noop = make_huey(path)
        for _ in range(total):
            noop()
        go = tmp / f"go-huey-{processes}-{threads}"
        kind = "process" if threads == 1 else "thread"
        consumer = child("huey-consumer", path, max(processes, threads), kind, go,
                         queue_config=config, database_url=database_url)
        time.sleep(1)
        start = time.perf_counter()
        go.touch()
        while huey.result_count() < total:
            time.sleep(0.01)
        theirs = time.perf_counter() - start
        stop(consumer)
        label = (f"{processes} process(es) x {threads} thread(s)")
        rows.append((f"SQLite no-op, {label}", rate(total, ours), "SqliteHuey",
                     rate(total, theirs), f"{theirs / ours:.2f}x"))
    services.reset()


def main():
    tmp = Path(tempfile.mkdtemp(prefix="npq-bench-"))
    database_url = os.environ.get("DATABASE_URL", f"sqlite:///{tmp / 'bench.sqlite3'}")
    celery_config = {"BACKEND": "celery", "OPTIONS": {
        "APP": "__main__.APP", "QUEUE": QUEUE}}
    os.environ["BENCH_DATABASE_URL"] = database_url
    os.environ["BENCH_QUEUE"] = json.dumps(celery_config)
    setup_django()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from coordination.models import Event

    # Events an earlier run left pending would be sent again by the worker's
    # housekeeping and counted as latency samples.
    Event.objects.all().delete()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:  # as huey's storage does
            cursor.execute("PRAGMA journal_mode=WAL")
    global APP
    APP, raw = celery_app()
    rows = []
    bench_publish(APP, raw, rows)
    worker_config = dict(celery_config, OPTIONS={
        **celery_config["OPTIONS"], "APP": "bench_queue_worker.APP"})
    bench_latency(APP, raw, rows, database_url, worker_config)
    if connection.vendor == "sqlite":
        from django.test import override_settings

        with override_settings(COORDINATION={"APP_NAME": "bench", "EVENT_QUEUE": {
                "BACKEND": "database", "OPTIONS": {"POLL_INTERVAL": 0.05}}}):
            bench_sqlite(rows, tmp)
    purge(APP, delete=True)
    print(f"\nEvent queue benchmark (database: {connection.vendor}, broker: "
          f"{BROKER.split('@')[-1]}, {'quick' if QUICK else 'full'} run)\n")
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    head = ("ours", "rate / time", "raw library", "rate / time", "ratio")
    widths = [max(w, len(h)) for w, h in zip(widths, head)]
    for row in (head, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print("\nratio: ours over raw for throughput (raw time / ours); ours over "
          "raw for latency.")


APP = None

if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") \
        else None
    if role == "celery-worker":
        sys.modules["bench_queue_worker"] = sys.modules["__main__"]
        APP, _ = celery_app()
        role_celery_worker()
    elif role == "db-worker":
        role_db_worker(sys.argv[2])
    elif role == "huey-consumer":
        role_huey_consumer(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        main()
