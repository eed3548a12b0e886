"""Pub/sub speed across processes, against the libraries underneath.

    REDIS_URL=redis://127.0.0.1:6379/3 python bench/pubsub.py [--quick]

Receivers are separate processes on the same Redis. Compared in one run:

- raw: redis-py PUBLISH -> SUBSCRIBE
- layer: channels_redis RedisPubSubChannelLayer group_send -> receive
- layer-core: channels_redis RedisChannelLayer (lists) group_send -> receive
- ours: app.pubsub_manager.publish -> handler, Channels backend on the
  pub/sub layer (and "ours-core" on the list layer)

Latency is one way (publisher and receivers share CLOCK_MONOTONIC), with
messages spaced out; burst throughput is one publisher sending as fast as it
can, measured until the last message reaches the receiver.
"""

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

LAYERS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}


def redis_url():
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/3")


def now_us():
    return time.monotonic_ns() / 1000


def make_layer(kind):
    from channels_redis.core import RedisChannelLayer
    from channels_redis.pubsub import RedisPubSubChannelLayer

    cls = RedisPubSubChannelLayer if kind == "pubsub" else RedisChannelLayer
    kwargs = {"capacity": 100_000} if kind == "core" else {}
    return cls(hosts=[redis_url()], **kwargs)


def setup_ours(app_name, layer):
    import django
    from django.test import override_settings

    django.setup()
    override_settings(
        CHANNEL_LAYERS={"default": {
            "BACKEND": LAYERS[layer],
            "CONFIG": {"hosts": [redis_url()],
                       **({"capacity": 100_000} if layer == "core" else {})},
        }},
        COORDINATION={"APP_NAME": app_name, "LOCKS": {"BACKEND": "local"},
                      "PUBSUB": {"BACKEND": "channels",
                                 "OPTIONS": {"ALIAS": "default"}}},
    ).enable()
    # tests.settings turns the coordination loggers up to DEBUG; measure at
    # the level a deployment runs, where each message builds no log record.
    logging.getLogger("coordination").setLevel(logging.INFO)
    from coordination.services import services

    return services.pubsub_manager


# Receivers (child processes): print "ready", then one JSON line of results.


def receive(mode, channel, expect, timeout):
    got = []

    def record(message):
        got.append((now_us() - message["t"], now_us()))

    deadline = time.monotonic() + timeout
    if mode == "raw":
        import redis

        client = redis.Redis.from_url(redis_url())
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel)
        print("ready", flush=True)
        while len(got) < expect and time.monotonic() < deadline:
            msg = pubsub.get_message(timeout=1)
            if msg:
                record(json.loads(msg["data"]))
    elif mode.startswith("layer"):
        layer = make_layer("core" if mode == "layer-core" else "pubsub")

        async def run():
            name = await layer.new_channel()
            await layer.group_add(channel, name)
            print("ready", flush=True)
            while len(got) < expect and time.monotonic() < deadline:
                try:
                    msg = await asyncio.wait_for(layer.receive(name), 1)
                except TimeoutError:
                    continue
                record(msg)

        asyncio.run(run())
    else:
        import threading

        manager = setup_ours(channel, "core" if mode == "ours-core" else "pubsub")
        done = threading.Event()

        def handler(message):
            record(message)
            if len(got) >= expect:
                done.set()

        manager.subscribe("bench", handler)
        print("ready", flush=True)
        done.wait(timeout)
        manager.stop()
    print(json.dumps({"lat": [g[0] for g in got], "last": max(
        (g[1] for g in got), default=0), "count": len(got)}), flush=True)


# Publisher side (this process).


def start_receivers(mode, channel, expect, count, timeout=60):
    procs = [subprocess.Popen(
        [sys.executable, __file__, "--receiver", mode, channel, str(expect),
         str(timeout)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
    ) for _ in range(count)]
    for proc in procs:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"receiver {mode} failed to start: {line!r}")
    time.sleep(0.3)  # let the subscriptions settle on the server
    return procs


def collect(procs):
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


