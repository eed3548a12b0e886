"""Pub/sub, sync messages and plugin state across real processes."""

import pytest
from django.test import override_settings

from nocoplugins import app
from tests.cluster.pubsub_nodes import DATA, Controller
from tests.support.pubsub import channel_layers, channels_coordination, unique_app_name

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def controller(redis_url):
    app_name = unique_app_name()
    with override_settings(
        CHANNEL_LAYERS=channel_layers(redis_url),
        COORDINATION=channels_coordination(app_name, HEARTBEAT=1),
    ):
        ctl = Controller(app, redis_url, app_name)
        try:
            yield ctl
        finally:
            ctl.kill()


def test_three_instances_publish_reaches_each_other_once(controller):
    a, b, c = controller.spawn(3)
    controller.command(a, "publish", channel=DATA, message={"n": 1})
    controller.wait(lambda r: len(controller.count("data")) >= 2, what="deliveries")
    controller.command(b, "publish", channel=DATA, message={"n": 2})
    controller.command(a, "publish", channel=DATA, message="self", only_self=True)
    controller.wait(lambda r: len(controller.count("data")) >= 5, what="deliveries")
    results = controller.stop()
    assert results[a]["data"] == [{"n": 2}, "self"]
    assert results[b]["data"] == [{"n": 1}]
    assert results[c]["data"] == [{"n": 1}, {"n": 2}]
    for node in results.values():
        assert node["stats"]["missed"] == 0


def test_sync_message_arrives_after_commit_and_never_after_rollback(controller):
    a, b, c = controller.spawn(3)
    controller.command(a, "sync_atomic", marker="rolled-back", rollback=True)
    controller.command(a, "sync_atomic", marker="committed")
    controller.wait(lambda r: len(controller.count("sync")) >= 2, what="sync")
    results = controller.stop()
    assert results[a]["sync"] == []
    for receiver in (b, c):
        # The receiver found the row the sender wrote in the same
        # transaction: the message left after the commit.
        assert results[receiver]["sync"] == [{"marker": "committed", "row": True}]


def test_a_plugin_disabled_on_one_instance_stops_handling_on_all(controller):
    a, b, c = controller.spawn(3)
    controller.command(b, "plugin_send", plugin="alpha", message="before")

    def alpha(node):
        return controller.command(node, "plugins")["alpha"]

    for node in (a, c):
        controller.poll(lambda: alpha(node)["messages"] == ["before"],
                        what="first plugin message")
    assert controller.command(a, "disable", plugin="alpha") is True
    # Every instance had the plugin cached as enabled; the announcement
    # makes each re-read it, without a restart.
    for node in (b, c):
        controller.poll(lambda: alpha(node)["enabled"] is False,
                        what="disabled everywhere")
    controller.command(b, "plugin_send", plugin="alpha", message="while disabled")
    controller.command(b, "plugin_send", plugin="beta-plugin", message="marker")
    for node in (a, c):
        controller.poll(
            lambda: controller.command(node, "plugins")["beta-plugin"]["messages"]
            == ["marker"], what="marker")
        assert alpha(node)["messages"] == ["before"]
    assert controller.command(c, "enable", plugin="alpha") is True
    for node in (a, b):
        controller.poll(lambda: alpha(node)["enabled"] is True, what="enabled")
    controller.command(b, "plugin_send", plugin="alpha", message="again")
    controller.poll(lambda: alpha(a)["messages"] == ["before", "again"],
                    what="delivery after enable")
    controller.stop()


def _subscribers(client, app_name, channel):
    from coordination.pubsub.backends.channels import group_name

    key = f"asgi__group__{group_name(app_name, channel)}"
    return dict(client.pubsub_numsub(key))[key.encode()]


def test_listeners_come_back_after_redis_restarts(redis_server):
    import redis

    from tests.cluster.pubsub_nodes import CTL, OUT

    app_name = unique_app_name()
    client = redis.Redis.from_url(redis_server.url)
    with override_settings(
        CHANNEL_LAYERS=channel_layers(redis_server.url),
        COORDINATION=channels_coordination(app_name, HEARTBEAT=0.5,
                                           RETRY_DELAY=0.1, TIMEOUT=2),
    ):
        controller = Controller(app, redis_server.url, app_name)
        try:
            (node,) = controller.spawn(1)
            app.pubsub_manager.publish(DATA, "before")
            controller.wait(lambda r: r["kind"] == "data", what="first message")

            redis_server.restart(down_for=1.0)

            # Both listeners (the node's and ours) join their groups again.
            controller.poll(lambda: all(
                _subscribers(client, app_name, ch) == 1 for ch in (DATA, CTL, OUT)
            ), what="listeners back")
            for n in range(5):
                app.pubsub_manager.publish(DATA, n)
            controller.wait(lambda r: len(controller.count("data")) >= 6,
                            what="messages after the restart")
            results = controller.stop()
        finally:
            controller.kill()
            client.close()
    assert results[node]["data"] == ["before", 0, 1, 2, 3, 4]


def test_a_celery_prefork_worker_process_receives_messages(controller, amqp_url):
    import signal
    import subprocess
    import sys
    import uuid
    from pathlib import Path

    from tests.support.processes import child_env

    env = child_env(
        COORDINATION_APP_NAME=controller.app_name,
        PUBSUB_TEST_REDIS_URL=controller.redis_url,
        PUBSUB_TEST_QUEUE=f"pubsub-tests-{uuid.uuid4().hex[:8]}",
        CELERY_BROKER_URL=amqp_url,
    )
    celery = str(Path(sys.executable).with_name("celery"))
    worker = subprocess.Popen(
        [celery, "-A", "tests.cluster.pubsub_celery_app", "worker",
         "--pool=prefork", "--concurrency=1", "--without-heartbeat",
         "--without-gossip", "--without-mingle", "--loglevel=WARNING"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        (child,) = controller.wait(lambda r: r["kind"] == "child", timeout=60,
                                   what="a pool child")
        app.pubsub_manager.publish("t.ping", "hello")
        pongs = controller.wait(
            lambda r: r["kind"] == "pong" and r["pid"] == child["pid"],
            what="a pong from the pool child")
        main = controller.wait(lambda r: r["kind"] == "pong" and not r["pool_child"],
                               what="a pong from the main process")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            output, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
    assert pongs[0]["pool_child"] is True
    assert pongs[0]["ping"] == "hello"
    # The child is an instance of its own, not a copy of the main process.
    assert main[0]["instance"] != child["instance"], output
