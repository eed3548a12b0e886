"""Celery apps for the event queue tests: one on RabbitMQ, one on Redis.

A worker started with ``-A tests.celery_app:amqp_app`` (or ``redis_app``)
subscribes the test channels of ``tests.cluster.queue_nodes`` when it starts,
as a project's worker subscribes its plugins' channels.
"""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")


def make_app(name, broker):
    app = Celery(name, set_as_current=False)
    app.conf.update(
        broker_url=broker,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    app.conf.imports = ["coordination.queue.tasks"]
    return app


amqp_app = make_app(
    "npq-amqp",
    os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
)
redis_app = make_app(
    "npq-redis", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
)


@worker_init.connect
def _subscribe(**kwargs):
    import django

    django.setup()
    from tests.cluster import queue_nodes

    queue_nodes.subscribe_all()
