"""A tiny Celery app whose worker processes are pub/sub instances.

Run by tests/cluster/test_pubsub_cluster.py as a prefork worker. The module
subscribes in the worker's main process, before the pool forks, so each pool
child has to restart its own listener after the fork (it must not share the
parent's connection).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from celery import Celery  # noqa: E402
from celery.signals import worker_process_init  # noqa: E402
from django.test import override_settings  # noqa: E402
from kombu import Queue  # noqa: E402

from tests.support.pubsub import channel_layers, channels_coordination  # noqa: E402

override_settings(
    CHANNEL_LAYERS=channel_layers(os.environ["PUBSUB_TEST_REDIS_URL"]),
    COORDINATION=channels_coordination(
        os.environ["COORDINATION_APP_NAME"], HEARTBEAT=1, RETRY_DELAY=0.2),
).enable()

from nocoplugins import app as plugins_app  # noqa: E402

QUEUE = os.environ["PUBSUB_TEST_QUEUE"]
celery = Celery("pubsub_tests", broker=os.environ["CELERY_BROKER_URL"])
celery.conf.update(
    task_serializer="json", accept_content=["json"],
    task_queues=[Queue(QUEUE, auto_delete=True)], task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
)

MAIN_PID = os.getpid()


def on_ping(message):
    plugins_app.pubsub_manager.publish("t.out", {
        "kind": "pong", "ping": message, "pid": os.getpid(),
        "pool_child": os.getpid() != MAIN_PID,
        "instance": plugins_app.instance_id,
    })


plugins_app.pubsub_manager.subscribe("t.ping", on_ping)


@worker_process_init.connect
def _child_ready(**kwargs):
    # The listener restarted by itself after the fork; wait for it, then
    # say so (its instance id is new, too).
    plugins_app.start()
    plugins_app.pubsub_manager.publish("t.out", {
        "kind": "child", "pid": os.getpid(), "instance": plugins_app.instance_id,
    })
