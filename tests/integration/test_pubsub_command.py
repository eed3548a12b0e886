"""``manage.py pubsub`` against a real Redis."""

import io
import json
import threading

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from coordination.services import services
from tests.support.pubsub import (
    Node,
    Recorder,
    channel_layers,
    channels_coordination,
    unique_app_name,
    wait_until,
)


@pytest.fixture
def redis_cluster(redis_url):
    app_name = unique_app_name()
    with override_settings(CHANNEL_LAYERS=channel_layers(redis_url),
                           COORDINATION=channels_coordination(app_name)):
        node = Node(app_name, "other")
        yield node
        node.stop()


def test_publish_command_reaches_other_instances(redis_cluster):
    got, sync_got = Recorder(), Recorder()
    redis_cluster.pubsub.subscribe("ops", got)
    redis_cluster.sync.subscribe("alpha", sync_got)
    out = io.StringIO()
    call_command("pubsub", "publish", "ops", '{"reload": true}', stdout=out)
    call_command("pubsub", "publish", "alpha", '"sync"', "--sync", stdout=out)
    assert got.wait_for(1) == [{"reload": True}]
    assert sync_got.wait_for(1) == ["sync"]
    assert "Published on 'ops'" in out.getvalue()


def test_listen_command_prints_what_arrives(redis_cluster):
    out = io.StringIO()
    thread = threading.Thread(target=call_command, args=(
        "pubsub", "listen", "a", "b", "--count", "2", "--timeout", "30"),
        kwargs={"stdout": out, "stderr": io.StringIO()})
    thread.start()
    # The command's subscriptions are in place once services has them.
    wait_until(lambda: "b" in services.pubsub_manager._handlers, what="listening")
    redis_cluster.pubsub.publish("a", {"x": 1})
    redis_cluster.pubsub.publish("b", "y")
    thread.join(30)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["channel"], line["message"]) for line in lines] == [
        ("a", {"x": 1}), ("b", "y")]


@pytest.mark.parametrize("args, error", [
    (["publish", "ops", "{not json"], "not JSON"),
    (["publish", "bad channel", "1"], "whitespace"),
    (["listen", "bad channel", "--timeout", "0"], "whitespace"),
])
def test_command_errors_say_what_to_do(args, error):
    with pytest.raises(CommandError, match=error):
        call_command("pubsub", *args)
