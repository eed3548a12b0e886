"""Helpers for the pub/sub and sync message tests.

``Node`` plays one instance inside the test process: its own pub/sub and
sync managers with its own instance id, on whatever backend the settings
name, so a contract test can run a small cluster in one process.
"""

import threading
import time
import uuid

from coordination.pubsub import PubSubManager
from coordination.sync import SyncMessageManager


def unique_app_name(prefix="t-pubsub"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def channel_layers(redis_url, layer="pubsub"):
    backend = {
        "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "core": "channels_redis.core.RedisChannelLayer",
    }[layer]
    return {"default": {"BACKEND": backend, "CONFIG": {"hosts": [redis_url]}}}


def channels_coordination(app_name, **options):
    return {
        "APP_NAME": app_name,
        "LOCKS": {"BACKEND": "local"},
        "PUBSUB": {"BACKEND": "channels",
                   "OPTIONS": {"ALIAS": "default", **options}},
    }


class Node:
    """One simulated instance: ``node.pubsub`` and ``node.sync``."""

    def __init__(self, app_name, instance_id):
        self.name = app_name
        self.instance_id = instance_id
        self._managers = {}
        self.pubsub = PubSubManager(self)
        self._managers["pubsub_manager"] = self.pubsub
        self.sync = SyncMessageManager(self)

    def get(self, attr):
        return self._managers[attr]

    def stop(self):
        self.pubsub.stop()


class Recorder:
    """A handler that remembers its calls and lets a test wait for them."""

    def __init__(self):
        self.calls = []
        self._cond = threading.Condition()

    def __call__(self, message):
        with self._cond:
            self.calls.append(message)
            self._cond.notify_all()

    def wait_for(self, count, timeout=10):
        """Wait until ``count`` calls arrived; return the calls."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.calls) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} calls within {timeout}s, got "
                        f"{self.calls!r}"
                    )
                self._cond.wait(left)
            return list(self.calls)


def wait_until(predicate, timeout=10, interval=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)
