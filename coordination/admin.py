"""Admin pages of the coordination services, one module per service."""
