"""Behaviour knobs as typed, frozen objects with their defaults in one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Final, Literal

from threadkeep._exceptions import InvalidInput

__all__ = ["DEFAULT_LIMITS", "DEFAULT_RETENTION", "TIERS", "Limits", "Retention", "Tier"]

#: The retention tiers of contact memory (``remember(..., tier=)``, ``Fact.tier``).
Tier = Literal["critical", "high", "medium", "low"]


@dataclass(frozen=True, slots=True)
class Retention:
    """How long conversations live and how much of them is kept.

    Attributes:
        ttl: a conversation expires this long after its last activity (sliding); ``None``
            keeps it until it is deleted.
        idle_after: an active conversation with no activity for this long is marked ``idle``
            by ``sweep()``.
        window: how many recent messages ``context()`` returns.
        max_messages: when set, only the newest ``max_messages`` messages are kept.
    """

    ttl: timedelta | None = timedelta(days=7)
    idle_after: timedelta = timedelta(minutes=30)
    window: int = 20
    max_messages: int | None = None

    def __post_init__(self) -> None:
        if self.ttl is not None and self.ttl <= timedelta(0):
            raise InvalidInput("retention ttl must be positive or None", field="ttl")
        if self.idle_after <= timedelta(0):
            raise InvalidInput("retention idle_after must be positive", field="idle_after")
        if self.window < 1:
            raise InvalidInput("retention window must be at least 1", field="window")
        if self.max_messages is not None and self.max_messages < 1:
            raise InvalidInput("max_messages must be at least 1 or None", field="max_messages")


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits and bounded logs.

    Attributes:
        max_content_bytes: largest message content, UTF-8 encoded.
        max_metadata_bytes: largest metadata object, JSON encoded.
        max_state_bytes: largest state document, JSON encoded.
        max_page: largest ``limit`` for list and messages pages.
        events_kept: how many of the newest events the log retains.
        state_versions_kept: how many state versions are kept for rollback.
        max_payload_bytes: largest message payload (a framework's item or a provider's
            content blocks, kept verbatim), JSON encoded.
        max_batch: most messages one ``append_many`` or ``replace_messages`` call takes.
    """

    max_content_bytes: int = 64 * 1024
    max_metadata_bytes: int = 16 * 1024
    max_state_bytes: int = 1024 * 1024
    max_page: int = 1000
    events_kept: int = 10_000
    state_versions_kept: int = 10
    max_payload_bytes: int = 1024 * 1024
    max_batch: int = 1000

    def __post_init__(self) -> None:
        if self.state_versions_kept < 1:  # load_state answers the newest version kept
            raise InvalidInput(
                "state_versions_kept must be at least 1", field="state_versions_kept"
            )
        if self.events_kept < 0:
            raise InvalidInput("events_kept must be at least 0", field="events_kept")


DEFAULT_RETENTION: Final = Retention()
DEFAULT_LIMITS: Final = Limits()

#: How long a fact of each tier is remembered.
TIERS: Final[MappingProxyType[Tier, timedelta]] = MappingProxyType(
    {
        "critical": timedelta(days=365),
        "high": timedelta(days=30),
        "medium": timedelta(days=7),
        "low": timedelta(hours=24),
    }
)
