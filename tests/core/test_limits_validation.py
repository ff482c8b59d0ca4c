"""Limits refuse values no store could honour, with the field named."""

from __future__ import annotations

import pytest

import threadkeep


def test_a_state_needs_one_version_kept() -> None:
    """load_state answers the newest version kept: with none kept a save would vanish (and
    on Redis the versions hash, emptied, was made again later without its expiry)."""
    with pytest.raises(threadkeep.InvalidInput) as caught:
        threadkeep.Limits(state_versions_kept=0)
    assert caught.value.field == "state_versions_kept"
    assert threadkeep.Limits(state_versions_kept=1).state_versions_kept == 1


def test_the_event_log_keeps_zero_or_more() -> None:
    with pytest.raises(threadkeep.InvalidInput) as caught:
        threadkeep.Limits(events_kept=-1)
    assert caught.value.field == "events_kept"
    assert threadkeep.Limits(events_kept=0).events_kept == 0
