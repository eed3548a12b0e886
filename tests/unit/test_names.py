import math

import pytest

from coordination.exceptions import ChannelNameError, PayloadError
from coordination.names import canonical, dumps, loads, validate_name


@pytest.mark.parametrize(
    "name", ["a", "x" * 200, "plugin:users", "ключ", "a/b.c-d_e", "🔒"]
)
def test_valid_names_pass_through(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "x" * 201, "a b", "tab\there", "new\nline", "nul\x00", "bell\x07", "\u2003"],
)
def test_invalid_names_raise_channel_name_error(name):
    with pytest.raises(ChannelNameError):
        validate_name(name, "lock key")


def test_name_error_is_a_value_error_and_says_what_to_do():
    with pytest.raises(ValueError) as info:
        validate_name("my channel", "channel")
    assert "my_channel" in str(info.value)
    assert "position 2" in str(info.value)


@pytest.mark.parametrize("name", [None, 42, b"bytes"])
def test_non_str_names_are_refused(name):
    with pytest.raises(ChannelNameError, match="must be a str"):
        validate_name(name)


@pytest.mark.parametrize(
    "value", [None, True, 0, -1.5, "s", [], {}, {"a": [1, {"b": None}]}, 2**70]
)
def test_json_values_round_trip(value):
    assert loads(dumps(value)) == value


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1: "a"},
        (1, 2),
        {"t": (1,)},
        {1, 2},
        b"x",
        math.nan,
        math.inf,
        [float("-inf")],
    ],
)
def test_non_json_values_raise_payload_error(value):
    with pytest.raises(PayloadError):
        dumps(value)


def test_payload_error_is_a_type_error_and_names_the_type():
    class Thing:
        pass

    with pytest.raises(TypeError, match="Thing is not JSON"):
        dumps({"x": Thing()}, what="message")


def test_loads_accepts_bytes():
    assert loads(dumps({"é": 1}).encode()) == {"é": 1}


def test_canonical_sorts_keys():
    assert canonical({"b": 1, "a": 2}) == canonical({"a": 2, "b": 1})
