"""The one place that checks names and encodes payloads.

Every service validates its channels, cache names, prefixes, keys and lock
keys with :func:`validate_name`, and turns messages, payloads and cache values
into JSON with :func:`dumps`, so the rules are the same on every backend.
"""

import json
import unicodedata

from .exceptions import ChannelNameError, PayloadError

MAX_NAME_LENGTH = 200


def validate_name(name, kind="channel"):
    """Return ``name`` if it is a valid name, else raise ChannelNameError.

    A name is a str of 1 to 200 characters with no whitespace and no control
    characters. ``kind`` only words the error ("channel", "lock key", ...).
    """
    if not isinstance(name, str):
        raise ChannelNameError(
            f"A {kind} must be a str, not {type(name).__name__}: {name!r}."
        )
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ChannelNameError(
            f"A {kind} must be 1 to {MAX_NAME_LENGTH} characters long; "
            f"{name[:40]!r} has {len(name)}."
        )
    for position, char in enumerate(name):
        if char.isspace() or unicodedata.category(char) == "Cc":
            raise ChannelNameError(
                f"The {kind} {name!r} has a whitespace or control character "
                f"({char!r}) at position {position}; use a name without "
                f"spaces, tabs or newlines, such as {_suggest(name)!r}."
            )
    return name


def _suggest(name):
    cleaned = "".join(
        "_" if c.isspace() or unicodedata.category(c) == "Cc" else c for c in name
    )
    return cleaned.strip("_") or "name"


def _reject(value):
    raise PayloadError(
        f"{type(value).__name__} is not JSON: messages, payloads and cache "
        f"values must be dicts, lists, str, int, float, bool or None. "
        f"Convert {value!r:.60} first (for example to str or a dict)."
    )


def dumps(value, *, what="payload"):
    """Encode ``value`` as compact JSON, raising PayloadError if it cannot.

    Only JSON types are accepted: dict keys must be str, floats must be
    finite, and tuples, sets, dates and other objects are refused rather than
    silently converted, so a value reads back exactly as it was written.
    """
    _check_json(value, what)
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"The {what} cannot be encoded as JSON: {exc}") from exc


def _check_json(value, what, depth=0):
    # json.dumps would accept tuples (as lists) and non-str dict keys (as
    # str); both would read back as something else, so refuse them here.
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise PayloadError(
                f"The {what} holds {value!r}, which JSON cannot represent; "
                "use None or a finite number."
            )
        return
    if depth > 100:
        raise PayloadError(f"The {what} is nested more than 100 levels deep.")
    if isinstance(value, list):
        for item in value:
            _check_json(item, what, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(
                    f"The {what} has a dict key {key!r} of type "
                    f"{type(key).__name__}; JSON object keys must be str."
                )
            _check_json(item, what, depth + 1)
        return
    if isinstance(value, tuple):
        raise PayloadError(
            f"The {what} holds a tuple, which JSON would read back as a list; "
            "pass a list instead."
        )
    _reject(value)


def loads(data):
    """Decode JSON text or bytes produced by :func:`dumps`."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")
    return json.loads(data)


def canonical(value):
    """JSON with sorted keys: equal messages give equal strings (debounce)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False)
