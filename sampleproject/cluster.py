"""Run the sample project as a local cluster: three web instances and a
Celery worker, against PostgreSQL, Redis and RabbitMQ.

    python3 dev.py cluster              # from the README
    python -m sampleproject.cluster     # the same, inside .venv

Every process gets the same DATABASE_URL, REDIS_URL and CELERY_BROKER_URL
(defaults below, or from the environment). Their output is prefixed with the
instance's name. Ctrl-C (or SIGTERM) stops them all; so does one of them
dying.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/nocoplugins_sample",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
}
WEB_PORTS = (8001, 8002, 8003)
COLORS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m")


def cluster_env(**overrides):
    env = dict(os.environ)
    for key, value in DEFAULTS.items():
        env.setdefault(key, value)
    env.update(overrides)
    env.setdefault("DJANGO_SETTINGS_MODULE", "sampleproject.settings")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def commands(ports=WEB_PORTS, python=sys.executable):
    manage = [python, str(ROOT / "manage.py")]
    procs = [
        (f"web{n}", manage + ["runserver", "--noreload", f"127.0.0.1:{port}"])
        for n, port in enumerate(ports, 1)
    ]
    procs.append(("worker", [
        python, "-m", "celery", "-A", "sampleproject", "worker",
        "--loglevel", "INFO", "--concurrency", "2", "--queues", "coordination",
        "--hostname", "worker@%h",
    ]))
    return procs


def create_postgres_database(url):
    """CREATE DATABASE for a postgres:// URL if it does not exist yet."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql", "pgsql"):
        return
    import psycopg

    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl().replace(
        f"{parsed.scheme}://", "postgresql://", 1
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


class Cluster:
    """Start the processes, pipe their output with a prefix, stop them all."""

    def __init__(self, env, procs, out=sys.stdout):
        self.env, self.procs, self.out = env, procs, out
        self.running = []
        self._print_lock = threading.Lock()

    def prepare(self, python=sys.executable):
        create_postgres_database(self.env["DATABASE_URL"])
        manage = [python, str(ROOT / "manage.py")]
        subprocess.run(manage + ["migrate", "--noinput", "-v", "0"],
                       env=self.env, cwd=ROOT, check=True)

    def start(self):
        width = max(len(name) for name, _ in self.procs)
        for index, (name, cmd) in enumerate(self.procs):
            process = subprocess.Popen(
                cmd, env=self.env, cwd=ROOT, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, start_new_session=True,
            )
            prefix = f"{COLORS[index % len(COLORS)]}{name:>{width}} |\033[0m "
            if not getattr(self.out, "isatty", lambda: False)():
                prefix = f"{name:>{width}} | "
            threading.Thread(target=self._pipe, args=(process, prefix),
                             daemon=True).start()
            self.running.append((name, process))
        return self

    def _pipe(self, process, prefix):
        for line in process.stdout:
            with self._print_lock:
                self.out.write(prefix + line)
                self.out.flush()

    def wait(self):
        """Block until one process exits; return its name."""
        while True:
            for name, process in self.running:
                if process.poll() is not None:
                    return name
            time.sleep(0.2)

    def stop(self, timeout=15):
        for _, process in self.running:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, process in self.running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main():
    env = cluster_env()
    cluster = Cluster(env, commands())
    print("Preparing the database (%s)" % env["DATABASE_URL"], flush=True)
    cluster.prepare()
    signal.signal(signal.SIGTERM, _interrupt)
    cluster.start()
    print("Cluster up: " + ", ".join(
        f"http://127.0.0.1:{p}/" for p in WEB_PORTS
    ) + " and a Celery worker. Ctrl-C stops everything.", flush=True)
    try:
        name = cluster.wait()
        print(f"{name} exited; stopping the cluster", flush=True)
    except KeyboardInterrupt:
        print("stopping the cluster", flush=True)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
