"""System checks for the ``COORDINATION`` setting.

They run at start-up (``runserver``, ``migrate``, ``check``) and say which key
to change, so a typo fails the deploy instead of the first request.
"""

import numbers

from django.conf import settings as django_settings
from django.core.checks import Error, Tags, register

from . import backends
from .conf import BACKEND_SECTIONS, DEFAULTS, settings
from .exceptions import ChannelNameError, ConfigurationError
from .names import validate_name

BASES = {
    "PUBSUB": "coordination.pubsub.backends.base.BasePubSubBackend",
    "EVENT_QUEUE": "coordination.queue.backends.base.BaseQueueBackend",
    "LOCKS": "coordination.locks.backends.base.BaseLockBackend",
}


def _error(msg, hint=None, n=1):
    return Error(msg, hint=hint, obj="settings.COORDINATION",
                 id=f"coordination.E{n:03d}")


@register(Tags.compatibility)
def check_settings(app_configs=None, **kwargs):
    user = settings.user
    if not isinstance(user, dict):
        return [_error(
            f"COORDINATION must be a dict, not {type(user).__name__}.",
            "Set COORDINATION = {...} with the keys listed in the README.",
            1,
        )]
    errors = []
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        errors.append(_error(
            f"COORDINATION has unknown keys: {', '.join(map(repr, unknown))}.",
            f"Known keys: {', '.join(sorted(DEFAULTS))}.", 2,
        ))
    errors += _check_app_name()
    errors += _check_cache_stores()
    for section in BACKEND_SECTIONS:
        errors += _check_backend(section)
    errors += _check_lock_ttl()
    errors += _check_heartbeat()
    return errors


def _check_app_name():
    try:
        validate_name(settings.APP_NAME, "APP_NAME")
    except ChannelNameError as exc:
        return [_error(f'COORDINATION["APP_NAME"] is invalid: {exc}', n=3)]
    return []


def _check_cache_stores():
    stores = settings.CACHE_STORES
    if not isinstance(stores, dict) or not stores:
        return [_error(
            'COORDINATION["CACHE_STORES"] must be a non-empty dict mapping '
            "store names to CACHES aliases.",
            'For example {"memory": "default", "redis": "redis"}.', 4,
        )]
    errors = []
    caches = getattr(django_settings, "CACHES", {})
    for store, alias in stores.items():
        if alias not in caches:
            errors.append(_error(
                f'COORDINATION["CACHE_STORES"][{store!r}] names the cache '
                f"alias {alias!r}, which is not in CACHES.",
                f"Add {alias!r} to CACHES or map {store!r} to one of "
                f"{', '.join(map(repr, caches)) or 'your CACHES aliases'}.",
                5,
            ))
    default = settings.DEFAULT_CACHE_STORE
    if default not in stores:
        errors.append(_error(
            f'COORDINATION["DEFAULT_CACHE_STORE"] is {default!r}, which is '
            "not a key of CACHE_STORES.",
            f"Use one of {', '.join(map(repr, stores))}.", 6,
        ))
    return errors


def _check_backend(section):
    config = settings.as_dict()[section]
    if not isinstance(config, dict):
        return [_error(
            f'COORDINATION["{section}"] must be a dict with a "BACKEND" key.',
            n=7,
        )]
    errors = []
    extra = sorted(set(config) - BACKEND_SECTIONS[section])
    if extra:
        errors.append(_error(
            f'COORDINATION["{section}"] has unknown keys: '
            f"{', '.join(map(repr, extra))}.",
            f"Known keys: {', '.join(sorted(BACKEND_SECTIONS[section]))}.", 8,
        ))
    try:
        from django.utils.module_loading import import_string

        base = import_string(BASES[section])
    except ImportError:
        base = None
    try:
        backend_class = backends.resolve(section, config.get("BACKEND"), base)
    except ConfigurationError as exc:
        errors.append(_error(str(exc), n=9))
        return errors
    for message in backends.check_options(
        section, backend_class, config.get("OPTIONS", {})
    ):
        errors.append(_error(message, n=10))
    return errors


def _check_lock_ttl():
    ttl = settings.LOCKS.get("DEFAULT_TTL") if isinstance(
        settings.LOCKS, dict) else None
    if isinstance(ttl, bool) or not isinstance(ttl, numbers.Real) or ttl <= 0:
        return [_error(
            f'COORDINATION["LOCKS"]["DEFAULT_TTL"] is {ttl!r}; it must be a '
            "positive number of seconds.", "For example 30.", 11,
        )]
    return []


def _check_heartbeat():
    config = settings.HEARTBEAT
    value = config.get("INTERVAL") if isinstance(config, dict) else config
    if not isinstance(config, dict) or (value is not None and (
        isinstance(value, bool) or not isinstance(value, numbers.Real)
        or value < 0
    )):
        return [_error(
            'COORDINATION["HEARTBEAT"] must be {"INTERVAL": seconds}, with 0 '
            f"or None to turn heartbeats off; got {config!r}.", n=12,
        )]
    return []
