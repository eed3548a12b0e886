from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from nocoplugins import app


def _plugin():
    return app.plugin_manager.get("datasource")


def index(request):
    return render(request, "sample/datasource.html", {
        "schema": _plugin().schema(), "instance": app.instance_id,
    })


def schema(request):
    return JsonResponse({"instance": app.instance_id, "schema": _plugin().schema()})


@require_POST
def add_field(request):
    _plugin().add_field(
        request.POST["collection"], request.POST["name"],
        request.POST.get("type", "string"),
    )
    return redirect("datasource-index")


@require_POST
def delete_field(request):
    deleted = _plugin().delete_field(request.POST["collection"], request.POST["name"])
    if request.headers.get("accept") == "application/json":
        return JsonResponse({"deleted": deleted})
    return redirect("datasource-index")
