"""The verdicts of ``_rules.decide``, exhaustively: every combination of what a backend reads.

Each case is one row of the product of the inputs (the row's presence, expiry and tenant, the
stored key, the status, the lease), checked against the precedence written out here.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import replace
from typing import Any

import pytest

from tests.core.test_lifecycle import EXPECTED_ON_MESSAGE, EXPECTED_TRANSITIONS
from threadkeep._rules import decide, lifecycle
from threadkeep._rules.ops import (
    AppendOp,
    LeaseOp,
    Outcome,
    Result,
    RetainOp,
    SaveStateOp,
    StartOp,
    SweepOp,
    UpdateOp,
)
from threadkeep._rules.retention import RetentionUs
from threadkeep._rules.rows import ConversationRow, MessageRow

NOW = 1_000_000
RETENTION = RetentionUs(ttl_us=500, idle_after_us=100, window=3, max_messages=None)
STATUSES = list(EXPECTED_TRANSITIONS)


def row(**changes: Any) -> ConversationRow:
    base = ConversationRow(
        id="c1",
        tenant="t",
        contact_id="p",
        agent_id=None,
        channel=None,
        status="active",
        stage="Q1",
        metadata_json="{}",
        created_us=NOW - 50,
        activity_us=NOW - 10,
        expires_us=NOW + 490,
        idle_us=NOW + 90,
        message_count=2,
        last_seq=4,
        state_version=3,
        retention=RETENTION,
    )
    return replace(base, **changes)


#: What a backend may hold for the conversation an op names, and whether the caller sees it.
ROWS = {
    "absent": (None, False),
    "live": (row(), True),
    "expired": (row(expires_us=NOW), False),
    "other tenant": (row(tenant="u"), False),
    "never expires": (row(expires_us=None, retention=replace(RETENTION, ttl_us=None)), True),
}


@pytest.mark.parametrize("tenant", [None, "t"])
@pytest.mark.parametrize("name", list(ROWS))
def test_visibility(name: str, tenant: str | None) -> None:
    found, seen = ROWS[name]
    if name == "other tenant" and tenant is None:
        seen = True  # no tenant given: any tenant's conversation
    assert (decide.visible(found, tenant, NOW) is not None) == seen
    if found is not None:
        assert decide.is_visible(found.tenant, found.expires_us, tenant, NOW) == seen
        assert decide.erasable(found, tenant) == (name != "other tenant" or tenant is None)
        expected = Outcome.NOT_FOUND if name == "expired" else Outcome.OK
        assert decide.erased(found, NOW) == Result(expected, None)
    else:
        assert not decide.erasable(found, tenant)


def test_touch_slides_expiry_and_idle_time() -> None:
    touched = decide.touch(row(), NOW + 7, stage="Q2")
    assert (touched.activity_us, touched.expires_us, touched.idle_us) == (
        NOW + 7,
        NOW + 507,
        NOW + 107,
    )
    assert touched.stage == "Q2"
    forever = row(retention=replace(RETENTION, ttl_us=None))
    assert decide.touch(forever, NOW).expires_us is None


# ---- append -----------------------------------------------------------------------------

STORED = MessageRow("c1", 2, "user", "before", NOW - 20, "{}", "k")
LEASES = {"none": (0, 0), "held": (7, NOW + 1), "ran out": (7, NOW), "taken over": (8, NOW + 1)}


def append_op(key: str | None = None, fence: int | None = None, **changes: Any) -> AppendOp:
    op = AppendOp(
        "c1", "t", NOW, "user", "hi", '{"a":1}', key, lifecycle.ON_MESSAGE_VALUES, fence, 100
    )
    return replace(op, **changes)


def test_append_precedence() -> None:
    """Not found, then duplicate key, then closed, then fenced; else the write.

    Every combination of the row (absent, live, expired, another tenant's, never expiring), a
    stored key or none, each status, a fence or none, and each state of the lease.
    """
    leases = [LEASES[k] for k in sorted(LEASES)]
    cases = itertools.product(ROWS, [None, STORED], STATUSES, [None, 7], leases)
    for name, stored, status, fence, lease in cases:
        found, seen = ROWS[name]
        if found is not None:
            found = replace(found, status=status)
        op = append_op("k" if stored else None, fence)
        verdict = decide.append(found, op, stored, lease)
        case = (name, stored is not None, status, fence, lease)
        if not seen:
            assert verdict == Result(Outcome.NOT_FOUND, None), case
        elif stored is not None:
            assert verdict == Result(Outcome.DUPLICATE, stored), case
        elif status not in EXPECTED_ON_MESSAGE:
            assert verdict == Result(Outcome.CLOSED, None), case
        elif fence is not None and lease != LEASES["held"]:
            assert verdict == Result(Outcome.FENCED, None), case
        else:
            assert isinstance(verdict, decide.Appended), case


@pytest.mark.parametrize("status", list(EXPECTED_ON_MESSAGE))
def test_append_writes_the_next_seq_and_moves_the_status(status: str) -> None:
    before = row(status=status)
    verdict = decide.append(before, append_op(key="k9"), None, (0, 0))
    assert isinstance(verdict, decide.Appended)
    assert verdict.message == MessageRow("c1", 5, "user", "hi", NOW, '{"a":1}', "k9")
    assert verdict.status == EXPECTED_ON_MESSAGE[status]
    assert (verdict.message_count, verdict.trim_from) == (3, None)
    assert (verdict.activity_us, verdict.expires_us, verdict.idle_us) == (NOW, NOW + 500, NOW + 100)
    appended = ("message.appended", {"seq": 5, "role": "user"})
    if verdict.status == status:
        assert verdict.events == (appended,)
    else:
        assert verdict.events == (appended, lifecycle.status_changed(status, verdict.status))
    after = verdict.row_after(before)
    assert (after.last_seq, after.message_count, after.status) == (5, 3, verdict.status)
    assert after.activity_us == NOW
    assert verdict.result() == Result(Outcome.OK, verdict.message)


@pytest.mark.parametrize(
    "count, limit, trim_from",
    [(2, None, None), (1, 2, None), (2, 2, 4), (2, 1, 5), (5, 3, 3)],
)
def test_append_trims_to_max_messages(count: int, limit: int | None, trim_from: int | None) -> None:
    # the new message is seq 5; trimming keeps from trim_from, or from the first message after
    # it that may start a window (history.trim_start); kept(cut) counts what stays
    capped = row(message_count=count, retention=replace(RETENTION, max_messages=limit))
    verdict = decide.append(capped, append_op(), None, (0, 0))
    assert isinstance(verdict, decide.Appended)
    assert (verdict.trim_from, verdict.message_count) == (trim_from, count + 1)
    if trim_from is not None:
        assert verdict.kept(trim_from) == 5 - trim_from + 1
        assert verdict.row_after(capped, trim_from).message_count == 5 - trim_from + 1
    assert verdict.kept(None) == count + 1


def test_a_fenced_append_needs_the_current_live_lease() -> None:
    held = LEASES["held"]
    assert isinstance(decide.append(row(), append_op(fence=7), None, held), decide.Appended)
    for lease in (LEASES["ran out"], LEASES["taken over"], LEASES["none"]):
        assert decide.append(row(), append_op(fence=7), None, lease) == Result(Outcome.FENCED, None)


# ---- status and stage -------------------------------------------------------------------


def status_op(target: str) -> UpdateOp:
    return UpdateOp(
        "c1", None, NOW, "status", target, lifecycle.sources_for(lifecycle.Status(target)), 100
    )


@pytest.mark.parametrize("target", STATUSES)
@pytest.mark.parametrize("current", STATUSES)
def test_status_change(current: str, target: str) -> None:
    before = row(status=current)
    verdict = decide.update(before, status_op(target))
    if current == target:
        assert verdict == Result(Outcome.UNCHANGED, before)  # not even activity
    elif target in EXPECTED_TRANSITIONS[current]:
        assert isinstance(verdict, decide.Updated)
        assert verdict.row == decide.touch(before, NOW, status=target)
        assert verdict.event == lifecycle.status_changed(current, target)
        assert verdict.result() == Result(Outcome.OK, verdict.row)
    else:
        assert verdict == Result(Outcome.ILLEGAL, before)


@pytest.mark.parametrize("name", [n for n, (_, seen) in ROWS.items() if not seen])
def test_updates_of_conversations_not_seen_are_not_found(name: str) -> None:
    assert decide.update(ROWS[name][0], replace(status_op("closed"), tenant="t")) == Result(
        Outcome.NOT_FOUND, None
    )


@pytest.mark.parametrize("stage", [None, "Q1", "Q2"])
@pytest.mark.parametrize("current", STATUSES)
def test_stage_change(current: str, stage: str | None) -> None:
    before = row(status=current)
    op = UpdateOp("c1", None, NOW, "stage", stage, lifecycle.STAGE_FROM, 100)
    verdict = decide.update(before, op)
    if current == "closed":
        assert verdict == Result(Outcome.CLOSED, before)
    elif stage == "Q1":
        assert verdict == Result(Outcome.UNCHANGED, before)
    else:
        assert isinstance(verdict, decide.Updated)
        assert verdict.row == decide.touch(before, NOW, stage=stage)
        assert verdict.event == ("stage.changed", {"from": "Q1", "to": stage})


@pytest.mark.parametrize("agent", [None, "dana", "lee"])
@pytest.mark.parametrize("current", STATUSES)
def test_agent_change(current: str, agent: str | None) -> None:
    before = row(status=current, agent_id="dana")
    op = UpdateOp("c1", None, NOW, "agent_id", agent, lifecycle.STAGE_FROM, 100)
    verdict = decide.update(before, op)
    if current == "closed":
        assert verdict == Result(Outcome.CLOSED, before)
    elif agent == "dana":
        assert verdict == Result(Outcome.UNCHANGED, before)
    else:
        assert isinstance(verdict, decide.Updated)
        assert verdict.row == decide.touch(before, NOW, agent_id=agent)
        assert verdict.event == ("agent.assigned", {"from": "dana", "to": agent})


@pytest.mark.parametrize("name", list(ROWS))
@pytest.mark.parametrize("ttl_us", [None, 500, 5_000])
def test_retention_change(name: str, ttl_us: int | None) -> None:
    found, seen = ROWS[name]
    wanted = replace(RETENTION, ttl_us=ttl_us, window=5)
    verdict = decide.retain(found, RetainOp("c1", "t", NOW, wanted, 100))
    if not seen:
        assert verdict == Result(Outcome.NOT_FOUND, None)
        return
    assert found is not None and isinstance(verdict, decide.Updated)
    expires = None if ttl_us is None else found.activity_us + ttl_us  # not activity: no slide
    assert verdict.row == replace(found, retention=wanted, expires_us=expires)
    assert verdict.event == ("retention.changed", {"expires_us": expires})
    same = decide.retain(verdict.row, RetainOp("c1", "t", NOW, wanted, 100))
    assert same == Result(Outcome.UNCHANGED, verdict.row)


# ---- state ------------------------------------------------------------------------------


def save_op(expected: int | None, rollback_to: int | None) -> SaveStateOp:
    return SaveStateOp("c1", "t", NOW, '{"v":1}', expected, rollback_to, 2, 100)


def test_save_state_precedence() -> None:
    """Not found, then conflict, then a version not kept; else the write, closed or not."""
    cases = itertools.product(ROWS, [None, 3, 2], [None, 3], [None, '{"old":1}'], STATUSES)
    for name, expected, rollback_to, kept, status in cases:
        found, seen = ROWS[name]
        if found is not None:
            found = replace(found, status=status)
        verdict = decide.save_state(found, save_op(expected, rollback_to), kept)
        case = (name, expected, rollback_to, kept, status)
        if not seen:
            assert verdict == Result(Outcome.NOT_FOUND, 0), case
        elif expected is not None and expected != 3:
            assert verdict == Result(Outcome.CONFLICT, 3), case
        elif rollback_to is not None and kept is None:
            assert verdict == Result(Outcome.NO_VERSION, 3), case
        else:
            assert isinstance(verdict, decide.Saved), case
            value = kept if rollback_to is not None else '{"v":1}'
            assert (verdict.version, verdict.value_json, verdict.trim_to) == (4, value, 2)
            assert verdict.event == ("state.saved", {"version": 4})
            assert found is not None and verdict.row_after(found).state_version == 4
            assert verdict.result() == Result(Outcome.OK, 4)


# ---- create, lease, sweep, events -------------------------------------------------------


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("open_one", [None, row(id="c0")])
def test_create(resume: bool, open_one: ConversationRow | None) -> None:
    new = row(id="c2", status="new", message_count=0, last_seq=0, state_version=0)
    verdict = decide.create(StartOp(new, resume, lifecycle.STAGE_FROM, 100), open_one)
    if resume and open_one is not None:
        assert verdict == Result(Outcome.EXISTING, open_one)
    else:
        assert verdict == decide.Created(new, ("conversation.started", {
            "contact_id": "p", "status": "new", "stage": "Q1"
        }))  # fmt: skip
        assert verdict.result() == Result(Outcome.CREATED, new)


def test_a_resent_resume_that_finds_its_own_conversation_answers_created() -> None:
    """Review (session 12): a resume resent after a commit of unknown outcome found the
    conversation its first try had created and answered EXISTING (``created=False``)."""
    new = row(id="c2", status="new", message_count=0, last_seq=0, state_version=0)
    stored = dataclasses.replace(new, activity_us=new.activity_us + 1)
    verdict = decide.create(StartOp(new, True, lifecycle.STAGE_FROM, 100), stored)
    assert verdict == Result(Outcome.CREATED, stored)


@pytest.mark.parametrize("lease", sorted(LEASES))
@pytest.mark.parametrize("name", list(ROWS))
def test_lease(name: str, lease: str) -> None:
    found, seen = ROWS[name]
    held = LEASES[lease]
    verdict = decide.lease(found, LeaseOp("c1", "t", NOW, NOW + 30), held)
    if not seen:
        assert verdict == Result(Outcome.NOT_FOUND, 0)
    elif held[1] > NOW:
        assert verdict == Result(Outcome.BUSY, 0)
    else:
        assert verdict == Result(Outcome.OK, held[0] + 1)


def test_idle_due() -> None:
    op = SweepOp(NOW, False, "idle", ("active",), 10, 100)
    for status, idle_us, expires_us in itertools.product(
        STATUSES, [NOW - 1, NOW, NOW + 1], [NOW, NOW + 1, None]
    ):
        due = decide.idle_due(row(status=status, idle_us=idle_us, expires_us=expires_us), op)
        case = (status, idle_us, expires_us)
        assert due == (status == "active" and idle_us <= NOW and expires_us != NOW), case


@pytest.mark.parametrize(
    "after, floor, expired", [(None, 9, False), (8, 9, True), (9, 9, False), (10, 9, False)]
)
def test_cursor_expired(after: int | None, floor: int, expired: bool) -> None:
    assert decide.cursor_expired(after, floor) == expired
