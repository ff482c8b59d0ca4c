"""Retention arithmetic: sliding expiry, idling, window and max_messages bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from threadkeep._config import TIERS, Retention, Tier
from threadkeep._exceptions import InvalidInput
from threadkeep._rules.times import span_us

__all__ = ["RetentionUs", "check_tier", "fact_expiry", "is_expired", "retention_us"]


@dataclass(frozen=True, slots=True)
class RetentionUs:
    """A conversation's retention in microseconds, as stored with it."""

    ttl_us: int | None
    idle_after_us: int
    window: int
    max_messages: int | None

    def expires_at(self, now_us: int) -> int | None:
        """Return when a conversation active at ``now_us`` expires (None: never)."""
        return None if self.ttl_us is None else now_us + self.ttl_us

    def idle_at(self, now_us: int) -> int:
        """Return when a conversation active at ``now_us`` becomes idle."""
        return now_us + self.idle_after_us


def retention_us(retention: Retention) -> RetentionUs:
    """Convert a Retention to its stored microsecond form."""
    return RetentionUs(
        ttl_us=None if retention.ttl is None else span_us(retention.ttl),
        idle_after_us=span_us(retention.idle_after),
        window=retention.window,
        max_messages=retention.max_messages,
    )


def is_expired(expires_at_us: int | None, now_us: int) -> bool:
    """Return whether something expiring at ``expires_at_us`` is gone at ``now_us``."""
    return expires_at_us is not None and expires_at_us <= now_us


def check_tier(tier: object) -> Tier:
    """Return ``tier`` if it is a memory tier.

    Raises:
        InvalidInput: for any other value.
    """
    if not isinstance(tier, str) or tier not in TIERS:
        raise InvalidInput(
            f"unknown memory tier {tier!r}; allowed: {', '.join(TIERS)}", field="tier"
        )
    return cast(Tier, tier)


def fact_expiry(tier: Tier, now_us: int) -> int:
    """Return when a fact remembered now in ``tier`` is forgotten."""
    return now_us + span_us(TIERS[tier])
