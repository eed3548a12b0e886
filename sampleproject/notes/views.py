from django.http import HttpResponse
from django.utils.html import escape

from nocoplugins import app

from .models import Note


def index(request):
    plugin = app.plugin_manager.get("notes")
    if not plugin.enabled:
        return HttpResponse("The notes plugin is disabled.", status=404)
    rows = "".join(f"<li>{escape(n.text)}</li>" for n in Note.objects.all()[:20])
    return HttpResponse(
        f"<h1>Notes</h1><p>Instance {escape(app.instance_id)}</p><ul>{rows}</ul>"
        '<p><a href="/admin/">Admin</a></p>'
    )
