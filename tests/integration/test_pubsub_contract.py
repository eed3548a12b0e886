"""One contract, run on every pub/sub backend.

Each test builds a small cluster of ``Node`` objects (distinct instance ids)
in this process: on the local backend they share the in-process hub, on the
Channels backend each has its own layer, listener and Redis connections.
"""

import asyncio
import logging
import time

import pytest
from django.db import transaction
from django.test import override_settings

from tests.support.pubsub import (
    Node,
    Recorder,
    channel_layers,
    channels_coordination,
    unique_app_name,
    wait_until,
)


@pytest.fixture(params=["local", "channels-pubsub", "channels-core"])
def cluster(request):
    app_name = unique_app_name()
    if request.param == "local":
        overrides = {"COORDINATION": {"APP_NAME": app_name,
                                      "LOCKS": {"BACKEND": "local"}}}
    else:
        redis_url = request.getfixturevalue("redis_url")
        layer = request.param.split("-")[1]
        overrides = {
            "CHANNEL_LAYERS": channel_layers(redis_url, layer),
            "COORDINATION": channels_coordination(app_name, HEARTBEAT=1),
        }
    nodes = []
    with override_settings(**overrides):
        def make(count):
            made = [Node(app_name, f"node{len(nodes) + i}") for i in range(count)]
            nodes.extend(made)
            return made

        make.backend = request.param
        yield make
        for node in nodes:
            node.stop()


def test_publish_reaches_every_other_instance_once_not_the_publisher(cluster):
    a, b, c = cluster(3)
    got = {n.instance_id: Recorder() for n in (a, b, c)}
    for node in (a, b, c):
        node.pubsub.subscribe("news", got[node.instance_id])
    a.pubsub.publish("news", {"n": 1})
    assert got["node1"].wait_for(1) == [{"n": 1}]
    assert got["node2"].wait_for(1) == [{"n": 1}]
    # b answers; a's own copy, had it been delivered, would come first.
    b.pubsub.publish("news", "ack")
    assert got["node0"].wait_for(1) == ["ack"]
    assert got["node2"].wait_for(2) == [{"n": 1}, "ack"]
    assert got["node1"].calls == [{"n": 1}]


def test_only_self_and_skip_self_false(cluster):
    a, b = cluster(2)
    got_a, got_b = Recorder(), Recorder()
    a.pubsub.subscribe("ch", got_a)
    b.pubsub.subscribe("ch", got_b)
    a.pubsub.publish("ch", "mine", only_self=True)
    a.pubsub.publish("ch", "all", skip_self=False)
    assert got_b.wait_for(1) == ["all"]
    assert got_a.wait_for(2) == ["mine", "all"]
    # only_self wins over skip_self=False.
    a.pubsub.publish("ch", "mine again", only_self=True, skip_self=False)
    b.pubsub.publish("ch", "ack")
    assert got_a.wait_for(4)[2:] in (["mine again", "ack"], ["ack", "mine again"])
    assert got_b.calls == ["all"]


def test_only_subscribed_channels_and_unsubscribe(cluster):
    a, b = cluster(2)
    got, other = Recorder(), Recorder()
    b.pubsub.subscribe("one", got)
    b.pubsub.subscribe("two", other)
    a.pubsub.publish("one", 1)
    assert got.wait_for(1) == [1]
    assert b.pubsub.unsubscribe("one", got) is True
    assert b.pubsub.unsubscribe("one", got) is False
    a.pubsub.publish("one", 2)
    a.pubsub.publish("two", "marker")
    assert other.wait_for(1) == ["marker"]
    assert got.calls == [1]


def test_same_handler_twice_delivers_once_and_async_handlers(cluster):
    a, b = cluster(2)
    got = Recorder()
    async_got = Recorder()

    async def handler(message):
        await asyncio.sleep(0)
        async_got(message)

    b.pubsub.subscribe("ch", got)
    b.pubsub.subscribe("ch", got)
    b.pubsub.subscribe("ch", handler)
    a.pubsub.publish("ch", "x")
    a.pubsub.publish("ch", "y")
    assert async_got.wait_for(2) == ["x", "y"]
    assert got.wait_for(2) == ["x", "y"]


