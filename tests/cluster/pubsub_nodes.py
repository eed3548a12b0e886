"""Instance processes for the pub/sub cluster tests, and their controller.

A node is a real Django process (``spawn("tests.cluster.pubsub_nodes:node",
...)``) on the Channels backend. It talks to the test process over pub/sub
itself: it announces itself on ``t.out``, runs the commands it gets on
``t.ctl`` and reports deliveries on ``t.out``. ``stop`` ends it, returning
what it received.
"""

import os
import threading
import time
import uuid

from django.db import transaction
from django.test import override_settings

from tests.support.processes import child_env, result, spawn
from tests.support.pubsub import channel_layers, channels_coordination

CTL, OUT, DATA, SYNC = "t.ctl", "t.out", "t.data", "t.sync"


def node(redis_url, app_name, layer="pubsub"):
    override_settings(
        CHANNEL_LAYERS=channel_layers(redis_url, layer),
        COORDINATION=channels_coordination(app_name, HEARTBEAT=1, RETRY_DELAY=0.2),
    ).enable()
    from nocoplugins import app

    return _Node(app).run()


class _Node:
    def __init__(self, app):
        self.app = app
        self.me = app.instance_id
        self.data = []
        self.sync = []
        self.done = threading.Event()

    def run(self, timeout=120):
        pubsub = self.app.pubsub_manager
        pubsub.subscribe(CTL, self.command)
        pubsub.subscribe(DATA, self.on_data)
        self.app.sync_message_manager.subscribe(SYNC, self.on_sync)
        self.reply("ready", pid=os.getpid())
        self.done.wait(timeout)
        return {"instance": self.me, "data": self.data, "sync": self.sync,
                "stats": pubsub.stats()}

    def reply(self, kind, **fields):
        self.app.pubsub_manager.publish(OUT, {"kind": kind, "from": self.me, **fields})

    def on_data(self, message):
        self.data.append(message)
        self.reply("data", message=message)

    def on_sync(self, message):
        # Did the transaction that sent this commit before it arrived?
        from tests.plugins.alpha.models import InstallCount

        row = InstallCount.objects.filter(database=message["marker"]).exists()
        self.sync.append({"marker": message["marker"], "row": row})
        self.reply("sync", marker=message["marker"], row=row)

    def command(self, cmd):
        if cmd.get("to") not in ("*", self.me):
            return
        do = cmd["do"]
        answer = getattr(self, f"do_{do}")(cmd)
        self.reply("done", req=cmd.get("req"), answer=answer)

    def do_stop(self, cmd):
        self.done.set()

    def do_publish(self, cmd):
        self.app.pubsub_manager.publish(
            cmd["channel"], cmd["message"], skip_self=cmd.get("skip_self", True),
            only_self=cmd.get("only_self", False),
        )

    def do_sync_atomic(self, cmd):
        from tests.plugins.alpha.models import InstallCount

        try:
            with transaction.atomic():
                InstallCount.objects.create(database=cmd["marker"])
                self.app.sync_message_manager.publish(SYNC, {"marker": cmd["marker"]})
                # Give a message sent too early every chance to overtake.
                time.sleep(0.3)
                if cmd.get("rollback"):
                    raise _Rollback
        except _Rollback:
            pass

    def do_disable(self, cmd):
        return self.app.plugin_manager.disable(cmd["plugin"])

    def do_enable(self, cmd):
        return self.app.plugin_manager.enable(cmd["plugin"])

    def do_plugin_send(self, cmd):
        self.app.plugin_manager.get(cmd["plugin"]).send_sync_message(cmd["message"])

    def do_plugins(self, cmd):
        manager = self.app.plugin_manager
        return {p.name: {"enabled": p.enabled, "messages": p.sync_messages}
                for p in manager}


class _Rollback(Exception):
    pass


class Controller:
    """The test process's side: spawn nodes, command them, collect replies.

    Use inside ``override_settings`` naming the same Redis and app name.
    """

    def __init__(self, app, redis_url, app_name, layer="pubsub"):
        self.app = app
        self.redis_url, self.app_name, self.layer = redis_url, app_name, layer
        self.replies = []
        self.cond = threading.Condition()
        self.processes = []
        app.pubsub_manager.subscribe(OUT, self._on_reply)

    def _on_reply(self, message):
        with self.cond:
            self.replies.append(message)
            self.cond.notify_all()

    def wait(self, predicate, timeout=30, what="replies"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [r for r in self.replies if predicate(r)]
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} within {timeout}s: {self.replies}")
                self.cond.wait(left)

    def poll(self, predicate, timeout=30, what="condition"):
        """Ask again (predicate may send commands) until it holds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not met within {timeout}s")
            time.sleep(0.05)

    def spawn(self, count, timeout=60):
        env = child_env(COORDINATION_APP_NAME=self.app_name)
        for _ in range(count):
            self.processes.append(spawn(
                "tests.cluster.pubsub_nodes:node", self.redis_url, self.app_name,
                self.layer, env=env,
            ))
        ready = self.wait(
            lambda r: r["kind"] == "ready" and len(
                [x for x in self.replies if x["kind"] == "ready"]) >= count,
            timeout, "ready nodes")
        ready = [r for r in self.replies if r["kind"] == "ready"]
        return [r["from"] for r in ready]

    def command(self, to, do, timeout=30, **fields):
        req = uuid.uuid4().hex
        self.app.pubsub_manager.publish(CTL, {"to": to, "do": do, "req": req, **fields})
        (reply,) = self.wait(lambda r: r.get("req") == req, timeout, f"answer to {do}")
        return reply["answer"]

    def count(self, kind, **fields):
        with self.cond:
            return [r for r in self.replies if r["kind"] == kind and all(
                r.get(k) == v for k, v in fields.items())]

    def stop(self):
        self.app.pubsub_manager.publish(CTL, {"to": "*", "do": "stop"})
        results = [result(p, timeout=60) for p in self.processes]
        return {r["instance"]: r for r in results}

    def kill(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
