"""The event row: the durable record of every published event."""

from django.db import models
from django.utils import timezone


class Event(models.Model):
    """One published event and what happened to it.

    The row is the source of truth on every backend: a broker message or a
    worker wake-up only says "look at event N"; whoever claims the row (a
    conditional update) runs it, so a duplicate delivery runs nothing twice.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    channel = models.CharField(max_length=200)
    payload = models.JSONField(null=True, blank=True)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveIntegerField(
        default=0, help_text="Tries started, the current one included."
    )
    max_retries = models.PositiveIntegerField(default=0)
    timeout = models.FloatField(
        null=True, blank=True, help_text="Seconds per attempt; empty: none."
    )
    timed_out = models.BooleanField(
        default=False, help_text="The last failed attempt ran out of time."
    )
    last_error = models.TextField(
        blank=True, default="", help_text="Error and traceback of the last "
        "failed attempt."
    )
    created = models.DateTimeField(default=timezone.now)
    run_after = models.DateTimeField(
        default=timezone.now, help_text="Not run before this time (delay, "
        "retry backoff)."
    )
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(
        max_length=200, blank=True, default="",
        help_text="Instance running the event.",
    )
    lease_expires = models.DateTimeField(
        null=True, blank=True, help_text="After this time another instance "
        "may take the event over (its runner died)."
    )
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When a broker message was last sent "
        "for it (Celery backend)."
    )

    class Meta:
        app_label = "coordination"
        verbose_name = "event"
        verbose_name_plural = "events"
        indexes = [
            models.Index(
                fields=["status", "channel", "run_after"],
                name="coordination_event_claim",
            ),
        ]

    def __str__(self):
        return f"event {self.pk} on {self.channel} ({self.status})"

    @property
    def done(self) -> bool:
        return self.status in (
            self.Status.SUCCEEDED, self.Status.FAILED, self.Status.CANCELLED
        )
