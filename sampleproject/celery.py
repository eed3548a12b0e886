"""The sample project's Celery app.

Run a worker next to the web processes with:

    CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672// \\
        celery -A sampleproject worker -Q coordination -l info

The broker comes from CELERY_BROKER_URL (read by settings.py), and every
CELERY_* Django setting configures the app. Only JSON is accepted.
"""

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sampleproject.settings")

app = Celery("sampleproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # One message at a time per worker process: with late acknowledgement a
    # prefetched message would wait behind a long event.
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
)
app.autodiscover_tasks()


@worker_process_init.connect
def _start_instance(**kwargs):
    # Each prefork child is an instance of its own: start its listeners and
    # heartbeat after the fork, never sharing the parent's connections.
    from nocoplugins import app as plugins_app

    plugins_app.start()
