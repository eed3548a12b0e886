"""The Celery task run eagerly, in the caller's thread and transaction."""

import pytest

from coordination.queue.tasks import run_event
from coordination.services import services
from tests.support.queue import queue_settings

pytestmark = pytest.mark.django_db


def test_eager_task_sees_the_callers_uncommitted_event():
    # As CELERY_TASK_ALWAYS_EAGER in a project's tests: the row exists only
    # in the test's transaction, so the task must claim it on the caller's
    # own connection, not on the connection a worker thread keeps.
    seen = []
    with queue_settings("celery", APP="tests.celery_app.redis_app"):
        queue = services.event_queue
        queue.subscribe("eager", process=lambda payload, context: seen.append(
            (payload, context.event_id)))
        event_id = queue.publish("eager", {"n": 1})
        run_event.apply(args=[event_id])
        assert seen == [({"n": 1}, event_id)]
        assert queue.get(event_id).status == "succeeded"
