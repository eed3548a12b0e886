import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sampleproject.settings")
application = get_asgi_application()

from nocoplugins import app  # noqa: E402

app.start()