def test_a_failing_handler_is_logged_and_others_still_run(cluster, caplog):
    a, b = cluster(2)
    got = Recorder()

    def broken(message):
        raise RuntimeError("boom")

    b.pubsub.subscribe("ch", broken)
    b.pubsub.subscribe("ch", got)
    with caplog.at_level(logging.ERROR, logger="coordination.pubsub"):
        a.pubsub.publish("ch", 1)
        a.pubsub.publish("ch", 2)
        assert got.wait_for(2) == [1, 2]
    errors = [r for r in caplog.records if r.name == "coordination.pubsub"
              and r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert "channel=ch" in errors[0].getMessage()
    assert "instance=node1" in errors[0].getMessage()
    assert errors[0].exc_info[0] is RuntimeError
    assert b.pubsub.stats()["handler_errors"] == 2


def test_debounce_calls_once_per_distinct_message_after_the_window(cluster):
    a, b = cluster(2)
    debounced, plain = Recorder(), Recorder()
    b.pubsub.subscribe("ch", debounced, debounce=0.3)
    b.pubsub.subscribe("ch", plain)
    for message in [{"a": 1, "b": 2}, {"b": 2, "a": 1}, "other", {"a": 1, "b": 2}]:
        a.pubsub.publish("ch", message)
    assert len(plain.wait_for(4)) == 4
    calls = debounced.wait_for(2)
    time.sleep(0.5)  # longer than the window: no further call comes
    assert len(debounced.calls) == 2
    assert sorted(map(str, calls)) == sorted(map(str, [{"a": 1, "b": 2}, "other"]))


def test_a_sequence_gap_is_logged_and_counted(cluster, caplog):
    a, b = cluster(2)
    got = Recorder()
    b.pubsub.subscribe("ch", got)
    a.pubsub.publish("ch", 1)
    got.wait_for(1)
    # An envelope that skips seq 2 and 3, as if the layer had lost them.
    envelope = ('{"v":1,"instance":"node0","channel":"ch","seq":4,'
                '"message":4}')
    with caplog.at_level(logging.WARNING, logger="coordination.pubsub"):
        a.pubsub.backend.publish("ch", envelope)
        assert got.wait_for(2) == [1, 4]
    assert b.pubsub.stats()["missed"] == 2
    assert any("Missed 2" in r.getMessage() and "channel=ch" in r.getMessage()
               for r in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_sync_messages_wait_for_commit_and_vanish_on_rollback(cluster):
    a, b = cluster(2)
    got = Recorder()
    b.sync.subscribe("alpha", got)
    with transaction.atomic():
        a.sync.publish("alpha", "committed")
        received_inside = b.pubsub.stats()["received"]
    assert received_inside == 0
    assert got.wait_for(1) == ["committed"]
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            a.sync.publish("alpha", "rolled back")
            1 / 0
    a.sync.publish("alpha", "after")
    assert got.wait_for(2) == ["committed", "after"]


@pytest.mark.django_db(transaction=True)
def test_sync_messages_skip_self_and_are_apart_from_pubsub(cluster):
    a, b = cluster(2)
    sync_a, sync_b, plain_b = Recorder(), Recorder(), Recorder()
    a.sync.subscribe("alpha", sync_a)
    b.sync.subscribe("alpha", sync_b)
    b.pubsub.subscribe("alpha", plain_b)
    message = {"reload": ["x"]}
    a.sync.publish("alpha", message)
    message["reload"].append("changed after publish")
    assert sync_b.wait_for(1) == [{"reload": ["x"]}]
    b.sync.publish("alpha", "ack")
    assert sync_a.wait_for(1) == ["ack"]
    a.pubsub.publish("alpha", "plain")
    assert plain_b.wait_for(1) == ["plain"]
    assert sync_b.calls == [{"reload": ["x"]}]


def test_stop_keeps_subscriptions_and_start_resumes(cluster):
    a, b = cluster(2)
    got = Recorder()
    b.pubsub.subscribe("ch", got)
    a.pubsub.publish("ch", 1)
    got.wait_for(1)
    b.pubsub.stop()
    b.pubsub.start()
    if cluster.backend != "local":
        # The listener rejoins on its own thread; wait until it is back.
        wait_until(lambda: b.pubsub.stats()["connected"], what="listener back")
    a.pubsub.publish("ch", 2)
    assert got.wait_for(2) == [1, 2]


def test_apublish_from_async_code(cluster):
    a, b = cluster(2)
    got = Recorder()
    b.pubsub.subscribe("ch", got)

    async def view():
        await a.pubsub.apublish("ch", {"from": "async"})

    asyncio.run(view())
    assert got.wait_for(1) == [{"from": "async"}]
