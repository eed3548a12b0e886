"""Models of the coordination services, one module per service."""
from .locks.models import LockRecord  # noqa: F401
