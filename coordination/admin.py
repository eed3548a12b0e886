"""Admin pages of the coordination services, one module per service."""

from django.contrib import admin

from .models import Instance

# Each service keeps its own module; importing it registers it.
from .locks import admin as locks_admin  # noqa: F401
from .queue import admin as queue_admin  # noqa: F401


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "host", "pid", "is_alive", "started_at", "last_seen"]
    list_filter = ["kind", "host"]
    search_fields = ["id", "host"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(boolean=True, description="alive")
    def is_alive(self, obj):
        return obj.stopped_at is None and obj in self._alive

    def get_queryset(self, request):
        self._alive = set(Instance.objects.alive())
        return super().get_queryset(request)
