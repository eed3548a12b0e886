"""``app.event_queue``: durable background events with retries and timeouts."""

import asyncio
import datetime
import inspect
import logging
import numbers
import os
import threading
import time
import traceback
from functools import partial
from typing import Any, Callable

from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.utils import timezone

from .. import backends, forksafe
from ..conf import settings
from ..exceptions import ChannelNotSubscribed, EventAborted
from ..names import dumps, validate_name
from . import store
from .context import CANCELLED, TIMEOUT, Context
from .models import Event
from .subscription import Subscription

logger = logging.getLogger(__name__)
keeper_logger = logging.getLogger(__name__ + ".lease")


class EventQueue:
    """Publish events to channels and process them on any instance.

    Every event is an ``Event`` row written in the publisher's transaction;
    the backend only decides how instances hear about it (worker threads
    polling the table, or a Celery message per event). Running an event is
    shared here: claim the row, call the handler with a signal that fires on
    timeout or cancel, renew the lease while it runs, record the outcome.
    """

    def __init__(self, services):
        self._services = services
        self._subscriptions: dict[str, Subscription] = {}
        self._running: dict[int, Context] = {}
        self._lock = threading.RLock()
        self._backend = None
        self._started = False
        self._keeper = None
        self._keeper_pid = None
        self._stopping = threading.Event()

    # Configuration

    @property
    def backend(self):
        if self._backend is None:
            from .backends.base import BaseQueueBackend

            backend_class, options = backends.configured(
                "EVENT_QUEUE", settings.EVENT_QUEUE, BaseQueueBackend
            )
            self._backend = backend_class(self, options)
        return self._backend

    @property
    def owner(self) -> str:
        return self._services.instance_id

    def option(self, name):
        return self.backend.options[name]

    # Subscriptions

    def subscribe(
        self,
        channel: str,
        *,
        process: Callable[[Any, Context], Any],
        idle: Callable[[], bool] | None = None,
        concurrency: int | None = 1,
    ) -> None:
        """Handle ``channel``'s events here with ``process(payload, context)``.

        Subscribing a channel again replaces its handler and limits.
        ``idle()`` returning False holds new work back on this instance;
        ``concurrency`` bounds the channel's events running at once here
        (None: no limit; 1: one at a time, in order).
        """
        validate_name(channel, "channel")
        if not callable(process):
            raise TypeError(
                f"process must be a callable taking (payload, context), not "
                f"{process!r}."
            )
        if idle is not None and not callable(idle):
            raise TypeError(f"idle must be a callable returning bool, not {idle!r}.")
        if concurrency is not None and (
            isinstance(concurrency, bool)
            or not isinstance(concurrency, int)
            or concurrency < 1
        ):
            raise ValueError(
                f"concurrency must be a positive int or None (no limit), not "
                f"{concurrency!r}."
            )
        with self._lock:
            old = self._subscriptions.get(channel)
            sub = Subscription(channel, process, idle, concurrency)
            if old is not None:
                # Events already running still count against the new limit.
                sub.running = old.running
            self._subscriptions[channel] = sub
        logger.debug("Subscribed channel=%s concurrency=%s", channel, concurrency,
                     extra={"action": "subscribe"})
        self.start()

    def unsubscribe(self, channel: str) -> bool:
        validate_name(channel, "channel")
        with self._lock:
            return self._subscriptions.pop(channel, None) is not None

    def subscription(self, channel) -> Subscription | None:
        return self._subscriptions.get(channel)

    def channels(self) -> list[str]:
        return list(self._subscriptions)

    # Publishing and managing events

    def publish(
        self,
        channel: str,
        payload: Any,
        *,
        timeout: float | None = None,
        max_retries: int = 0,
        delay: float | None = None,
        using: str | None = None,
    ) -> int:
        """Write an event and dispatch it after the transaction commits.

        Returns the event id. Inside ``transaction.atomic()`` the row belongs
        to that transaction: a rollback removes it and nothing runs.
        """
        validate_name(channel, "channel")
        if channel not in self._subscriptions:
            raise ChannelNotSubscribed(
                f"No subscription for channel {channel!r} in this process; "
                f"call event_queue.subscribe({channel!r}, process=...) first "
                "(every instance that publishes or processes must subscribe)."
            )
        payload_json = dumps(payload, what="event payload")
        _check_seconds("timeout", timeout)
        _check_seconds("delay", delay, zero=True)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or (
            max_retries < 0
        ):
            raise ValueError(
                f"max_retries must be an int >= 0, not {max_retries!r}."
            )
        alias = using or store.db_alias()
        now = timezone.now()
        run_after = now + datetime.timedelta(seconds=delay or 0)
        backend = self.backend
        event = Event(
            channel=channel, payload=payload, max_retries=max_retries,
            timeout=timeout, created=now, run_after=run_after,
            dispatched_at=now if backend.sends_at_once(delay or 0) else None,
        )
        store.insert(event, alias, payload_json)
        transaction.on_commit(partial(self._dispatch, event), using=alias)
        logger.debug(
            "Published event=%s channel=%s size=%s", event.pk, channel,
            len(payload_json), extra={"action": "publish"},
        )
        return event.pk

    def _dispatch(self, event):
        try:
            self.backend.dispatch(event)
        except Exception:
            # The row is committed: housekeeping or polling will run it.
            logger.exception(
                "Dispatch failed event=%s channel=%s; it stays pending and is "
                "picked up later", event.pk, event.channel,
                extra={"action": "dispatch"},
            )

    def get(self, event_id: int) -> Event | None:
        return Event.objects.using(store.db_alias(False)).filter(
            pk=event_id
        ).first()

    def retry(self, event_id: int, *, using: str | None = None) -> bool:
        """Put a failed or cancelled event back to pending, attempts at 0."""
        alias = using or store.db_alias()
        if not store.retry(event_id, alias):
            return False
        event = Event.objects.using(alias).get(pk=event_id)
        transaction.on_commit(partial(self._dispatch, event), using=alias)
        logger.info("Retrying event=%s channel=%s", event_id, event.channel,
                    extra={"action": "retry"})
        return True

    def cancel(self, event_id: int, *, using: str | None = None) -> bool:
        """Cancel a pending event, or abort a running one (it ends cancelled)."""
        alias = using or store.db_alias()
        if not store.cancel(event_id, alias):
            return False
        logger.info("Cancelled event=%s", event_id, extra={"action": "cancel"})
        # A local runner hears at once; others at their next lease check.
        transaction.on_commit(partial(self._abort, event_id, CANCELLED),
                              using=alias)
        return True

    def purge(self, *, status: str | None = None, channel: str | None = None,
              using: str | None = None) -> int:
        """Delete finished events (one ``status`` of them); return how many.

        Pending and running events are never purged: cancel them first.
        """
        finished = (store.SUCCEEDED, store.FAILED, store.CANCELLED)
        if status is not None and status not in finished:
            raise ValueError(
                f"Only finished events can be purged; status must be one of "
                f"{', '.join(finished)}, not {status!r}. Cancel pending or "
                "running events first."
            )
        qs = Event.objects.using(using or store.db_alias()).filter(
            status__in=[status] if status else finished
        )
        if channel is not None:
            qs = qs.filter(channel=channel)
        deleted, _ = qs.delete()
        logger.info("Purged %s events status=%s channel=%s", deleted, status,
                    channel, extra={"action": "purge"})
        return deleted

    def stats(self) -> dict[str, dict[str, int]]:
        """Event counts: {channel: {status: count}}."""
        from django.db.models import Count

        counts: dict[str, dict[str, int]] = {}
        rows = Event.objects.using(store.db_alias(False)).values(
            "channel", "status").annotate(n=Count("id")).order_by("channel")
        for row in rows:
            counts.setdefault(row["channel"], {})[row["status"]] = row["n"]
        return counts

    # Async twins, for async views and consumers: the ORM work runs in
    # Django's thread for sync code, as sync_to_async does everywhere.

    async def apublish(self, channel: str, payload: Any, **options) -> int:
        return await sync_to_async(self.publish)(channel, payload, **options)

    async def aget(self, event_id: int) -> Event | None:
        return await sync_to_async(self.get)(event_id)

    async def aretry(self, event_id: int, **options) -> bool:
        return await sync_to_async(self.retry)(event_id, **options)

    async def acancel(self, event_id: int, **options) -> bool:
        return await sync_to_async(self.cancel)(event_id, **options)

    def _abort(self, event_id, reason):
        context = self._running.get(event_id)
        if context is not None:
            context.signal.abort(reason)

    # Lifecycle

    def start(self) -> None:
        with self._lock:
            self._started = True
            self._stopping.clear()
        self.backend.start()
        self._ensure_keeper()

    def stop(self) -> None:
        """Stop workers and wait for running events; subscriptions stay."""
        with self._lock:
            self._started = False
            self._stopping.set()
        if self._backend is not None:
            self._backend.stop()
        keeper = self._keeper
        if keeper is not None and keeper.is_alive():
            keeper.join(10)
        self._keeper = None

    def _ensure_keeper(self):
        with self._lock:
            alive = (
                self._keeper is not None and self._keeper_pid == os.getpid()
                and self._keeper.is_alive()
            )
            if alive or self._stopping.is_set():
                return
            self._keeper_pid = os.getpid()
            self._keeper = threading.Thread(
                target=self._keep, name="coordination-queue-lease", daemon=True
            )
            self._keeper.start()

    def _keep(self):
        """Renew leases, notice cancels, and run the backend's housekeeping."""
        interval = min(self.option("LEASE") / 3, self.option("CHECK_INTERVAL"))
        next_sweep = 0.0
        failures = 0
        while not self._stopping.wait(interval if not failures else
                                      min(interval * 2 ** failures, 30)):
            with forksafe.busy():
                try:
                    self._renew()
                    if time.monotonic() >= next_sweep:
                        next_sweep = time.monotonic() + self.option("SWEEP_INTERVAL")
                        store.give_up_lost(self.option("MAX_LOST"))
                        self.backend.housekeeping()
                    failures = 0
                except Exception:
                    failures += 1
                    keeper_logger.exception(
                        "Lease renewal failed instance=%s; backing off",
                        self.owner, extra={"action": "renew"},
                    )
                finally:
                    tidy_connections()
        connections.close_all()

    def _renew(self):
        running = dict(self._running)
        if not running:
            return
        states = store.renew(self.owner, list(running), self.option("LEASE"))
        for event_id, context in running.items():
            state = states.get(event_id)
            if state == store.RUNNING or self._running.get(event_id) is not context:
                continue  # still ours, or it finished while we looked
            if state == store.CANCELLED:
                context.signal.abort(CANCELLED)
                continue
            keeper_logger.warning(
                "Lost the lease of event=%s (now %s) instance=%s; aborting it "
                "here", event_id, state, self.owner,
                extra={"action": "lease_lost"},
            )
            context.signal.abort(CANCELLED)

    # Running events (called by the backends)

    def hold(self, event: Event) -> Context:
        """Register a claimed event: its lease is renewed from now on.

        A backend that claims several events at once holds them all, so a
        cancel reaches them before they start.
        """
        context = Context(event.pk, event.attempts - 1, event.channel)
        self._running[event.pk] = context
        self._ensure_keeper()
        return context

    def execute(self, event: Event, sub: Subscription,
                successes: list | None = None) -> str | None:
        """Run a claimed event's handler and record the outcome.

        The caller reserved a slot on ``sub``; it is released here. Returns
        the new status (None when the row was no longer ours). With a
        ``successes`` list, a success is appended to it instead of written,
        for the caller to record several at once (``store.succeed_many``).
        """
        context = self._running.get(event.pk) or self.hold(event)
        if context.signal.aborted:
            # Cancelled (or lost) while it waited for a worker.
            self.release(event, sub)
            return None
        timer = None
        if event.timeout:
            timer = threading.Timer(event.timeout, context.signal.abort, (TIMEOUT,))
            timer.daemon = True
            timer.start()
        error = None
        try:
            error = self._call(sub, event, context)
        finally:
            if timer is not None:
                timer.cancel()
            self.release(event, sub)
        if error is None and successes is not None and context.signal.reason is None:
            successes.append(event)
            return store.SUCCEEDED
        return self._record(event, context, error)

    def release(self, event: Event, sub: Subscription) -> None:
        """Forget a held event and free its slot on the channel."""
        self._running.pop(event.pk, None)
        # A subscribe() meanwhile moved the count to the new subscription.
        (self._subscriptions.get(event.channel) or sub).release()

    def _call(self, sub, event, context):
        # A transaction already open belongs to whoever runs us (a Celery
        # task run eagerly inside the caller's atomic block): not ours.
        callers = {conn.alias for conn in connections.all(initialized_only=True)
                   if conn.in_atomic_block}
        tidy_connections(callers)
        started = time.monotonic()
        try:
            result = sub.process(event.payload, context)
            if inspect.isawaitable(result):
                asyncio.run(_await(result))
            return None
        except EventAborted as exc:
            return f"EventAborted: {exc.reason}"
        except Exception:
            return traceback.format_exc()
        finally:
            logger.debug(
                "Ran event=%s channel=%s attempt=%s in %.3fs", event.pk,
                event.channel, context.attempt, time.monotonic() - started,
                extra={"action": "run"},
            )
            tidy_connections(callers)

    def _record(self, event, context, error):
        reason = context.signal.reason
        if reason == CANCELLED:
            logger.info("Event cancelled while running event=%s channel=%s",
                        event.pk, event.channel, extra={"action": "cancelled"})
            return None
        if reason == TIMEOUT:
            detail = f"\n{error}" if error and "EventAborted" not in error else ""
            error = f"Timed out after {event.timeout:g} s{detail}"
        if error is None:
            return store.SUCCEEDED if store.succeed(event) else None
        delay = None
        if event.attempts <= event.max_retries:
            delay = store.backoff(event.attempts, self.option("RETRY_DELAY"),
                                  self.option("RETRY_DELAY_MAX"))
        status = store.fail(
            event, error, timed_out=reason == TIMEOUT, delay=delay,
            dispatched=delay is not None and self.backend.sends_at_once(delay),
        )
        log = logger.warning if status == store.PENDING else logger.error
        log(
            "Event failed event=%s channel=%s attempt=%s status=%s: %s",
            event.pk, event.channel, context.attempt, status,
            error.strip().splitlines()[-1], extra={"action": "failed"},
        )
        if status == store.PENDING:
            self._dispatch(event)
        return status

    def running(self) -> list[int]:
        return list(self._running)


def tidy_connections(skip=()):
    """Drop database connections a handler broke; keep healthy ones open.

    Background threads keep their connections across events (reconnecting
    per event costs more than a no-op event). A connection that saw an
    error and no longer answers, or that a handler left inside a
    transaction, is closed, so the next query opens a fresh one. The
    aliases in ``skip`` are left alone.
    """
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.alias in skip:
            continue
        if conn.in_atomic_block or (
            conn.get_autocommit() != conn.settings_dict["AUTOCOMMIT"]
        ):
            conn.close()
        elif conn.errors_occurred:
            store.close_if_broken(conn)


async def _await(awaitable):
    return await awaitable


def _check_seconds(name, value, zero=False):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
        value < 0 or (value == 0 and not zero) or value != value
    ):
        raise ValueError(
            f"{name} must be a positive number of seconds or None, not "
            f"{value!r}."
        )
