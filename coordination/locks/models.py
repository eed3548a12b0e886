"""The lock table of the database backend: one row per key, kept on release."""

from django.db import models


class LockRecord(models.Model):
    """A key's lease. A free key keeps its row (empty ``owner_token``) so that
    its fencing number keeps growing and release is a cheap UPDATE."""

    namespace = models.CharField(max_length=200)
    key = models.CharField(max_length=200)
    owner_token = models.CharField(
        max_length=64, blank=True, default="",
        help_text="Secret of the current holder; empty when free.",
    )
    fencing = models.BigIntegerField(
        default=0, help_text="Grows with every acquisition of the key.",
    )
    owner = models.JSONField(
        default=dict, blank=True,
        help_text="Who holds it: instance, host, pid, command, purpose.",
    )
    acquired_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        app_label = "coordination"
        db_table = "coordination_lock"
        verbose_name = "lock"
        ordering = ["namespace", "key"]
        constraints = [
            models.UniqueConstraint(
                fields=["namespace", "key"], name="coordination_lock_key",
            ),
        ]

    def __str__(self):
        return self.key
