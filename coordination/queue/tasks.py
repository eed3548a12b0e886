"""The Celery task of the ``celery`` backend.

A shared task, so it is registered on the project's Celery app as soon as
this module is imported (``app.autodiscover_tasks()`` imports it through
``coordination.tasks``). It only carries the event id; the row has the rest.
"""

from celery import shared_task

from .backends.celery import TASK_NAME


@shared_task(
    bind=True, name=TASK_NAME, acks_late=True, reject_on_worker_lost=True,
    ignore_result=True, serializer="json",
)
def run_event(task, event_id):
    from ..services import services
    from . import store
    from .backends.celery import CeleryBackend

    backend = services.event_queue.backend
    if not isinstance(backend, CeleryBackend):
        raise RuntimeError(
            'coordination.queue.run_event needs COORDINATION["EVENT_QUEUE"]'
            '["BACKEND"] = "celery" in the worker\'s settings.'
        )
    if task.request.is_eager:
        # Run in the caller's thread (tests, CELERY_TASK_ALWAYS_EAGER): on
        # its connection, which sees its uncommitted rows.
        backend.run(event_id)
        return
    with store.kept_connection():
        backend.run(event_id)
