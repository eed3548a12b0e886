"""Channels backend specifics, on a real Redis."""

import time

from django.test import override_settings

from tests.support.pubsub import Node, Recorder, channels_coordination, unique_app_name


def test_memberships_outlive_the_layers_group_expiry(redis_url):
    # RedisChannelLayer forgets a group member after group_expiry seconds;
    # the listener re-joins on every heartbeat, so a quiet subscriber keeps
    # receiving.
    app_name = unique_app_name()
    layers = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [redis_url], "group_expiry": 1},
    }}
    with override_settings(CHANNEL_LAYERS=layers,
                           COORDINATION=channels_coordination(app_name, HEARTBEAT=0.3)):
        a, b = Node(app_name, "a"), Node(app_name, "b")
        try:
            got = Recorder()
            b.pubsub.subscribe("quiet", got)
            time.sleep(2.5)  # well past group_expiry, with nothing sent
            a.pubsub.publish("quiet", "still there")
            assert got.wait_for(1) == ["still there"]
        finally:
            a.stop(), b.stop()


def test_publish_does_not_need_a_listener(redis_url):
    app_name = unique_app_name()
    layers = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                          "CONFIG": {"hosts": [redis_url]}}}
    with override_settings(CHANNEL_LAYERS=layers,
                           COORDINATION=channels_coordination(app_name)):
        a, b = Node(app_name, "a"), Node(app_name, "b")
        try:
            got = Recorder()
            b.pubsub.subscribe("ch", got)
            a.pubsub.publish("ch", 1)
            assert got.wait_for(1) == [1]
            assert a.pubsub.stats()["connected"] is False  # a never listened
        finally:
            a.stop(), b.stop()


def test_subscribing_while_redis_is_down_joins_when_it_is_back(redis_server):
    from tests.support.pubsub import channel_layers, wait_until

    app_name = unique_app_name()
    with override_settings(
        CHANNEL_LAYERS=channel_layers(redis_server.url),
        COORDINATION=channels_coordination(app_name, HEARTBEAT=0.3,
                                           RETRY_DELAY=0.1, TIMEOUT=1),
    ):
        a, b = Node(app_name, "a"), Node(app_name, "b")
        try:
            redis_server.stop()
            got = Recorder()
            b.pubsub.subscribe("late", got)  # returns; the listener retries
            redis_server.start()
            wait_until(lambda: b.pubsub.stats()["connected"], what="listener up")
            a.pubsub.publish("late", "hello")
            assert got.wait_for(1) == ["hello"]
            assert b.pubsub.stats()["reconnects"] == 1
        finally:
            a.stop(), b.stop()


def test_publish_to_a_server_that_never_answers_fails_within_the_timeout():
    # A socket that accepts and then says nothing, like a Redis stuck on a
    # slow disk: the publish must fail and say so, not hang the caller.
    import socket

    import pytest
    import redis

    from tests.support.pubsub import channel_layers

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = "redis://127.0.0.1:%d/0" % silent.getsockname()[1]
    app_name = unique_app_name()
    try:
        with override_settings(
            CHANNEL_LAYERS=channel_layers(url),
            COORDINATION=channels_coordination(app_name, TIMEOUT=0.3),
        ):
            a = Node(app_name, "a")
            try:
                with pytest.raises(redis.TimeoutError):
                    a.pubsub.publish("ch", "lost?")
                assert a.pubsub.stats()["publish_failures"] == 1
            finally:
                a.stop()
    finally:
        silent.close()
