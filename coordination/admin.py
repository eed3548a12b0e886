"""Admin pages of the coordination services, one module per service."""

from .queue import admin as queue_admin  # noqa: F401
