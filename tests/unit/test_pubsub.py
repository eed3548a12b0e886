"""Pub/sub pieces that need no server: names, envelopes, settings."""

import json
import re

import pytest
from django.test import override_settings

from coordination import backends
from coordination.checks import check_settings
from coordination.exceptions import ChannelNameError, ConfigurationError, PayloadError
from coordination.pubsub import PubSubManager
from coordination.pubsub.backends.base import BasePubSubBackend
from coordination.pubsub.backends.channels import ChannelsBackend, group_name
from coordination.pubsub.backends.local import LocalBackend
from nocoplugins import app
from tests.support.pubsub import Node, Recorder, unique_app_name

GROUP = re.compile(r"^[a-zA-Z\d\-_.]+$")


def test_backends_live_at_their_builtin_paths():
    assert backends.resolve("PUBSUB", "local", BasePubSubBackend) is LocalBackend
    assert backends.resolve("PUBSUB", "channels", BasePubSubBackend) is ChannelsBackend


def test_app_exposes_the_managers():
    assert isinstance(app.pubsub_manager, PubSubManager)
    assert app.sync_message_manager.__class__.__name__ == "SyncMessageManager"


@pytest.mark.parametrize("channel", [
    "plain", "a.b", "a_b", "ünïcode/κανάλι", "x" * 200, "sync:alpha", "_2e.",
    "emoji-\U0001f600", "a" * 90,
])
def test_group_names_are_valid_channels_group_names(channel):
    group = group_name("main", channel)
    assert GROUP.match(group) and len(group) < 100


def test_group_names_are_injective_and_namespaced():
    # Pairs a naive "replace bad characters" scheme would merge.
    channels = ["a.b", "a_b", "a-b", "a/b", "a_2e.b", "a__b", "A.b", "ab",
                "a" * 95, "a" * 96, "x" * 200, "x" * 199 + "y"]
    groups = {group_name("main", c) for c in channels}
    assert len(groups) == len(channels)
    # The app name is part of the group: one Redis serves many apps.
    assert group_name("main", "c") != group_name("other", "c")
    assert group_name("a.b", "c") != group_name("a", "b.c")
    assert group_name("m", "x" * 200) != group_name("n", "x" * 200)


def test_local_publish_reaches_other_instances_not_the_publisher():
    app_name = unique_app_name()
    with override_settings(COORDINATION={"APP_NAME": app_name}):
        a, b = Node(app_name, "a"), Node(app_name, "b")
        got_a, got_b = Recorder(), Recorder()
        a.pubsub.subscribe("ch", got_a)
        b.pubsub.subscribe("ch", got_b)
        a.pubsub.publish("ch", {"n": 1})
        assert got_b.wait_for(1) == [{"n": 1}]
        # Local delivery is synchronous up to the dispatcher queue, so a
        # reply proves the publisher's own copy would have been handled.
        b.pubsub.publish("ch", "ack")
        assert got_a.wait_for(1) == ["ack"]
        a.stop(), b.stop()


def test_bad_messages_raise_payload_error_before_sending():
    node = Node(unique_app_name(), "a")
    for message in [{1: "x"}, ("t",), {"d": object()}, float("nan"), {1, 2}]:
        with pytest.raises(PayloadError):
            node.pubsub.publish("ch", message)
        with pytest.raises(PayloadError):
            node.sync.publish("ch", message)
    assert node.pubsub.stats()["published"] == 0


@pytest.mark.parametrize("channel", ["", "a b", "a\nb", "x" * 201, None, 3])
def test_bad_channels_raise_channel_name_error(channel):
    node = Node(unique_app_name(), "a")
    with pytest.raises(ChannelNameError):
        node.pubsub.publish(channel, "m")
    with pytest.raises(ChannelNameError):
        node.pubsub.subscribe(channel, print)
    with pytest.raises(ChannelNameError):
        node.sync.publish(channel, "m")


def test_bad_debounce_and_handler_are_refused():
    node = Node(unique_app_name(), "a")
    with pytest.raises(ValueError):
        node.pubsub.subscribe("ch", print, debounce=-1)
    with pytest.raises(ValueError):
        node.pubsub.subscribe("ch", print, debounce="1")
    with pytest.raises(TypeError):
        node.pubsub.subscribe("ch", "not callable")


def test_channels_backend_options_are_checked():
    def errors(options, layers=None):
        with override_settings(
            CHANNEL_LAYERS=layers or {},
            COORDINATION={"PUBSUB": {"BACKEND": "channels", "OPTIONS": options}},
        ):
            return [e.msg for e in check_settings() if "PUBSUB" in e.msg]

    assert any("'ALIAS'" in m for m in errors({}))
    assert any("not in CHANNEL_LAYERS" in m for m in errors({"ALIAS": "x"}))
    layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert errors({"ALIAS": "default"}, layers) == []
    assert any("HEARTBEAT" in m for m in errors(
        {"ALIAS": "default", "HEARTBEAT": 0}, layers))
    assert any("'PORT'" in m for m in errors({"ALIAS": "default", "PORT": 1}, layers))


def test_a_wrong_backend_raises_configuration_error_on_first_use():
    with override_settings(COORDINATION={"PUBSUB": {"BACKEND": "channels"}}):
        with pytest.raises(ConfigurationError) as info:
            Node("main", "a")
    assert "ALIAS" in str(info.value)


def test_envelope_is_json_with_instance_channel_seq_and_message():
    app_name = unique_app_name()
    seen = []
    node = Node(app_name, "pub")
    node.pubsub.backend.publish = lambda channel, text: seen.append(text)
    node.pubsub.publish("ch", {"k": [1, "é"]})
    node.pubsub.publish("ch", None)
    node.pubsub.publish("other", 1)
    envelopes = [json.loads(t) for t in seen]
    fields = [(e["instance"], e["channel"], e["seq"], e["message"])
              for e in envelopes]
    assert fields == [
        ("pub", "ch", 1, {"k": [1, "é"]}), ("pub", "ch", 2, None),
        ("pub", "other", 1, 1),
    ]
