"""Admin pages of the coordination services, one module per service."""
from .locks import admin as locks_admin  # noqa: F401
