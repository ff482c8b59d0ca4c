"""Timestamps as integer microseconds since the epoch: exact, sortable, backend-neutral."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["EPOCH", "MICROSECOND", "from_us", "span_us", "to_us"]

#: ``from_us(us)`` is ``EPOCH + MICROSECOND * us`` (``outcomes.to_messages`` inlines it).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def to_us(value: datetime) -> int:
    """Return an aware datetime as microseconds since the epoch."""
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not accepted; pass a timezone-aware one")
    return (value - EPOCH) // MICROSECOND


def from_us(value: int) -> datetime:
    """Return microseconds since the epoch as an aware UTC datetime."""
    # exact (integer arithmetic, no float): a read makes one per message, and multiplying a
    # timedelta is about a third cheaper than constructing one (timedelta(0, 0, value))
    return EPOCH + MICROSECOND * value


def span_us(value: timedelta) -> int:
    """Return a duration in microseconds."""
    return value // MICROSECOND
