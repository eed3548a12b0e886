"""The embedded default: worker threads in each process claim event rows.

Each started process runs one fetcher thread and ``WORKERS`` worker threads.
The fetcher claims as many due events as there are free workers (and free
slots in each channel's ``concurrency``) and hands them over. A publish in
this process wakes the fetcher at once; events published elsewhere are found
by polling every ``POLL_INTERVAL`` seconds. Any instance can finish another
instance's work, since the table is the queue.
"""

import logging
import os
import threading
import time
import queue as queue_module

from django.db import connections
from django.utils import timezone

from ... import forksafe
from .. import store
from ..manager import tidy_connections
from .base import COMMON_OPTIONS, BaseQueueBackend

logger = logging.getLogger(__name__)


class DatabaseBackend(BaseQueueBackend):
    allowed_options = set(COMMON_OPTIONS) | {"WORKERS", "POLL_INTERVAL", "PREFETCH"}
    defaults = {
        **COMMON_OPTIONS,
        "WORKERS": 4,
        "POLL_INTERVAL": 1.0,
        # Events claimed ahead of free workers, so one query claims many.
        # None: max(WORKERS, 8). Use 0 for long handlers, so that no event
        # waits here behind them while another instance is idle.
        "PREFETCH": None,
    }
    number_options = BaseQueueBackend.number_options + ("POLL_INTERVAL",)

    @classmethod
    def validate_options(cls, options):
        errors = super().validate_options(options)
        prefetch = options.get("PREFETCH")
        if prefetch is not None and (
            isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0
        ):
            errors.append(
                f'COORDINATION["EVENT_QUEUE"]["OPTIONS"]["PREFETCH"] is '
                f"{prefetch!r}; it must be an int >= 0 or None."
            )
        workers = options.get("WORKERS", 4)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            errors.append(
                f'COORDINATION["EVENT_QUEUE"]["OPTIONS"]["WORKERS"] is '
                f"{workers!r}; it must be an int >= 1 (threads per process)."
            )
        return errors

    def __init__(self, queue, options):
        super().__init__(queue, options)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._fetcher = None
        self._pid = None
        self._pool = None
        self._jobs = None
        self._busy = 0
        self._due = None  # monotonic time of the next known delayed event

    def start(self):
        with self._lock:
            if (self._fetcher is not None and self._fetcher.is_alive()
                    and self._pid == os.getpid()):
                return
            self._pid = os.getpid()
            self._stopping.clear()
            self._busy = 0
            self._jobs = queue_module.SimpleQueue()
            self._pool = [
                threading.Thread(target=self._work, name=f"coordination-event-{n}",
                                 daemon=True)
                for n in range(self.options["WORKERS"])
            ]
            for thread in self._pool:
                thread.start()
            self._fetcher = threading.Thread(
                target=self._loop, name="coordination-event-fetcher", daemon=True
            )
            self._fetcher.start()
        logger.debug("Started workers=%s instance=%s", self.options["WORKERS"],
                     self.queue.owner, extra={"action": "start"})

    def stop(self):
        with self._lock:
            fetcher, pool = self._fetcher, self._pool
            self._fetcher = self._pool = None
            self._stopping.set()
            self._wake.set()
        if fetcher is not None and fetcher.is_alive():
            fetcher.join(30)
        if pool:
            self._give_back()
        for _ in pool or ():
            self._jobs.put(None)
        for thread in pool or ():
            thread.join()

    def _give_back(self):
        # Claimed ahead but not started: release them for other instances
        # rather than make stop() wait for them.
        while True:
            try:
                event, sub = self._jobs.get_nowait()
            except queue_module.Empty:
                return
            try:
                store.unclaim(event)
            except Exception:
                logger.exception("Giving back event=%s failed; its lease will "
                                 "expire", event.pk, extra={"action": "stop"})
            self.queue.release(event, sub)
            with self._lock:
                self._busy -= 1

    def dispatch(self, event):
        delay = (event.run_after - timezone.now()).total_seconds()
        if delay > 0:
            due = time.monotonic() + delay
            with self._lock:
                if self._due is None or due < self._due:
                    self._due = due
        self._wake.set()

    def _loop(self):
        failures = 0
        while not self._stopping.is_set():
            self._wake.wait(self._next_wait(failures))
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                with forksafe.busy():
                    self._fill()
                failures = 0
            except Exception:
                failures += 1
                logger.exception(
                    "Claiming events failed instance=%s; backing off",
                    self.queue.owner, extra={"action": "claim"},
                )
            finally:
                tidy_connections()
        connections.close_all()

    def _next_wait(self, failures):
        if failures:
            return min(self.options["POLL_INTERVAL"] * 2 ** failures, 30)
        wait = self.options["POLL_INTERVAL"]
        with self._lock:
            if self._due is not None:
                left = self._due - time.monotonic()
                if left <= 0:
                    self._due = None
                    return 0
                wait = min(wait, left)
        return wait

    @property
    def capacity(self):
        prefetch = self.options["PREFETCH"]
        workers = self.options["WORKERS"]
        return workers + (max(workers, 8) if prefetch is None else prefetch)

    def _fill(self):
        """Claim events while workers (and channel slots) are free."""
        lease, max_lost = self.options["LEASE"], self.options["MAX_LOST"]
        while not self._stopping.is_set():
            claimed = 0
            for sub in list(self.queue._subscriptions.values()):
                free = self.capacity - self._busy
                # Refill in batches, unless the workers are about to idle.
                if free <= 0 or (free < self.capacity // 2
                                 and self._busy > self.options["WORKERS"]):
                    return
                if not sub.accepts_work():
                    continue
                wanted = sub.reserve(free)
                if not wanted:
                    continue
                try:
                    rows = store.claim(self.queue.owner, lease, channel=sub.channel,
                                       limit=wanted, max_lost=max_lost)
                except Exception:
                    sub.release(wanted)
                    raise
                if len(rows) < wanted:
                    sub.release(wanted - len(rows))
                for row in rows:
                    self.queue.hold(row)
                    with self._lock:
                        self._busy += 1
                    self._jobs.put((row, sub))
                claimed += len(rows)
            if not claimed:
                return

    def _work(self):
        # Successes are written in batches while more work is waiting, and
        # at once when the worker runs out of it.
        successes = []
        first = 0.0
        while True:
            job = self._jobs.get()
            if job is None:
                break
            self._run(*job, successes)
            if successes and not first:
                first = time.monotonic()
            if successes and (len(successes) >= 50 or self._jobs.empty()
                              or time.monotonic() - first > 0.1):
                self._flush(successes)
                first = 0.0
        self._flush(successes)
        connections.close_all()

    def _flush(self, successes):
        if not successes:
            return
        try:
            with forksafe.busy():
                store.succeed_many(successes)
        except Exception:
            logger.exception(
                "Recording %s successes failed; their leases will expire and "
                "they run again", len(successes), extra={"action": "record"},
            )
        finally:
            successes.clear()
            self._wake.set()

    def _run(self, event, sub, successes):
        try:
            self.queue.execute(event, sub, successes)
        except Exception:
            logger.exception(
                "Recording the outcome failed event=%s channel=%s; the lease "
                "will expire and it runs again", event.pk, event.channel,
                extra={"action": "run"},
            )
        finally:
            with self._lock:
                self._busy -= 1
            self._wake.set()
