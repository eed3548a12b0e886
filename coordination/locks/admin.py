"""Admin for locks: held locks with owner, age and time left; force release.

With the database backend the page lists the lock rows. With any other
backend (redis, local) it lists what the backend reports (Redis is read with
SCAN), since those locks have no rows. Force release needs the change
permission and is logged.
"""

import logging
from datetime import datetime, timezone

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from ..services import services
from .backends.database import DatabaseBackend
from .models import LockRecord

logger = logging.getLogger(__name__)


def seconds(delta):
    return f"{max(delta.total_seconds(), 0):.1f} s"


def owner_text(owner):
    if not isinstance(owner, dict) or not owner:
        return "-"
    text = f"{owner.get('instance', '?')} (pid {owner.get('pid', '?')})"
    if owner.get("purpose"):
        text += f": {owner['purpose']}"
    return text


@admin.register(LockRecord)
class LockRecordAdmin(admin.ModelAdmin):
    list_display = ["key", "namespace", "fencing", "holder", "age", "time_left"]
    search_fields = ["key"]
    actions = ["force_release"]
    readonly_fields = ["namespace", "key", "fencing", "owner", "acquired_at",
                       "expires_at"]
    exclude = ["owner_token"]

    def get_queryset(self, request):
        # Held locks only; a released row is kept for its fencing number.
        now = datetime.now(timezone.utc)
        return (super().get_queryset(request).exclude(owner_token="")
                .filter(expires_at__gt=now))

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # Deleting a row would restart its fencing number: release instead.
        return False

    @admin.display(description="owner")
    def holder(self, obj):
        return owner_text(obj.owner)

    @admin.display(description="age")
    def age(self, obj):
        return seconds(datetime.now(timezone.utc) - obj.acquired_at)

    @admin.display(description="time left")
    def time_left(self, obj):
        return seconds(obj.expires_at - datetime.now(timezone.utc))

    @admin.action(description="Force-release selected locks",
                  permissions=["change"])
    def force_release(self, request, queryset):
        released = []
        configured = services.lock_manager.backend
        options = configured.options if isinstance(
            configured, DatabaseBackend) else {}
        for row in queryset:
            backend = DatabaseBackend(row.namespace, options)
            try:
                if backend.force_release(row.key):
                    released.append(row.key)
            finally:
                backend.close()
            _log_release(request, row.key, row.namespace, row.owner)
        self.message_user(
            request, f"Released {len(released)} lock(s): {', '.join(released)}"
            if released else "No lock was held any more.")

    # -- locks of other backends ----------------------------------------------

    def get_urls(self):
        return [
            path("held/", self.admin_site.admin_view(self.backend_view),
                 name="coordination_lockrecord_held"),
        ] + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        backend = services.lock_manager.backend
        if not (isinstance(backend, DatabaseBackend) and backend.lists_rows):
            return self.backend_view(request)
        return super().changelist_view(request, extra_context)

    def backend_view(self, request):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        manager = services.lock_manager
        if request.method == "POST":
            if not self.has_change_permission(request):
                raise PermissionDenied
            key = request.POST.get("key", "")
            held = [r for r in manager.held_locks() if r["key"] == key]
            if manager.force_release(key):
                self.message_user(request, f"Released {key}.")
            else:
                self.message_user(request, f"{key} was not held any more.",
                                  messages.WARNING)
            _log_release(request, key, services.name,
                         held[0]["owner"] if held else None)
            return HttpResponseRedirect(
                reverse("admin:coordination_lockrecord_changelist"))
        now = datetime.now(timezone.utc)
        rows = [{
            **row,
            "holder": owner_text(row["owner"]),
            "age": seconds(now - row["acquired_at"]) if row["acquired_at"]
            else "-",
            "time_left": seconds(row["expires_at"] - now) if row["expires_at"]
            else "-",
        } for row in manager.held_locks()]
        context = {
            **self.admin_site.each_context(request),
            "title": "Held locks",
            "opts": self.model._meta,
            "rows": rows,
            "backend": type(manager.backend).__name__,
            "namespace": services.name,
            "can_release": self.has_change_permission(request),
        }
        return TemplateResponse(
            request, "admin/coordination/lockrecord/held.html", context)


def _log_release(request, key, namespace, owner):
    logger.warning(
        "Lock force-released from the admin lock=%s app=%s owner=%s by user=%s",
        key, namespace, owner, request.user.get_username(),
        extra={"action": "lock_force_release", "lock": key},
    )
