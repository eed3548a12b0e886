"""Backend lookup shared by every service.

A backend setting is a short name registered here (built-ins, or one added
with ``register``) or a dotted path to a class. Errors say which setting to
change and list the choices.
"""

from django.utils.module_loading import import_string

from .exceptions import ConfigurationError

# Built-in backends per settings section, by short name.
BUILTIN = {
    "PUBSUB": {
        "local": "coordination.pubsub.backends.local.LocalBackend",
        "channels": "coordination.pubsub.backends.channels.ChannelsBackend",
    },
    "EVENT_QUEUE": {
        "database": "coordination.queue.backends.database.DatabaseBackend",
        "celery": "coordination.queue.backends.celery.CeleryBackend",
    },
    "LOCKS": {
        "local": "coordination.locks.backends.local.LocalBackend",
        "database": "coordination.locks.backends.database.DatabaseBackend",
        "redis": "coordination.locks.backends.redis.RedisBackend",
    },
}

_registered = {section: {} for section in BUILTIN}


def register(section, name, backend_class):
    """Make ``name`` usable as ``COORDINATION[section]["BACKEND"]``."""
    if section not in BUILTIN:
        raise ConfigurationError(
            f"Unknown backend section {section!r}; choose one of "
            f"{', '.join(sorted(BUILTIN))}."
        )
    if not isinstance(name, str) or not name:
        raise ConfigurationError("A backend name must be a non-empty str.")
    _registered[section][name] = backend_class


def choices(section):
    return sorted({**BUILTIN[section], **_registered[section]})


def resolve(section, name, base=None):
    """Return the backend class for ``name`` in ``section``.

    Raises ConfigurationError naming the setting and the known names when the
    backend is unknown, cannot be imported, or is not a ``base`` subclass.
    """
    setting = f'COORDINATION["{section}"]["BACKEND"]'
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            f"{setting} must be a backend name or dotted path; choose one of "
            f"{', '.join(choices(section))}."
        )
    if name in _registered[section]:
        backend_class = _registered[section][name]
    else:
        path = BUILTIN[section].get(name, name)
        if "." not in path:
            raise ConfigurationError(
                f"{setting} is {name!r}, which is not a known backend; choose "
                f"one of {', '.join(choices(section))}, or give the dotted "
                "path of a backend class."
            )
        try:
            backend_class = import_string(path)
        except ImportError as exc:
            raise ConfigurationError(
                f"{setting} is {name!r}, but {path!r} cannot be imported "
                f"({exc}). Install the backend's extra or fix the path."
            ) from exc
    if base is not None and not (
        isinstance(backend_class, type) and issubclass(backend_class, base)
    ):
        raise ConfigurationError(
            f"{setting} is {name!r}, which is not a subclass of "
            f"{base.__module__}.{base.__qualname__}."
        )
    return backend_class


def check_options(section, backend_class, options):
    """Error messages for a backend's OPTIONS (empty list when all is well).

    A backend lists what it needs in ``required_options`` and what it accepts
    in ``allowed_options`` (None: anything upper case).
    """
    prefix = f'COORDINATION["{section}"]["OPTIONS"]'
    errors = []
    if not isinstance(options, dict):
        return [f"{prefix} must be a dict, not {type(options).__name__}."]
    for key in options:
        if not isinstance(key, str) or key != key.upper():
            errors.append(f"{prefix} key {key!r} must be upper case.")
    for key in getattr(backend_class, "required_options", ()):
        if key not in options:
            errors.append(
                f"{prefix} needs {key!r} for the "
                f"{backend_class.__name__} backend."
            )
    allowed = getattr(backend_class, "allowed_options", None)
    if allowed is not None:
        for key in options:
            if key not in allowed and key not in getattr(
                backend_class, "required_options", ()
            ):
                errors.append(
                    f"{prefix} has {key!r}, which the {backend_class.__name__} "
                    f"backend does not know; it accepts "
                    f"{', '.join(sorted(allowed)) or 'none'}."
                )
    validate = getattr(backend_class, "validate_options", None)
    if validate is not None:
        errors.extend(validate(options))
    return errors


def configured(section, config, base):
    """The backend class and OPTIONS of ``config`` (``settings.<section>``).

    Raises ConfigurationError with every problem found, for first use at run
    time; the system checks report the same messages at start-up.
    """
    backend_class = resolve(section, config.get("BACKEND"), base)
    options = config.get("OPTIONS") or {}
    errors = check_options(section, backend_class, options)
    if errors:
        raise ConfigurationError(" ".join(errors))
    return backend_class, options
