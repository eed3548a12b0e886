"""Real servers for the integration and cluster tests.

A test that needs a server it cannot reach fails in CI (CI=true) and is
skipped with the reason elsewhere, so a laptop without RabbitMQ can still run
the rest while CI never passes by skipping.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from urllib.parse import urlparse

import pytest


def require(server, url, error):
    message = f"{server} is not reachable at {url}: {error}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}. CI must start it (see .ci/run).", pytrace=False)
    pytest.skip(message)


def port_open(url, default_port):
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1):
            return None
    except OSError as exc:
        return exc


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A private redis-server on a free port, for tests that restart it."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="coordination-redis-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        binary = shutil.which("redis-server")
        if binary is None:
            require("redis-server", self.url, "the redis-server binary is missing")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while port_open(self.url, self.port) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on {self.port}")
            time.sleep(0.02)
        return self

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self, down_for=0.0):
        self.stop()
        time.sleep(down_for)
        self.start()

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A private PostgreSQL on a free port, for tests that restart it.

    Run as the ``postgres`` user when the tests run as root (initdb refuses
    root), with fsync off: these tests restart it, they do not crash the
    machine.
    """

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="coordination-pg-")
        self.data = os.path.join(self.dir, "data")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.bin = self._bindir()

    @staticmethod
    def _bindir():
        found = shutil.which("pg_ctl")
        if found:
            return os.path.dirname(found)
        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not versions:
            require("postgresql", "postgres://127.0.0.1:1/x",
                    "pg_ctl and initdb are missing (install postgresql)")
        return os.path.dirname(versions[-1])

    def _run(self, *args):
        cmd = [os.path.join(self.bin, args[0]), *args[1:]]
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)

    def _options(self):
        return (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off")

    def start(self):
        if not os.path.exists(self.data):
            self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                      "--no-sync", "-E", "UTF8")
        self._run("pg_ctl", "-D", self.data, "-o", self._options(), "-w",
                  "-l", os.path.join(self.dir, "log"), "start")
        return self

    def restart(self):
        """Stop at once (as a crash would, without a shutdown checkpoint)
        and start again."""
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        self.start()

    def close(self):
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
