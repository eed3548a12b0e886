"""Admin for events: browse by channel and status, retry, cancel, purge."""

from django.contrib import admin, messages
from django.db import transaction

from ..services import services
from .models import Event

FINISHED = (Event.Status.SUCCEEDED, Event.Status.FAILED, Event.Status.CANCELLED)


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = (
        "id", "channel", "status", "attempts", "max_retries", "timed_out",
        "error_summary", "created", "run_after", "finished", "lease_owner",
    )
    list_filter = ("status", "channel", "timed_out")
    search_fields = ("channel", "last_error")
    ordering = ("-id",)
    actions = ("retry_events", "cancel_events", "purge_events")
    readonly_fields = tuple(
        f.name for f in Event._meta.fields
    )

    def has_add_permission(self, request):
        return False  # events come from event_queue.publish

    @admin.display(description="last error")
    def error_summary(self, event):
        lines = event.last_error.strip().splitlines()
        return lines[-1][:120] if lines else ""

    @admin.action(description="Retry selected failed or cancelled events",
                  permissions=("change",))
    def retry_events(self, request, queryset):
        self._each(request, queryset, services.event_queue.retry,
                   "put back to pending", "not failed or cancelled")

    @admin.action(description="Cancel selected pending or running events",
                  permissions=("change",))
    def cancel_events(self, request, queryset):
        self._each(request, queryset, services.event_queue.cancel,
                   "cancelled", "already finished")

    def _each(self, request, queryset, operation, done, skipped):
        with transaction.atomic():
            changed = sum(operation(pk) for pk in queryset.values_list(
                "pk", flat=True))
        self._report(request, changed, queryset, done, skipped)

    @admin.action(description="Purge selected finished events",
                  permissions=("delete",))
    def purge_events(self, request, queryset):
        deleted, _ = queryset.filter(status__in=FINISHED).delete()
        self._report(request, deleted, queryset, "deleted",
                     "pending or running (cancel them first)")

    def _report(self, request, changed, queryset, done, skipped_why):
        total = len(queryset)
        self.message_user(request, f"{changed} event(s) {done}.", messages.SUCCESS)
        if changed < total:
            self.message_user(
                request, f"{total - changed} skipped: {skipped_why}.",
                messages.WARNING,
            )
