"""What the Celery backend puts on a real broker (RabbitMQ and Redis)."""

import json
import uuid

import pytest
from django.db import transaction
from django.utils.module_loading import import_string
from kombu import Exchange, Queue

from coordination.services import services
from tests.support.queue import queue_settings, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["amqp", "redis"])
def broker(request):
    request.getfixturevalue("amqp_url" if request.param == "amqp" else "redis_url")
    app_path = f"tests.celery_app.{request.param}_app"
    name = f"npq-int-{uuid.uuid4().hex[:8]}"
    app = import_string(app_path)
    with app.connection_for_write() as conn:
        # As Celery declares a queue it was not told about.
        bound = Queue(name, Exchange(name), name)(conn.default_channel)
        bound.declare()
        with queue_settings("celery", APP=app_path, QUEUE=name):
            queue = services.event_queue
            queue.subscribe("c", process=lambda p, c: None, idle=lambda: False)
            yield queue, bound
        bound.delete()
        bound.exchange.delete()


def next_message(bound):
    return wait_for(lambda: bound.get(no_ack=True), timeout=10)


def test_message_is_json_with_only_the_event_id(broker):
    queue, bound = broker
    event_id = queue.publish("c", {"secret": "stays in the database"}, timeout=5)
    message = next_message(bound)
    assert message.content_type == "application/json"
    assert "secret" not in str(message.body)
    args, kwargs, _ = json.loads(message.body)
    assert (args, kwargs) == ([event_id], {})
    assert message.headers["task"] == "coordination.queue.run_event"
    # Soft limit timeout + grace, hard limit timeout + 2 grace (10 s).
    assert message.headers["timelimit"] == [25.0, 15.0]


def test_nothing_is_sent_before_commit_or_after_rollback(broker):
    queue, bound = broker
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            queue.publish("c", {})
            raise RuntimeError("roll back")
    with transaction.atomic():
        event_id = queue.publish("c", {})
        assert bound.get(no_ack=True) is None
    args, _, _ = json.loads(next_message(bound).body)
    assert args == [event_id]
    assert bound.get(no_ack=True) is None
