from django.db import models


class Task(models.Model):
    STATUSES = [(s, s) for s in (
        "queued", "running", "succeeded", "failed", "cancelled"
    )]

    title = models.CharField(max_length=200)
    steps = models.PositiveIntegerField(default=20)
    step_seconds = models.FloatField(default=0.5)
    progress = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=20, choices=STATUSES, default="queued")
    event_id = models.CharField(max_length=64, blank=True)
    instance = models.CharField(max_length=200, blank=True,
                                help_text="the instance running it")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.title} ({self.status}, {self.progress}/{self.steps})"
