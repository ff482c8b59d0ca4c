"""The bounds of ``_rules.validate`` and ``_rules.cursors``, at and one past each limit."""

from __future__ import annotations

import base64
import json
import math
from datetime import timedelta
from typing import Any

import pytest

from tests.core.test_decide import row
from threadkeep import InvalidInput, Limits
from threadkeep._ids import check_id, new_id
from threadkeep._rules import cursors, validate
from threadkeep._rules.validate import MAX_DEPTH, MAX_INT


def nested(depth: int, container: str = "dict") -> Any:
    value: Any = {} if container == "dict" else []
    for _ in range(depth - 1):
        value = {"n": value} if container == "dict" else [value]
    return value


@pytest.mark.parametrize("container", ["dict", "list"])
def test_depth_is_bounded_at_max_depth(container: str) -> None:
    validate.check_depth(nested(MAX_DEPTH, container), "x")
    with pytest.raises(InvalidInput, match=f"deeper than {MAX_DEPTH}"):
        validate.check_depth(nested(MAX_DEPTH + 1, container), "x")
    with pytest.raises(InvalidInput):  # no RecursionError however deep
        validate.dump_json(nested(100_000, container), "x", 10**9)


@pytest.mark.parametrize(
    "value", [math.nan, [math.inf], {"a": -math.inf}, "\ud800", {"\udfff": 1}, {1j: 1}, object()]
)
def test_dump_json_refuses_what_is_not_json(value: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate.dump_json(value, "value", 1000)
    assert caught.value.field == "value"


def test_dump_json_counts_utf8_bytes() -> None:
    assert validate.dump_json("é" * 3, "v", 8) == '"ééé"'  # 8 bytes
    with pytest.raises(InvalidInput, match="over the limit of 7 bytes"):
        validate.dump_json("é" * 3, "v", 7)


def test_metadata_must_be_an_object_with_text_keys() -> None:
    limits = Limits()
    assert validate.dump_metadata(None, limits) == "{}"
    for bad in ([1], "x", {1: 2}):
        with pytest.raises(InvalidInput):
            validate.dump_metadata(bad, limits)


@pytest.mark.parametrize("value", [0, 1, MAX_INT])
def test_non_negative_integers_up_to_max_int(value: int) -> None:
    assert validate.check_non_negative(value, "n") == value


@pytest.mark.parametrize("value", [-1, MAX_INT + 1, True, 1.0, "1", None])
def test_anything_else_is_refused(value: Any) -> None:
    with pytest.raises(InvalidInput, match=str(MAX_INT)):
        validate.check_non_negative(value, "n")


@pytest.mark.parametrize(
    "lease, us",
    [(1, 1_000_000), (0.5, 500_000), (timedelta(days=365), 365 * 86_400_000_000), (1e-9, 1)],
)
def test_leases(lease: Any, us: int) -> None:
    assert validate.check_lease(lease) == us


@pytest.mark.parametrize(
    "lease", [0, -1, math.nan, math.inf, 1e300, timedelta(days=366), True, "1", None]
)
def test_bad_leases(lease: Any) -> None:
    with pytest.raises(InvalidInput):
        validate.check_lease(lease)


@pytest.mark.parametrize("timeout, seconds", [(None, None), (0, 0.0), (2, 2.0), (0.25, 0.25)])
def test_timeouts(timeout: Any, seconds: float | None) -> None:
    assert validate.check_timeout(timeout) == seconds


@pytest.mark.parametrize("timeout", [-1, math.nan, math.inf, True, "1"])
def test_bad_timeouts(timeout: Any) -> None:
    with pytest.raises(InvalidInput):
        validate.check_timeout(timeout)


def test_page_cursors_round_trip() -> None:
    last = row(id="01abc", activity_us=123)
    assert cursors.decode_page(cursors.encode_page(last)) == (123, "01abc")


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _b64([MAX_INT + 1, "a"]),
        _b64([-1, "a"]),
        _b64([True, "a"]),
        _b64([1.5, "a"]),
        _b64([1, "a b"]),
        _b64([1, "\ud800"]),
        _b64([1]),
        _b64("[" * 120),
        "x" * 201,
        "%%%",
        None,
    ],
)
def test_crafted_page_cursors_are_refused(cursor: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        cursors.decode_page(cursor)
    assert caught.value.field == "cursor"


@pytest.mark.parametrize(
    "after, number", [("0", 0), ("7", 7), ("7-0", 7), (str(MAX_INT), MAX_INT), (None, None)]
)
def test_event_cursors(after: str | None, number: int | None) -> None:
    assert cursors.parse_event(after) == number


@pytest.mark.parametrize(
    "after", ["", "-1", "1-1", "²", "①", " 1", "1 ", str(MAX_INT + 1), "1" * 20, 7, b"7"]
)
def test_bad_event_cursors(after: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        cursors.parse_event(after)
    assert caught.value.field == "after"


def test_ids() -> None:
    assert new_id(1000) < new_id(2000) and len(new_id(0)) == 26
    made = new_id(5)
    assert check_id(made) == made and check_id("a-B_9") == "a-B_9"
    for bad in ("", "a b", "x" * 65, "../x", None, 3, "abc\n", "a-b\n", "x" * 64 + "\n"):
        with pytest.raises(InvalidInput):
            check_id(bad)


def test_an_id_of_letters_and_digits_is_checked_as_the_pattern_checks_it() -> None:
    # plain ASCII letters and digits skip the regex: what else is alphanumeric is refused
    assert check_id("x" * 64) == "x" * 64 and check_id("A1") == "A1"
    for bad in ("é", "x" * 64 + "é", "１２", "٣", "x" * 65, "ß" * 3):
        assert bad.isalnum()
        with pytest.raises(InvalidInput):
            check_id(bad)

    class Name(str):
        pass

    assert check_id(Name("ab1")) == "ab1"  # a str subclass: the regex, as before


def _base32_digit_by_digit(value: int) -> str:
    """The ULID spelling of a 130-bit value, one Crockford digit at a time (the reference)."""
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    return "".join(alphabet[value >> shift & 31] for shift in range(125, -1, -5))


@pytest.mark.parametrize(
    ("now_us", "random"),
    [
        (0, b"\0" * 10),
        (0, b"\xff" * 10),
        (((1 << 48) - 1) * 1000, b"\xff" * 10),
        (1_764_547_200_123_456, bytes(range(10))),
        (1 << 70, b"\x80" + b"\0" * 9),  # past the 48-bit millisecond range: wraps
    ],
)
def test_new_id_spells_the_time_and_random_bits(
    monkeypatch: pytest.MonkeyPatch, now_us: int, random: bytes
) -> None:
    monkeypatch.setattr("threadkeep._ids.os.urandom", lambda n: random[:n])
    value = (now_us // 1000) % (1 << 48) << 80 | int.from_bytes(random, "big")
    assert new_id(now_us) == _base32_digit_by_digit(value)
