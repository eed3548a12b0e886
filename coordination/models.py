"""Models of the coordination services, one module per service."""

from datetime import timedelta

from django.db import models
from django.utils import timezone

# Each service keeps its own module; importing it registers it.
from .locks.models import LockRecord  # noqa: F401
from .queue.models import Event  # noqa: F401


class InstanceQuerySet(models.QuerySet):
    def alive(self, now=None):
        """Instances whose last beat is within three intervals."""
        from .heartbeat import interval

        now = now or timezone.now()
        window = timedelta(seconds=3 * (interval() or 10))
        return self.filter(stopped_at__isnull=True, last_seen__gte=now - window)


class Instance(models.Model):
    """One running process of the cluster, kept fresh by its heartbeat."""

    id = models.CharField(max_length=200, primary_key=True)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    kind = models.CharField(max_length=50, help_text="web, worker or a command")
    app_name = models.CharField(max_length=200)
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    objects = InstanceQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self):
        return self.id

    @property
    def alive(self):
        return Instance.objects.alive().filter(pk=self.pk).exists()
