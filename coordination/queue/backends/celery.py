"""The cluster backend: one Celery task per event, carrying only its id.

The task (``coordination.queue.run_event``) claims the row like any other
runner, so a message delivered twice, or resent by housekeeping, runs the
event once. Messages are JSON; nothing else crosses the broker.

Which Celery app sends: ``OPTIONS["APP"]``, the dotted path of a Celery
instance (for example ``"sampleproject.celery.app"``); without it, Celery's
current app, which is the project's app once its module is imported (the
usual ``from .celery import app`` in the project package). Workers must
import ``coordination.queue.tasks`` (``app.autodiscover_tasks()`` finds it
through ``coordination.tasks``) and subscribe every channel they run, as
the web processes do (plugins subscribe in ``load``).

Delays and retries up to ``BROKER_DELAY_MAX`` seconds travel as a countdown;
longer ones stay in the database and housekeeping sends them when due, since
a broker may redeliver an unacknowledged message after its visibility
timeout (Redis) or hold it in worker memory. Housekeeping also resends
events whose message was never sent (the publisher died after commit), was
sent ``REDISPATCH_AFTER`` seconds ago and is still pending (lost by the
broker), or whose runner died (the lease expired).
"""

import logging

from django.utils import timezone
from django.utils.module_loading import import_string

from ...exceptions import ConfigurationError
from .. import store
from .base import COMMON_OPTIONS, BaseQueueBackend

logger = logging.getLogger(__name__)

TASK_NAME = "coordination.queue.run_event"


class CeleryBackend(BaseQueueBackend):
    allowed_options = set(COMMON_OPTIONS) | {
        "APP", "QUEUE", "BROKER_DELAY_MAX", "REDISPATCH_AFTER",
        "TIME_LIMIT_GRACE", "HOLD_DELAY",
    }
    defaults = {
        **COMMON_OPTIONS,
        "APP": None,
        "QUEUE": "coordination",
        # Countdowns longer than this are kept in the database instead.
        "BROKER_DELAY_MAX": 60.0,
        # Resend a pending event whose message went out this long ago.
        "REDISPATCH_AFTER": 300.0,
        # Celery's soft time limit is timeout + grace, the hard one + 2 grace.
        "TIME_LIMIT_GRACE": 10.0,
        # When idle() is False or the channel is at its concurrency, the
        # message is sent again after this long.
        "HOLD_DELAY": 0.5,
    }
    number_options = BaseQueueBackend.number_options + (
        "BROKER_DELAY_MAX", "REDISPATCH_AFTER", "TIME_LIMIT_GRACE", "HOLD_DELAY",
    )

    @classmethod
    def validate_options(cls, options):
        errors = super().validate_options(options)
        for key in ("APP", "QUEUE"):
            value = options.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                errors.append(
                    f'COORDINATION["EVENT_QUEUE"]["OPTIONS"]["{key}"] must be a '
                    f"non-empty str, not {value!r}."
                )
        return errors

    def __init__(self, queue, options):
        super().__init__(queue, options)
        self._app = None

    @property
    def app(self):
        if self._app is None:
            path = self.options["APP"]
            if path:
                try:
                    self._app = import_string(path)
                except ImportError as exc:
                    raise ConfigurationError(
                        f'COORDINATION["EVENT_QUEUE"]["OPTIONS"]["APP"] is '
                        f"{path!r}, which cannot be imported ({exc}); give the "
                        "dotted path of your Celery app instance."
                    ) from exc
            else:
                from celery import current_app

                self._app = current_app._get_current_object()
        return self._app

    def sends_at_once(self, delay):
        return delay <= self.options["BROKER_DELAY_MAX"]

    def dispatch(self, event):
        delay = (event.run_after - timezone.now()).total_seconds()
        if self.sends_at_once(delay):
            self.send(event.pk, max(delay, 0), event.timeout)

    def send(self, event_id, countdown=0, timeout=None):
        limits = {}
        if timeout:
            grace = self.options["TIME_LIMIT_GRACE"]
            limits = {"soft_time_limit": timeout + grace,
                      "time_limit": timeout + 2 * grace}
        self.app.send_task(
            TASK_NAME, args=[event_id], queue=self.options["QUEUE"],
            countdown=countdown or None, serializer="json",
            ignore_result=True, **limits,
        )

    def housekeeping(self):
        """Send what no message is out for: delayed, lost, or never sent."""
        stale = self.options["REDISPATCH_AFTER"]
        horizon = min(self.options["BROKER_DELAY_MAX"],
                      self.options["SWEEP_INTERVAL"] * 2)
        now = timezone.now()
        for event_id, run_after, sent, timeout in store.undispatched(horizon, stale):
            # Compare and set: of all the instances sweeping, one sends.
            if not store.mark_sent(event_id, sent):
                continue
            countdown = max((run_after - now).total_seconds(), 0)
            logger.info("Sending event=%s again (%s)", event_id,
                        "never sent" if sent is None else "lost or stale",
                        extra={"action": "redispatch"})
            self.send(event_id, countdown, timeout)

    def run(self, event_id):
        """The task body: claim the event, run it if this worker may."""
        claimed = store.claim(
            self.queue.owner, self.options["LEASE"], event_id=event_id,
            max_lost=self.options["MAX_LOST"],
        )
        if not claimed:
            self._not_claimed(event_id)
            return None
        event = claimed[0]
        sub = self.queue.subscription(event.channel)
        if sub is not None and sub.accepts_work() and sub.reserve():
            return self.queue.execute(event, sub)
        # Not here, not now: give the claim back untouched.
        store.unclaim(event)
        if sub is None:
            logger.error(
                "No subscription for channel=%s in this worker (event=%s); "
                "subscribe it in every worker. The event stays pending and "
                "is sent again later", event.channel, event_id,
                extra={"action": "unsubscribed"},
            )
        else:
            self.send(event_id, self.options["HOLD_DELAY"], event.timeout)
        return None

    def _not_claimed(self, event_id):
        # Gone (rolled back, purged), finished (a duplicate message), or
        # running elsewhere with a live lease: that runner records it.
        # Pending but not due yet (sent early, or clocks differ): wait.
        row = store.waiting_row(event_id)
        if row is None:
            return
        run_after, timeout = row
        delay = (run_after - timezone.now()).total_seconds()
        if 0 < delay <= self.options["BROKER_DELAY_MAX"]:
            self.send(event_id, delay, timeout)
        elif delay > 0:
            store.unsent(event_id)
