"""Demo plugin: long tasks on the event queue, cancellable from anywhere.

A task is a row plus an event. Publishing the event happens in the same
transaction as the row, so a task is never queued without its row or the
other way round. Workers take at most two tasks at once per instance
(``concurrency=2``) and hold new ones back while the instance is busy serving
(``idle``). Progress goes to the row after each step. Cancelling is
broadcast on pub/sub: whichever instance runs the task stops it at the next
step, and the queue records the event as cancelled.
"""

import os
import threading

from django.db import transaction

from nocoplugins import Plugin

CHANNEL = "asynctasks.run"
CANCEL_CHANNEL = "asynctasks.cancel"


class AsyncTasksPlugin(Plugin):
    def load(self):
        self._running = {}  # task id -> threading.Event set on cancel
        self._guard = threading.Lock()
        self.app.event_queue.subscribe(
            CHANNEL, process=self.run_task, idle=self.idle, concurrency=2
        )
        self.app.pubsub_manager.subscribe(CANCEL_CHANNEL, self._cancel_here)

    def idle(self):
        """Hold new tasks back when the operator pauses this instance."""
        return not os.path.exists(os.environ.get(
            "ASYNCTASKS_PAUSE_FILE", "/nonexistent-pause-file"
        ))

    def start_task(self, title, steps=20, step_seconds=0.5):
        from .models import Task

        with transaction.atomic():
            task = Task.objects.create(title=title, steps=steps,
                                       step_seconds=step_seconds)
            task.event_id = str(self.app.event_queue.publish(
                CHANNEL, {"task": task.pk}, timeout=steps * step_seconds + 60
            ))
            task.save(update_fields=["event_id"])
        return task

    def cancel_task(self, task_id):
        """Stop a task wherever it runs; queued ones never start."""
        from .models import Task

        task = Task.objects.get(pk=task_id)
        self.app.event_queue.cancel(task.event_id)
        self.app.pubsub_manager.publish(
            CANCEL_CHANNEL, {"task": task.pk}, skip_self=False
        )
        Task.objects.filter(pk=task_id, status="queued").update(status="cancelled")

    def _cancel_here(self, message):
        with self._guard:
            stop = self._running.get(message.get("task"))
        if stop is not None:
            self.logger.info("cancelling task=%s instance=%s", message["task"],
                             self.app.instance_id)
            stop.set()

    def run_task(self, payload, context):
        from .models import Task

        task_id = payload["task"]
        stop = threading.Event()
        with self._guard:
            self._running[task_id] = stop
        try:
            task = Task.objects.get(pk=task_id)
            Task.objects.filter(pk=task_id).update(
                status="running", instance=self.app.instance_id
            )
            for step in range(task.progress, task.steps):
                if stop.wait(task.step_seconds) or context.signal.aborted:
                    Task.objects.filter(pk=task_id).update(status="cancelled")
                    context.signal.raise_if_aborted()
                    return
                Task.objects.filter(pk=task_id).update(progress=step + 1)
            Task.objects.filter(pk=task_id).update(status="succeeded")
        except Exception:
            if not context.signal.aborted and not stop.is_set():
                Task.objects.filter(pk=task_id).update(status="failed")
            raise
        finally:
            with self._guard:
                self._running.pop(task_id, None)
