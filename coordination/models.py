"""Models of the coordination services, one module per service."""

from .queue.models import Event  # noqa: F401
