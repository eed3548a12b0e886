"""Celery tasks of the coordination app, found by ``autodiscover_tasks()``."""

from .queue.tasks import run_event  # noqa: F401
