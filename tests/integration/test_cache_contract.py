"""The cache contract, run on every store: locmem and django-redis (real Redis).

Each test gets ``cache_manager`` on a fresh store; the ``store`` fixture is
parametrized, so every test here runs once per store.
"""

import asyncio
import datetime
import threading
import time

import pytest
from django.core.cache import caches
from django.test import override_settings

from coordination.exceptions import ChannelNameError, PayloadError
from coordination.services import services
from tests.support.cache import cache_settings


@pytest.fixture(params=["memory", "redis"])
def store(request):
    redis_url = None
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        request.getfixturevalue("redis_client")  # flushed before and after
    with override_settings(**cache_settings(redis_url, default_store=request.param)):
        caches["default"].clear()
        yield request.param
    caches["default"].clear()


@pytest.fixture
def manager(store):
    return services.get("cache_manager")


@pytest.fixture
def cache(manager):
    return manager.create_cache("things")


JSON_VALUES = [
    {"a": 1, "b": [1, 2.5, None, True, False], "c": {"d": "é"}},
    [1, "two", 3.0],
    "text",
    "5",
    5,
    -7,
    2**70,
    1.5,
    True,
    False,
    None,
    "",
    0,
    [],
    {},
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_json_values_read_back_equal_and_of_the_same_type(cache, value):
    cache.set("k", value)
    got = cache.get("k", default="missing")
    assert got == value
    assert type(got) is type(value)


def test_get_of_a_missing_key_returns_the_default(cache):
    assert cache.get("nope") is None
    assert cache.get("nope", default=7) == 7


@pytest.mark.parametrize(
    "value",
    [(1, 2), {1, 2}, {1: "a"}, datetime.date(2020, 1, 1), object(), float("nan"),
     float("inf"), b"bytes", [1, (2,)], {"a": {"b": {3}}}],
    ids=repr,
)
def test_non_json_values_are_refused_before_anything_is_written(cache, value):
    cache.set("k", "before")
    with pytest.raises(PayloadError):
        cache.set("k", value)
    assert cache.get("k") == "before"


def test_mset_with_one_bad_value_writes_nothing(cache):
    with pytest.raises(PayloadError):
        cache.mset({"a": 1, "b": {2, 3}, "c": 3})
    assert cache.mget(["a", "b", "c"]) == [None, None, None]
    assert cache.keys() == []


@pytest.mark.parametrize("key", ["", "a b", "tab\t", "new\nline", "x" * 201,
                                 "nul\x00", "\x85", 5, None, b"bytes"])
def test_bad_keys_raise_channel_name_error(cache, key):
    with pytest.raises(ChannelNameError):
        cache.set(key, 1)
    with pytest.raises(ValueError):
        cache.get(key)
    with pytest.raises(ChannelNameError):
        cache.mget(["ok", key])
    with pytest.raises(ChannelNameError):
        cache.mset({"ok": 1, key: 2} if isinstance(key, (str, int)) else {key: 1})
    assert cache.get("ok") is None


def test_long_and_unicode_keys_work(cache):
    cache.set("k" * 200, 1)
    cache.set("ключ:é/☃", 2)
    assert cache.mget(["k" * 200, "ключ:é/☃"]) == [1, 2]
    assert cache.keys() == sorted(["k" * 200, "ключ:é/☃"])


def test_delete_says_whether_the_key_was_there(cache):
    cache.set("k", 1)
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.get("k") is None


def test_mget_returns_values_in_key_order_with_none_for_misses(cache):
    cache.mset({"b": 2, "a": 1, "d": [4]})
    assert cache.mget(["d", "missing", "a", "b", "a"]) == [[4], None, 1, 2, 1]
    assert cache.mget([]) == []
    assert cache.mget(iter(["a"])) == [1]


def test_mget_refuses_a_single_string(cache):
    with pytest.raises(TypeError):
        cache.mget("abc")


def test_mdel_removes_only_the_given_keys(cache):
    cache.mset({"a": 1, "b": 2, "c": 3})
    cache.mdel(["a", "c", "never"])
    assert cache.mget(["a", "b", "c"]) == [None, 2, None]
    cache.mdel([])


def test_keys_are_shown_as_given_and_filtered_by_glob(manager, cache):
    other = manager.create_cache("others")
    cache.mset({"user:1": 1, "user:2": 2, "user:10": 3, "post:1": 4, "a*b": 5})
    other.set("user:3", 1)
    assert cache.keys() == ["a*b", "post:1", "user:1", "user:10", "user:2"]
    assert cache.keys("user:*") == ["user:1", "user:10", "user:2"]
    assert cache.keys("user:?") == ["user:1", "user:2"]
    assert cache.keys("user:[!2]*") == ["user:1", "user:10"]
    assert cache.keys("a*b") == ["a*b"]
    assert other.keys() == ["user:3"]


def test_reset_removes_this_caches_keys_only(store, manager, cache):
    # Prefixes that share a beginning must not be confused either.
    neighbour = manager.create_cache("things2")
    glob = manager.create_cache("glob", prefix="th*")
    # Enough keys for several SCAN steps on Redis; locmem keeps 300 at most.
    count = 1200 if store == "redis" else 100
    cache.mset({f"k{i}": i for i in range(count)})
    neighbour.set("k1", "mine")
    glob.set("k1", "mine too")
    assert cache.reset() == count
    assert cache.keys() == []
    assert cache.get("k5") is None
    assert neighbour.get("k1") == "mine"
    assert glob.get("k1") == "mine too"
    assert glob.reset() == 1
    assert neighbour.get("k1") == "mine"


def test_ttl_expires(cache):
    cache.set("short", 1, ttl=1)
    cache.set("long", 2, ttl=60)
    cache.mset({"m1": 1, "m2": 2}, ttl=1)
    assert cache.mget(["short", "m1"]) == [1, 1]
    time.sleep(1.2)
    assert cache.get("short") is None
    assert cache.mget(["m1", "m2", "long"]) == [None, None, 2]
    assert cache.keys() == ["long"]


def test_the_cache_ttl_applies_when_a_call_gives_none(manager):
    brief = manager.create_cache("brief", ttl=0.3)
    brief.set("k", 1)
    brief.wrap("w", lambda: 2)
    brief.set("kept", 3, ttl=60)
    time.sleep(0.5)
    assert brief.mget(["k", "w", "kept"]) == [None, None, 3]


def test_a_ttl_of_zero_removes_the_key(cache):
    cache.set("k", 1)
    cache.set("k", 2, ttl=0)
    assert cache.get("k") is None
    with pytest.raises(TypeError):
        cache.set("k", 1, ttl="10")
    with pytest.raises(ValueError):
        cache.set("k", 1, ttl=float("inf"))


@pytest.mark.parametrize("value", [0, "", [], {}, False, None])
def test_wrap_caches_falsy_values_none_included(cache, value):
    calls = []

    def compute():
        calls.append(1)
        return value

    assert cache.wrap("k", compute) == value
    assert cache.wrap("k", compute) == value
    assert len(calls) == 1


def test_wrap_returns_a_cached_value_without_calling(cache):
    cache.set("k", {"cached": True})
    assert cache.wrap("k", pytest.fail) == {"cached": True}


def test_wrap_caches_nothing_when_the_function_raises(cache):
    def fail():
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        cache.wrap("k", fail)
    assert cache.keys() == []
    assert cache.wrap("k", lambda: 1) == 1


def test_wrap_refuses_a_non_json_result_and_caches_nothing(cache):
    with pytest.raises(PayloadError):
        cache.wrap("k", lambda: {1, 2})
    assert cache.get("k", default="none") == "none"


def test_wrap_with_condition_does_not_cache_none_by_default(cache):
    calls = []

    def compute():
        calls.append(1)
        return None

    assert cache.wrap_with_condition("k", compute) is None
    assert cache.wrap_with_condition("k", compute) is None
    assert len(calls) == 2
    assert cache.keys() == []


def test_wrap_with_condition_caches_what_is_cacheable_accepts(cache):
    values = iter([1, 2, 30, 40])

    def big(value):
        return value > 10

    assert cache.wrap_with_condition("k", lambda: next(values), is_cacheable=big) == 1
    assert cache.wrap_with_condition("k", lambda: next(values), is_cacheable=big) == 2
    assert cache.wrap_with_condition("k", lambda: next(values), is_cacheable=big) == 30
    assert cache.wrap_with_condition("k", lambda: next(values), is_cacheable=big) == 30
    # A stored value the condition refuses counts as a miss.
    cache.set("low", 3)
    assert cache.wrap_with_condition("low", lambda: 50, is_cacheable=big) == 50
    assert cache.get("low") == 50


def test_wrap_with_condition_without_cache_neither_reads_nor_writes(cache):
    cache.set("k", "cached")
    assert cache.wrap_with_condition("k", lambda: "fresh", use_cache=False) == "fresh"
    assert cache.get("k") == "cached"
    assert cache.wrap_with_condition("k2", lambda: "fresh", use_cache=False) == "fresh"
    assert cache.get("k2") is None


def run_threads(count, target):
    start = threading.Barrier(count)
    results = [None] * count

    def worker(i):
        start.wait()
        try:
            results[i] = ("ok", target())
        except Exception as exc:
            results[i] = ("error", exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_fifty_threads_on_a_cold_key_run_the_function_once(cache):
    calls = []

    def slow():
        calls.append(threading.get_ident())
        time.sleep(0.2)
        return {"n": len(calls)}

    results = run_threads(50, lambda: cache.wrap("cold", slow))
    assert calls and len(calls) == 1
    assert results == [("ok", {"n": 1})] * 50


def test_an_error_reaches_every_waiting_thread_and_nothing_is_cached(cache):
    calls = []
    entered = []

    def broken():
        calls.append(1)
        # Fail only once every caller is inside wrap (and past its read),
        # so none arrives after the failure and computes again.
        while len(entered) < 20:
            time.sleep(0.01)
        time.sleep(0.2)
        raise RuntimeError("database down")

    def call():
        entered.append(1)
        return cache.wrap("cold", broken)

    results = run_threads(20, call)
    assert len(calls) == 1
    assert [kind for kind, _ in results] == ["error"] * 20
    assert all(str(exc) == "database down" for _, exc in results)
    assert cache.get("cold", default="none") == "none"


def test_async_twins(cache):
    async def scenario():
        await cache.aset("a", {"x": 1})
        await cache.amset({"b": 2, "c": 3}, ttl=60)
        assert await cache.aget("a") == {"x": 1}
        assert await cache.aget("zz", 9) == 9
        assert await cache.amget(["c", "zz", "b"]) == [3, None, 2]
        assert await cache.akeys() == ["a", "b", "c"]
        assert await cache.adelete("a") is True
        await cache.amdel(["b"])
        assert await cache.akeys() == ["c"]
        with pytest.raises(PayloadError):
            await cache.aset("a", object())
        assert await cache.areset() == 1
        assert await cache.akeys() == []

    asyncio.run(scenario())


def test_awrap_runs_an_async_function_once_for_concurrent_tasks(cache):
    calls = []

    async def compute():
        calls.append(1)
        await asyncio.sleep(0.3)
        return ["value"]

    async def scenario():
        return await asyncio.gather(*[cache.awrap("k", compute) for _ in range(20)])

    assert asyncio.run(scenario()) == [["value"]] * 20
    assert len(calls) == 1
    assert cache.get("k") == ["value"]


def test_awrap_accepts_a_sync_function_and_caches_falsy_values(cache):
    calls = []

    def compute():
        calls.append(1)
        return 0

    async def scenario():
        first = await cache.awrap("k", compute)
        second = await cache.awrap("k", compute)
        return first, second

    assert asyncio.run(scenario()) == (0, 0)
    assert calls == [1]


def test_awrap_with_condition(cache):
    async def none():
        return None

    async def scenario():
        assert await cache.awrap_with_condition("k", none) is None
        assert await cache.akeys() == []
        assert await cache.awrap_with_condition(
            "k", lambda: 5, is_cacheable=lambda v: True
        ) == 5
        assert await cache.awrap_with_condition(
            "k", lambda: 6, use_cache=False
        ) == 6
        assert await cache.aget("k") == 5

    asyncio.run(scenario())


def test_awrap_error_reaches_every_task(cache):
    async def broken():
        await asyncio.sleep(0.05)
        raise KeyError("gone")

    async def scenario():
        return await asyncio.gather(
            *[cache.awrap("k", broken) for _ in range(5)], return_exceptions=True
        )

    results = asyncio.run(scenario())
    assert all(isinstance(r, KeyError) for r in results)
    assert cache.get("k", default="none") == "none"


@pytest.fixture
def held_wrap_lock():
    """The wrap lock of key "k" of the cache "things", as another instance."""
    lock = services.get("lock_manager").acquire("cache:things:k", ttl=30)
    yield lock
    lock.release()


def test_wrap_waits_for_another_instances_lock_then_reads_its_value(
    store, cache, held_wrap_lock
):
    results = []
    waiter = threading.Thread(
        target=lambda: results.append(cache.wrap("k", lambda: "computed here"))
    )
    waiter.start()
    if store == "memory":
        # Other instances cannot see a locmem value: no lock, no waiting.
        waiter.join(10)
        assert results == ["computed here"]
        return
    waiter.join(0.3)
    assert waiter.is_alive() and results == []
    cache.set("k", "computed elsewhere")
    held_wrap_lock.release()
    waiter.join(10)
    assert results == ["computed elsewhere"]


def test_wrap_computes_when_the_lock_is_busy_too_long(
    store, cache, held_wrap_lock, caplog
):
    cache.wrap_lock_timeout = 0.2
    assert cache.wrap("k", lambda: "computed anyway") == "computed anyway"
    assert cache.get("k") == "computed anyway"
    assert ("computing here too" in caplog.text) == (store == "redis")


def test_wrap_still_answers_when_the_lock_backend_is_down(
    store, redis_server, request, caplog
):
    redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
    locks = {"BACKEND": "redis", "OPTIONS": {"URL": redis_server.url}}
    with override_settings(**cache_settings(redis_url, default_store=store,
                                            locks=locks)):
        cache = services.get("cache_manager").create_cache("lockless")
        cache.wrap_lock_timeout = 0.5
        redis_server.stop()
        # The Redis lock backend keeps retrying an unreachable server until
        # the wait runs out; then wrap computes without the lock.
        assert cache.wrap("k", lambda: 1) == 1
        assert cache.get("k") == 1
    assert ("computing here too" in caplog.text) == (store == "redis")
