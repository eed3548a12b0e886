import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse

from . import dashboard
from .application import app
from .models import ClusterDashboard, PluginState


@admin.register(PluginState)
class PluginStateAdmin(admin.ModelAdmin):
    list_display = ["name", "app_label", "enabled", "installed_at", "updated_at"]
    list_filter = ["enabled"]
    search_fields = ["name"]
    readonly_fields = ["name", "enabled", "installed_at", "updated_at"]
    actions = ["enable_plugins", "disable_plugins"]

    def has_add_permission(self, request):
        # Plugins come from INSTALLED_APPS; rows are made by migrate.
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="app")
    def app_label(self, obj):
        if obj.name in app.plugin_manager:
            return app.plugin_manager.get(obj.name).app_config.label
        return "(not installed)"

    @admin.action(description="Enable selected plugins", permissions=["change"])
    def enable_plugins(self, request, queryset):
        self._switch(request, queryset, app.plugin_manager.enable, "enabled")

    @admin.action(description="Disable selected plugins", permissions=["change"])
    def disable_plugins(self, request, queryset):
        self._switch(request, queryset, app.plugin_manager.disable, "disabled")

    def _switch(self, request, queryset, switch, verb):
        changed = []
        for state in queryset:
            if state.name not in app.plugin_manager:
                self.message_user(
                    request, f"{state.name} is not in INSTALLED_APPS.",
                    messages.WARNING,
                )
                continue
            if switch(state.name):
                changed.append(state.name)
        if changed:
            self.message_user(request, f"{verb.capitalize()}: {', '.join(changed)}.")
        else:
            self.message_user(request, f"Nothing to change: already {verb}.")


@admin.register(ClusterDashboard)
class ClusterDashboardAdmin(admin.ModelAdmin):
    """The cluster dashboard, shown instead of a change list."""

    refresh_seconds = 3

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        data = self.admin_site.admin_view(self.data_view)
        return [
            path("data.json", data, name="nocoplugins_clusterdashboard_data"),
        ] + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Cluster dashboard",
            "opts": self.model._meta,
            "snapshot": dashboard.snapshot(),
            "statuses": dashboard.STATUSES,
            "statuses_json": json.dumps(dashboard.STATUSES),
            "refresh_seconds": self.refresh_seconds,
            "data_url": reverse("admin:nocoplugins_clusterdashboard_data"),
        }
        return TemplateResponse(request, "nocoplugins/dashboard.html", context)

    def data_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return JsonResponse(dashboard.snapshot())
