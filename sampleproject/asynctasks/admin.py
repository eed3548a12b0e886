from django.contrib import admin

from nocoplugins import app

from .models import Task


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["title", "status", "progress", "steps", "instance", "created_at"]
    list_filter = ["status"]
    readonly_fields = ["progress", "status", "event_id", "instance"]
    actions = ["cancel_tasks"]

    @admin.action(description="Cancel selected tasks", permissions=["change"])
    def cancel_tasks(self, request, queryset):
        plugin = app.plugin_manager.get("asynctasks")
        for task in queryset:
            plugin.cancel_task(task.pk)
        self.message_user(request, f"Cancelled {queryset.count()} task(s).")
