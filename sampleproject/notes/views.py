from django.http import HttpResponse
from django.utils.html import escape

from nocoplugins import app


def index(request):
    plugin = app.plugin_manager.get("notes")
    if not plugin.enabled:
        return HttpResponse("The notes plugin is disabled.", status=404)
    rows = "".join(f"<li>{escape(text)}</li>" for text in plugin.latest_notes())
    return HttpResponse(
        f"<h1>Notes</h1><p>Instance {escape(app.instance_id)}</p><ul>{rows}</ul>"
        '<p><a href="/admin/">Admin</a></p>'
    )
