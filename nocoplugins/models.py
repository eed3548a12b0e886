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


class ClusterDashboard(PluginState):
    """No data of its own: gives the dashboard a place and a permission in
    the admin (``nocoplugins.view_clusterdashboard``)."""

    class Meta:
        proxy = True
        verbose_name = "cluster dashboard"
        verbose_name_plural = "cluster dashboard"
