"""Instance heartbeats: which processes of the cluster are alive.

Each started process (``app.start()``) upserts its row in
``coordination.Instance`` every ``COORDINATION["HEARTBEAT"]["INTERVAL"]``
seconds from one daemon thread. The table is the cluster's roster: the
dashboard and ``manage.py instances`` read it, and any instance can tell a
peer is gone when its row goes stale (three missed beats).
"""

import logging
import os
import socket
import sys
import threading

from django.db import close_old_connections, connections
from django.utils import timezone

from . import forksafe, instance
from .conf import settings

logger = logging.getLogger(__name__)


def interval():
    return settings.HEARTBEAT.get("INTERVAL") or 0


def instance_kind():
    """A short word for what this process is: web, worker or a command."""
    argv = sys.argv or [""]
    program = os.path.basename(argv[0])
    if program == "__main__.py":
        # python -m package: name the package (celery, gunicorn, ...).
        program = os.path.basename(os.path.dirname(argv[0]))
    if program.startswith("celery"):
        return "worker"
    if program in ("manage.py", "django-admin") and len(argv) > 1:
        return "web" if argv[1] in ("runserver", "runworker") else argv[1]
    if any(w in program for w in ("gunicorn", "uvicorn", "daphne", "uwsgi")):
        return "web"
    return program or "python"


class Heartbeat:
    def __init__(self):
        self._thread = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pid = None

    def start(self):
        if not interval():
            return
        with self._lock:
            # A forked child inherits the flag but not the thread.
            alive = self._thread is not None and self._thread.is_alive()
            if alive and self._pid == os.getpid():
                return
            self._stop = threading.Event()
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="coordination-heartbeat", daemon=True
            )
            self._thread.start()

    def stop(self):
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None or self._pid != os.getpid():
            return
        self._stop.set()
        thread.join(timeout=10)

    def _run(self):
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    with forksafe.busy():
                        beat()
                    failures = 0
                except Exception:
                    failures += 1
                    logger.warning(
                        "Heartbeat failed instance=%s failures=%d",
                        instance.instance_id(), failures, exc_info=failures == 1,
                        extra={"action": "heartbeat_failed"},
                    )
                finally:
                    close_old_connections()
                self._stop.wait(interval() * (1 if not failures else 2))
            try:
                mark_stopped()
            except Exception:
                logger.debug("Could not mark instance stopped", exc_info=True)
        finally:
            connections.close_all()


def beat():
    from .models import Instance

    me = instance.describe()
    Instance.objects.update_or_create(
        id=me["instance"],
        defaults={
            "host": me["host"] or socket.gethostname(),
            "pid": me["pid"],
            "kind": instance_kind()[:50],
            "app_name": settings.APP_NAME,
            "last_seen": timezone.now(),
            "stopped_at": None,
        },
    )


def mark_stopped():
    from .models import Instance

    Instance.objects.filter(id=instance.instance_id()).update(
        stopped_at=timezone.now(), last_seen=timezone.now()
    )


heartbeat = Heartbeat()
