"""What the cache does on a real Redis, beyond the contract suite."""

import pytest
import redis
from django.core.cache import caches
from django.test import override_settings

from coordination.exceptions import CacheStoreError, PayloadError
from coordination.services import services
from tests.support.cache import cache_settings, redis_alias


@pytest.fixture
def redis_settings(redis_url, redis_client):
    with override_settings(**cache_settings(redis_url, default_store="redis")):
        yield redis_client


def test_server_keys_are_app_prefix_key_and_values_are_json_text(redis_settings):
    cache = services.get("cache_manager").create_cache("notes", prefix="n")
    cache.set("greeting", {"text": "héllo", "n": [1, 2.5, None]})
    cache.set("count", 5)
    raw = redis_settings
    assert raw.get("tests:n:greeting").decode() == '{"text":"héllo","n":[1,2.5,null]}'
    assert raw.get("tests:n:count") == b"5"
    assert sorted(raw.keys("*")) == [b"tests:n:count", b"tests:n:greeting"]


def test_ttl_is_set_on_the_server(redis_settings):
    cache = services.get("cache_manager").create_cache("notes", ttl=100)
    cache.set("a", 1)
    cache.set("b", 1, ttl=10)
    cache.mset({"c": 1}, ttl=20)
    raw = redis_settings
    assert 99_000 < raw.pttl("tests:notes:a") <= 100_000
    assert 9_000 < raw.pttl("tests:notes:b") <= 10_000
    assert 19_000 < raw.pttl("tests:notes:c") <= 20_000


def test_reset_leaves_other_caches_and_other_apps_alone(redis_settings):
    manager = services.get("cache_manager")
    mine = manager.create_cache("mine")
    theirs = manager.create_cache("theirs")
    raw = redis_settings
    mine.mset({f"k{i}": i for i in range(50)})
    theirs.mset({"k1": "kept", "k2": "kept"})
    raw.set("other-app:mine:k1", "kept")  # another APP_NAME, same prefix
    raw.set(":1:tests:mine:k1", "kept")  # the plain Django API's key
    raw.set("tests:mine", "kept")  # not under "tests:mine:"
    assert mine.reset() == 50
    assert theirs.mget(["k1", "k2"]) == ["kept", "kept"]
    assert raw.get("other-app:mine:k1") == b"kept"
    assert raw.get(":1:tests:mine:k1") == b"kept"
    assert raw.get("tests:mine") == b"kept"
    assert raw.dbsize() == 5


def test_reset_and_keys_scan_and_never_use_keys(redis_server):
    with override_settings(**cache_settings(redis_server.url, default_store="redis")):
        cache = services.get("cache_manager").create_cache("scanned")
        cache.mset({f"k{i}": i for i in range(1100)})
        assert len(cache.keys("k1*")) == 211
        assert cache.reset() == 1100
        stats = redis.Redis.from_url(redis_server.url).info("commandstats")
    assert "cmdstat_scan" in stats
    assert "cmdstat_keys" not in stats


def test_batch_calls_are_one_round_trip_each(redis_server):
    with override_settings(**cache_settings(redis_server.url, default_store="redis")):
        cache = services.get("cache_manager").create_cache("batched")
        client = redis.Redis.from_url(redis_server.url)
        client.config_resetstat()
        # With a ttl: SET PX for each key in one MULTI/EXEC pipeline.
        cache.mset({f"k{i}": i for i in range(100)})
        cache.mset({f"t{i}": i for i in range(100)}, ttl=30)
        assert cache.mget([f"k{i}" for i in range(100)]) == list(range(100))
        cache.mdel([f"k{i}" for i in range(100)])
        stats = client.info("commandstats")
    calls = {name[len("cmdstat_"):]: v["calls"] for name, v in stats.items()}
    assert calls["mget"] == 1
    assert calls["del"] == 1
    assert calls["multi"] == 2 and calls["exec"] == 2
    assert calls["set"] == 200


def test_a_compressor_on_the_alias_is_honoured(redis_url, redis_client):
    settings = cache_settings(redis_url, default_store="redis")
    settings["CACHES"]["redis"] = redis_alias(
        redis_url,
        COMPRESSOR="django_redis.compressors.zlib.ZlibCompressor",
    )
    with override_settings(**settings):
        cache = services.get("cache_manager").create_cache("zipped")
        big = {"text": "x" * 5000}
        cache.set("big", big)
        cache.mset({"n": 7, "s": "small"})
        assert cache.get("big") == big
        assert cache.mget(["n", "s", "big"]) == [7, "small", big]
        assert len(redis_client.get("tests:zipped:big")) < 1000
        # The plain Django API on the alias reads and writes the same codec.
        stored = redis_client.get("tests:zipped:big")
        assert caches["redis"].client.decode(stored) == big


def test_the_plain_django_api_on_the_alias_is_strict_json(redis_settings):
    django_cache = caches["redis"]
    django_cache.set("plain", {"a": [1, 2]})
    assert django_cache.get("plain") == {"a": [1, 2]}
    assert redis_settings.get(":1:plain") == b'{"a":[1,2]}'
    with pytest.raises(PayloadError):
        django_cache.set("plain", (1, 2))


def test_store_errors_are_clear_and_can_be_read_as_misses(redis_server, caplog):
    with override_settings(**cache_settings(redis_server.url, default_store="redis")):
        manager = services.get("cache_manager")
        strict = manager.create_cache("strict")
        lenient = manager.create_cache("lenient", miss_on_error=True)
        strict.set("k", 1)
        redis_server.stop()
        with pytest.raises(CacheStoreError, match="cache store 'redis'") as info:
            strict.get("k")
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        for call in (lambda: strict.set("k", 2), lambda: strict.mget(["k"]),
                     lambda: strict.keys(), lambda: strict.reset(),
                     lambda: strict.wrap("w", lambda: 1)):
            with pytest.raises(CacheStoreError):
                call()
        assert lenient.get("k", default="miss") == "miss"
        assert lenient.mget(["k", "j"]) == [None, None]
        assert lenient.wrap("w", lambda: "computed") == "computed"
        with pytest.raises(CacheStoreError):
            lenient.set("k", 2)  # writes still raise
        assert "treated as a miss" in caplog.text
        redis_server.start()
        strict.set("k", 3)
        assert strict.get("k") == 3


def test_a_store_without_timeout_keeps_keys_forever(redis_url, redis_client):
    settings = cache_settings(redis_url, default_store="redis")
    settings["CACHES"]["redis"]["TIMEOUT"] = None
    with override_settings(**settings):
        cache = services.get("cache_manager").create_cache("forever")
        assert cache.ttl is None
        cache.set("a", 1)
        cache.mset({"b": 2, "c": 3})
        cache.set("d", 4, ttl=30)
    assert [redis_client.pttl(f"tests:forever:{k}") for k in "abc"] == [-1, -1, -1]
    assert 0 < redis_client.pttl("tests:forever:d") <= 30_000
