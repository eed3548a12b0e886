from django.db import models


class TokenPolicy(models.Model):
    """How long API tokens live; one row, edited in the admin."""

    expires_in = models.PositiveIntegerField(default=3600, help_text="seconds")
    renew_on_use = models.BooleanField(default=True)
    max_tokens_per_user = models.PositiveIntegerField(default=5)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "token policy"

    def __str__(self):
        return f"tokens live {self.expires_in}s"

    def as_dict(self):
        return {
            "expires_in": self.expires_in,
            "renew_on_use": self.renew_on_use,
            "max_tokens_per_user": self.max_tokens_per_user,
        }
