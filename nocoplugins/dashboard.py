"""The cluster dashboard: one admin page to see the whole cluster.

It lists live instances (from their heartbeats), plugins and their state,
held locks, events by channel and status, and recent failures. The page
reloads its data from a JSON endpoint every few seconds.
"""

import logging
from collections import defaultdict

from django.utils import timezone

from coordination.models import Event, Instance
from coordination.services import services

from .application import app

logger = logging.getLogger(__name__)

STATUSES = ["pending", "running", "succeeded", "failed", "cancelled"]


def snapshot():
    """Everything the dashboard shows, as JSON-ready data."""
    now = timezone.now()
    return {
        "generated_at": now.isoformat(),
        "app_name": services.name,
        "served_by": services.instance_id,
        "instances": _instances(now),
        "plugins": _plugins(),
        "locks": _locks(now),
        "events": _events(),
        "failures": _failures(),
    }


def _instances(now):
    return [
        {
            "id": row.id, "kind": row.kind, "host": row.host, "pid": row.pid,
            "started_at": row.started_at.isoformat(),
            "last_seen_seconds": round((now - row.last_seen).total_seconds(), 1),
        }
        for row in Instance.objects.alive(now).order_by("kind", "id")
    ]


def _plugins():
    return [
        {"name": p.name, "app": p.app_config.name, "enabled": p.enabled,
         "installed": p.installed}
        for p in app.plugin_manager
    ]


def _locks(now):
    try:
        held = services.lock_manager.held_locks()
    except Exception as exc:
        # A lock server that is down must not take the dashboard with it.
        logger.warning("Dashboard could not list locks: %s", exc)
        return {"error": str(exc), "held": []}
    rows = []
    for lock in held:
        expires, acquired = lock.get("expires_at"), lock.get("acquired_at")
        rows.append({
            "key": lock["key"], "token": lock.get("token"),
            "owner": lock.get("owner") or {},
            "age_seconds": round((now - acquired).total_seconds(), 1)
            if acquired else None,
            "left_seconds": round((expires - now).total_seconds(), 1)
            if expires else None,
        })
    return {"error": None, "held": rows}


def _events():
    counts = defaultdict(lambda: dict.fromkeys(STATUSES, 0))
    from django.db.models import Count

    for row in Event.objects.values("channel", "status").annotate(n=Count("id")):
        counts[row["channel"]][row["status"]] = row["n"]
    return [{"channel": c, "counts": counts[c]} for c in sorted(counts)]


def _failures(limit=10):
    rows = Event.objects.filter(status="failed").order_by("-finished", "-id")[:limit]
    return [
        {"id": str(e.id), "channel": e.channel, "attempts": e.attempts,
         "finished": e.finished.isoformat() if e.finished else None,
         "error": (e.last_error or "").strip().splitlines()[-1:] or [""]}
        for e in rows
    ]
