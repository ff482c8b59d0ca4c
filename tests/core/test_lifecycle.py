"""The lifecycle tables, pinned: the one copy of the transition table the tests hold.

``tests/conformance`` imports ``EXPECTED_TRANSITIONS`` and ``EXPECTED_ON_MESSAGE`` from here, so
a changed rule fails here first and is changed in one place.
"""

from __future__ import annotations

import pytest

from threadkeep import InvalidInput
from threadkeep._rules import lifecycle
from threadkeep._rules.events import EventKind
from threadkeep._rules.lifecycle import (
    ON_MESSAGE,
    ON_MESSAGE_VALUES,
    OPEN,
    STAGE_FROM,
    TRANSITIONS,
    Status,
    change_kind,
    check_status,
    sources_for,
    status_changed,
    status_verdict,
)
from threadkeep._rules.ops import Outcome

#: Explicit status changes allowed from each status (setting the current one is a no-op).
EXPECTED_TRANSITIONS = {
    "new": {"active", "waiting_agent", "closed"},
    "active": {"idle", "waiting_agent", "closed"},
    "idle": {"active", "waiting_agent", "closed"},
    "waiting_agent": {"active", "closed"},
    "closed": set(),
}
#: What a message does to the status; closed refuses messages.
EXPECTED_ON_MESSAGE = {
    "new": "active",
    "active": "active",
    "idle": "active",
    "waiting_agent": "waiting_agent",
}

STATUSES = [s.value for s in Status]


@pytest.mark.parametrize("target", STATUSES)
@pytest.mark.parametrize("source", STATUSES)
def test_transition_table(source: str, target: str) -> None:
    allowed = target in EXPECTED_TRANSITIONS[source]
    assert (Status(target) in TRANSITIONS[Status(source)]) == allowed
    assert (source in sources_for(Status(target))) == (allowed or source == target)


@pytest.mark.parametrize("target", STATUSES)
@pytest.mark.parametrize("current", STATUSES)
def test_status_verdict(current: str, target: str) -> None:
    verdict = status_verdict(current, target, sources_for(Status(target)))
    if current == target:
        assert verdict is Outcome.UNCHANGED
    elif target in EXPECTED_TRANSITIONS[current]:
        assert verdict is None
    else:
        assert verdict is Outcome.ILLEGAL


@pytest.mark.parametrize("status", STATUSES)
def test_on_message(status: str) -> None:
    assert ON_MESSAGE_VALUES.get(status) == EXPECTED_ON_MESSAGE.get(status)
    assert {k.value: v.value for k, v in ON_MESSAGE.items()} == EXPECTED_ON_MESSAGE


def test_open_statuses_take_messages_and_stage_changes() -> None:
    assert {s.value for s in OPEN} == set(EXPECTED_ON_MESSAGE)
    assert set(STAGE_FROM) == set(EXPECTED_ON_MESSAGE)
    assert lifecycle.IDLE_FROM == (Status.ACTIVE,)


@pytest.mark.parametrize("target", STATUSES)
def test_closing_is_its_own_event_kind(target: str) -> None:
    kind = EventKind.CLOSED if target == "closed" else EventKind.STATUS_CHANGED
    assert change_kind(target) is kind
    assert status_changed("active", target) == (kind.value, {"from": "active", "to": target})


@pytest.mark.parametrize("bad", ["", "CLOSED", "open", None, 3])
def test_check_status_refuses_and_lists_the_statuses(bad: object) -> None:
    with pytest.raises(InvalidInput, match="allowed: new, active, idle, waiting_agent, closed"):
        check_status(bad)


@pytest.mark.parametrize("good", STATUSES)
def test_check_status_accepts_text_and_members(good: str) -> None:
    assert check_status(good) is Status(good)
    assert check_status(Status(good)) is Status(good)
