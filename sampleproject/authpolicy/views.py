from django.http import JsonResponse

from nocoplugins import app


def policy(request):
    plugin = app.plugin_manager.get("authpolicy")
    return JsonResponse({"instance": app.instance_id, "policy": plugin.policy()})
