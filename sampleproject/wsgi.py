import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sampleproject.settings")
application = get_wsgi_application()

# Start this instance's listeners, workers and heartbeat with the server.
from nocoplugins import app  # noqa: E402

app.start()
