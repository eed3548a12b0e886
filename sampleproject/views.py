from django.shortcuts import render

from nocoplugins import app

WHAT = {
    "notes": "start-up hooks and install()",
    "authpolicy": "a database read cached once per cluster with wrap()",
    "datasource": "sync messages after commit, run_exclusive for schema changes",
    "asynctasks": "event queue with concurrency, idle gate and cancel via pub/sub",
}


def home(request):
    plugins = [(p, p.enabled, WHAT.get(p.name, "")) for p in app.plugin_manager]
    return render(request, "sample/home.html", {
        "plugins": plugins, "instance": app.instance_id,
    })
