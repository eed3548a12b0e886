from django.db import models


class PluginState(models.Model):
    """Whether a plugin is enabled, and when it was installed, per database."""

    name = models.CharField(max_length=200, primary_key=True)
    enabled = models.BooleanField(default=True)
    installed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "plugin"
        verbose_name_plural = "plugins"

    def __str__(self):
        return self.name
