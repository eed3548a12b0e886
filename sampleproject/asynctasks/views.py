from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from nocoplugins import app

from .models import Task


def _plugin():
    return app.plugin_manager.get("asynctasks")


def index(request):
    return render(request, "sample/asynctasks.html", {
        "tasks": Task.objects.all()[:20], "instance": app.instance_id,
    })


def status(request, pk):
    task = Task.objects.get(pk=pk)
    return JsonResponse({
        "id": task.pk, "status": task.status, "progress": task.progress,
        "steps": task.steps, "instance": task.instance,
    })


@require_POST
def start(request):
    task = _plugin().start_task(
        request.POST.get("title", "demo task"),
        steps=int(request.POST.get("steps", 20)),
        step_seconds=float(request.POST.get("step_seconds", 0.5)),
    )
    if request.headers.get("accept") == "application/json":
        return JsonResponse({"id": task.pk, "event_id": task.event_id})
    return redirect("asynctasks-index")


@require_POST
def cancel(request, pk):
    _plugin().cancel_task(pk)
    if request.headers.get("accept") == "application/json":
        return JsonResponse({"cancelled": pk})
    return redirect("asynctasks-index")
