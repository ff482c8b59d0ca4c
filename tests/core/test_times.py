"""``_rules.times``: microseconds since the epoch ⇄ aware UTC datetimes, exact both ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from threadkeep._rules.times import from_us, span_us, to_us

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST = to_us(datetime.min.replace(tzinfo=UTC))  # 0001-01-01, negative
LAST = to_us(datetime.max.replace(tzinfo=UTC))  # 9999-12-31 23:59:59.999999


def reference(value: int) -> datetime:
    """The datetime of ``value`` µs, by whole days, seconds and microseconds (no float)."""
    days, rest = divmod(value, 86_400_000_000)
    seconds, micros = divmod(rest, 1_000_000)
    return EPOCH + timedelta(days=days, seconds=seconds, microseconds=micros)


@pytest.mark.parametrize(
    "value",
    [
        0, 1, -1, 999_999, 1_000_000, 1_000_001, -999_999, -1_000_000, -1_000_001,
        1_764_500_000_123_456,  # 2025
        2**31 * 1_000_000 - 1, 2**31 * 1_000_000,  # 2038
        2**53 - 1, 2**53, 2**53 + 1,  # beyond a float's exact integers (year 2255)
        4_102_444_800_000_000 - 1,  # 2099-12-31 23:59:59.999999
        FIRST, FIRST + 1, LAST - 1, LAST,
    ],
)  # fmt: skip
def test_from_us_is_exact_at_the_edges(value: int) -> None:
    at = from_us(value)
    assert at == reference(value) and at.tzinfo is UTC and type(at) is datetime
    assert to_us(at) == value


def test_from_us_keeps_every_microsecond_where_a_float_would_not() -> None:
    # 2**53 + 1 µs is not a float; value / 1e6 would round it to its even neighbour
    assert from_us(2**53 + 1) - from_us(2**53) == timedelta(microseconds=1)
    assert from_us(LAST).microsecond == 999_999 and from_us(LAST).year == 9999
    assert from_us(-1) == datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


def test_from_us_beyond_the_datetime_range_fails() -> None:
    with pytest.raises(OverflowError):
        from_us(LAST + 1)
    with pytest.raises(OverflowError):
        from_us(FIRST - 1)


@given(st.integers(min_value=FIRST, max_value=LAST))
def test_from_us_and_to_us_round_trip(value: int) -> None:
    at = from_us(value)
    assert at == reference(value) and at.utcoffset() == timedelta(0) and to_us(at) == value


def test_to_us_reads_any_aware_datetime_and_refuses_naive_ones() -> None:
    plus_two = datetime(2026, 1, 1, 2, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert to_us(plus_two) == to_us(datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=UTC))
    with pytest.raises(ValueError):
        to_us(datetime(2026, 1, 1))  # noqa: DTZ001
    assert span_us(timedelta(days=1, microseconds=3)) == 86_400_000_003