class Publisher:
    """Send with one mode's API from this process."""

    def __init__(self, mode, channel):
        self.mode, self.channel = mode, channel
        if mode == "raw":
            import redis

            client = redis.Redis.from_url(redis_url())
            self.send = lambda m: client.publish(channel, json.dumps(m))
        elif mode.startswith("layer"):
            self.loop = asyncio.new_event_loop()
            layer = make_layer("core" if mode == "layer-core" else "pubsub")

            async def send_many(messages, gap):
                for m in messages:
                    await layer.group_send(channel, {"type": "bench", **m})
                    if gap:
                        await asyncio.sleep(gap)

            self.send_many = lambda ms, gap: self.loop.run_until_complete(
                send_many(ms, gap))
        else:
            from coordination.services import services

            manager = services.pubsub_manager
            self.send = lambda m: manager.publish("bench", m)

    def close(self):
        if hasattr(self, "loop"):
            self.loop.close()
        if self.mode.startswith("ours"):
            from coordination.services import services

            services.reset()

    def run(self, n, gap):
        messages = ({"t": None, "i": i} for i in range(n))
        if hasattr(self, "send_many"):
            def stamped():
                for m in messages:
                    m["t"] = now_us()
                    yield m
            self.send_many(stamped(), gap)
            return
        for m in messages:
            m["t"] = now_us()
            self.send(m)
            if gap:
                time.sleep(gap)


def measure(mode, receivers, n_latency, n_burst):
    channel = f"bench-{uuid.uuid4().hex[:8]}"
    if mode.startswith("ours"):
        # Publisher and receivers share the app name (the channel's namespace).
        setup_ours(channel, "core" if mode == "ours-core" else "pubsub")
    publisher = Publisher(mode, channel)
    publisher.run(20, 0.002)  # warm up connections (not counted)
    procs = start_receivers(mode, channel, n_latency, receivers)
    publisher.run(n_latency, 0.002)
    lat = [x for r in collect(procs) for x in r["lat"]]
    procs = start_receivers(mode, channel, n_burst, receivers)
    start = now_us()
    publisher.run(n_burst, 0)
    sent = now_us()
    results = collect(procs)
    last = max(r["last"] for r in results)
    received = sum(r["count"] for r in results)
    publisher.close()
    return {
        "mode": mode, "receivers": receivers,
        "p50": statistics.median(lat), "p99": sorted(lat)[int(len(lat) * .99) - 1],
        "send_rate": n_burst / ((sent - start) / 1e6),
        "rate": n_burst / ((last - start) / 1e6),
        "lost": n_burst * receivers - received,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--receiver", nargs=4)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.receiver:
        mode, channel, expect, timeout = args.receiver
        return receive(mode, channel, int(expect), float(timeout))
    import django

    django.setup()
    n_lat, n_burst = (100, 1000) if args.quick else (200, 2000)
    rows = [measure(mode, 1, n_lat, n_burst) for mode in
            ("raw", "layer", "ours", "layer-core", "ours-core")]
    rows += [measure("ours", k, n_lat, n_burst) for k in (4, 8)]
    by = {(r["mode"], r["receivers"]): r for r in rows}
    layer = by[("layer", 1)]
    print(f"Redis {redis_url()}; {n_lat} spaced messages for latency, "
          f"a burst of {n_burst} for throughput\n")
    print(f"{'mode':<11}{'recv':>5}{'p50 us':>9}{'p99 us':>9}{'x layer':>9}"
          f"{'send/s':>9}{'recv/s':>9}{'x layer':>9}{'lost':>6}")
    for r in rows:
        print(f"{r['mode']:<11}{r['receivers']:>5}{r['p50']:>9.0f}{r['p99']:>9.0f}"
              f"{r['p50'] / layer['p50']:>9.2f}{r['send_rate']:>9.0f}"
              f"{r['rate']:>9.0f}{r['rate'] / layer['rate']:>9.2f}{r['lost']:>6}")


if __name__ == "__main__":
    main()
