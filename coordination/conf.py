"""The ``COORDINATION`` setting, read through one object with defaults.

``coordination.conf.settings`` is rebuilt whenever Django's settings change
(tests use ``override_settings``), so no module caches a stale value.
"""

import copy

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS = {
    "APP_NAME": "main",
    "CACHE_STORES": {"memory": "default"},
    "DEFAULT_CACHE_STORE": "memory",
    "PUBSUB": {"BACKEND": "local", "OPTIONS": {}},
    "EVENT_QUEUE": {"BACKEND": "database", "OPTIONS": {}},
    "LOCKS": {"BACKEND": "database", "DEFAULT_TTL": 30, "OPTIONS": {}},
    "HEARTBEAT": {"INTERVAL": 10},
}

# Sections that name a backend, with the keys each may hold besides OPTIONS.
BACKEND_SECTIONS = {
    "PUBSUB": {"BACKEND", "OPTIONS"},
    "EVENT_QUEUE": {"BACKEND", "OPTIONS"},
    "LOCKS": {"BACKEND", "OPTIONS", "DEFAULT_TTL"},
}


class CoordinationSettings:
    """Attribute access to ``settings.COORDINATION`` merged over DEFAULTS.

    Backend sections are merged key by key, so ``{"LOCKS": {"BACKEND":
    "redis", "OPTIONS": {...}}}`` keeps the default ``DEFAULT_TTL``.
    Validation happens in the system checks (``coordination.checks``).
    """

    def __init__(self):
        self._data = None

    @property
    def user(self):
        """The raw setting as the project wrote it (a dict, maybe empty)."""
        value = getattr(django_settings, "COORDINATION", {})
        return value if value is not None else {}

    def _load(self):
        data = copy.deepcopy(DEFAULTS)
        user = self.user
        if not isinstance(user, dict):
            # The check reports it; run on defaults meanwhile.
            return data
        for key, value in user.items():
            if key == "HEARTBEAT" and isinstance(value, dict):
                data[key] = {**data[key], **value}
            elif key in BACKEND_SECTIONS and isinstance(value, dict):
                section = dict(data[key])
                section.update(value)
                section.setdefault("OPTIONS", {})
                if section["OPTIONS"] is None:
                    section["OPTIONS"] = {}
                data[key] = section
            else:
                data[key] = value
        return data

    def as_dict(self):
        if self._data is None:
            self._data = self._load()
        return self._data

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.as_dict()[name]
        except KeyError:
            raise AttributeError(
                f"COORDINATION has no setting {name!r}"
            ) from None

    def reload(self):
        self._data = None


settings = CoordinationSettings()


@receiver(setting_changed)
def _reload_settings(*, setting, **kwargs):
    if setting in ("COORDINATION", "CACHES", "CHANNEL_LAYERS"):
        settings.reload()
        # Services built from the old settings are stale now.
        from .services import services

        services.reset()
