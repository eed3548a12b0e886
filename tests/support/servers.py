"""Real servers for the integration and cluster tests.

A test that needs a server it cannot reach fails in CI (CI=true) and is
skipped with the reason elsewhere, so a laptop without RabbitMQ can still run
the rest while CI never passes by skipping.
"""

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
