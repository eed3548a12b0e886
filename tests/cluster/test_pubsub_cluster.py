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
