"""Every outcome → model or exception of ``_rules.outcomes``, and the row → model converters."""

from __future__ import annotations

import pickle
from dataclasses import FrozenInstanceError, replace
from typing import Any

import pytest

from tests.core.test_decide import NOW, row
from threadkeep import (
    ConversationClosed,
    ConversationNotFound,
    CursorExpired,
    EventKind,
    IllegalTransition,
    InvalidInput,
    Limits,
    StateConflict,
    Status,
    TurnInProgress,
)
from threadkeep._models import Conversation, Message
from threadkeep._rules import outcomes, plans
from threadkeep._rules.cursors import decode_page
from threadkeep._rules.ops import (
    DeleteOp,
    ListOp,
    LoadStateOp,
    Outcome,
    ReadOp,
    Result,
    SaveStateOp,
    SweepOp,
    UpdateOp,
    WindowOp,
)
from threadkeep._rules.rows import (
    EventRow,
    FactRow,
    MessageRow,
    StateRow,
    SweepCounts,
    TenantCounts,
    WindowRow,
)
from threadkeep._rules.times import from_us

MESSAGE = MessageRow("c1", 3, "user", "hi", NOW, '{"a":1}', "k")
APPEND = plans.append(
    NOW, Limits(), "c1", "user", "hi", metadata=None, idempotency_key=None, tenant=None
)


def test_conversation_rows_become_conversations() -> None:
    conv = outcomes.to_conversation(row(metadata_json='{"x":[1]}'))
    assert conv.status is Status.ACTIVE and conv.metadata == {"x": [1]}
    assert (conv.message_count, conv.state_version, conv.created) == (2, 3, False)
    assert conv.expires_at is not None and conv.expires_at > conv.last_activity_at
    assert outcomes.to_conversation(row(expires_us=None)).expires_at is None


@pytest.mark.parametrize("created", [False, True])
def test_a_conversation_row_becomes_the_same_conversation_the_constructor_makes(
    created: bool,
) -> None:
    r = row(metadata_json='{"x":[1]}')
    made = outcomes.to_conversation(r, created)
    expected = Conversation(
        id=r.id, tenant=r.tenant, contact_id=r.contact_id, agent_id=r.agent_id,
        channel=r.channel, status=Status(r.status), stage=r.stage, metadata={"x": [1]},
        created_at=from_us(r.created_us), last_activity_at=from_us(r.activity_us),
        expires_at=None if r.expires_us is None else from_us(r.expires_us),
        message_count=r.message_count, state_version=r.state_version, created=created,
    )  # fmt: skip
    assert type(made) is Conversation and made.status is Status.ACTIVE
    assert made == expected and repr(made) == repr(expected) and made.created is created
    assert made.to_dict() == expected.to_dict()
    assert pickle.loads(pickle.dumps(made)) == expected
    assert replace(made, stage="Q9").stage == "Q9"
    with pytest.raises(FrozenInstanceError):
        made.stage = "Q9"  # type: ignore[misc]


@pytest.mark.parametrize("payload", [None, '{"type":"x","v":[1]}'])
@pytest.mark.parametrize("replayed", [False, True])
def test_a_message_row_becomes_the_same_message_the_constructor_makes(
    payload: str | None, replayed: bool
) -> None:
    row_ = MessageRow("c1", 3, "user", "hi", NOW, '{"a":1}', "k", payload, 0)
    made = outcomes.to_message(row_, replayed)
    expected = Message(
        "c1", 3, "user", "hi", from_us(NOW), {"a": 1}, "k", replayed,
        None if payload is None else {"type": "x", "v": [1]},
    )  # fmt: skip
    assert type(made) is Message
    assert made == expected and repr(made) == repr(expected) and hash(made.seq) == 3
    assert made.replayed is replayed and made.to_dict() == expected.to_dict()
    assert pickle.loads(pickle.dumps(made)) == expected
    assert replace(made, seq=4).seq == 4
    with pytest.raises(FrozenInstanceError):
        made.seq = 5  # type: ignore[misc]
    assert outcomes.to_message(MESSAGE).metadata == {"a": 1}
    assert outcomes.to_message(MESSAGE._replace(metadata_json="{}")).metadata == {}


@pytest.mark.parametrize("outcome, created", [(Outcome.CREATED, True), (Outcome.EXISTING, False)])
def test_finish_create(outcome: Outcome, created: bool) -> None:
    conv = outcomes.finish_create(Result(outcome, row()))
    assert conv.created is created and conv.id == "c1"


@pytest.mark.parametrize(
    "result, expected",
    [
        (Result(Outcome.OK, MESSAGE), False),
        (Result(Outcome.DUPLICATE, MESSAGE), True),
        (Result(Outcome.NOT_FOUND, None), ConversationNotFound),
        (Result(Outcome.CLOSED, None), ConversationClosed),
        (Result(Outcome.FENCED, None), TurnInProgress),
    ],
)
def test_finish_append(result: Result[MessageRow | None], expected: Any) -> None:
    if isinstance(expected, bool):
        message = outcomes.finish_append(result, APPEND)
        assert message.replayed is expected and message.metadata == {"a": 1}
        assert message.idempotency_key == "k"
    else:
        with pytest.raises(expected) as caught:
            outcomes.finish_append(result, APPEND)
        assert caught.value.conversation_id == "c1"
        if expected is TurnInProgress:
            assert "was not stored" in str(caught.value)


def test_finish_reads() -> None:
    read = ReadOp("c1", None, NOW, None, 0, 10)
    assert outcomes.finish_messages(Result(Outcome.OK, [MESSAGE]), read)[0].seq == 3
    window = WindowOp("c1", None, NOW)
    hi = WindowRow("user", "hi", None, 0)
    assert outcomes.finish_context(Result(Outcome.OK, ([hi], 20)), window, None, None) == [hi]
    assert outcomes.finish_get(Result(Outcome.OK, row()), "c1").id == "c1"
    assert outcomes.finish_find_open(Result(Outcome.OK, None)) is None
    for finish in (
        lambda: outcomes.finish_messages(Result(Outcome.NOT_FOUND, []), read),
        lambda: outcomes.finish_context(Result(Outcome.NOT_FOUND, ([], 0)), window, None, None),
        lambda: outcomes.finish_get(Result(Outcome.NOT_FOUND, None), "c1"),
    ):
        with pytest.raises(ConversationNotFound):
            finish()


def test_finish_update() -> None:
    op = UpdateOp("c1", None, NOW, "status", "new", ("new",), 10)
    assert outcomes.finish_update(Result(Outcome.OK, row()), op).id == "c1"
    assert outcomes.finish_update(Result(Outcome.UNCHANGED, row()), op).id == "c1"
    with pytest.raises(IllegalTransition) as caught:
        outcomes.finish_update(Result(Outcome.ILLEGAL, row(status="closed")), op)
    assert (caught.value.current, caught.value.target, caught.value.allowed) == (
        "closed",
        "new",
        (),
    )
    with pytest.raises(ConversationClosed):
        outcomes.finish_update(Result(Outcome.CLOSED, row(status="closed")), op)
    with pytest.raises(ConversationNotFound):
        outcomes.finish_update(Result(Outcome.NOT_FOUND, None), op)


def test_finish_save_state_says_each_condition_once() -> None:
    save = SaveStateOp("c1", None, NOW, "{}", 2, None, 10, 10)
    assert outcomes.finish_save_state(Result(Outcome.OK, 4), save) == 4
    with pytest.raises(StateConflict) as conflict:
        outcomes.finish_save_state(Result(Outcome.CONFLICT, 3), save)
    assert (conflict.value.expected_version, conflict.value.current_version) == (2, 3)
    back = replace(save, rollback_to=1, expected_version=None)
    with pytest.raises(InvalidInput, match="version 1 of conversation 'c1' is not kept") as gone:
        outcomes.finish_save_state(Result(Outcome.NO_VERSION, 3), back)
    assert gone.value.field == "to_version"
    load = LoadStateOp("c1", None, NOW, 1)
    with pytest.raises(InvalidInput, match="version 1 of conversation 'c1' is not kept") as lost:
        outcomes.finish_load_state(Result(Outcome.NO_VERSION, None), load, None)
    assert lost.value.field == "version"
    with pytest.raises(ConversationNotFound):
        outcomes.finish_save_state(Result(Outcome.NOT_FOUND, 0), save)


def test_finish_load_state() -> None:
    load = LoadStateOp("c1", None, NOW, None)
    empty = outcomes.finish_load_state(Result(Outcome.OK, None), load, None)
    assert (empty.value, empty.version, empty.saved_at) == (None, 0, None)
    snap = outcomes.finish_load_state(Result(Outcome.OK, StateRow(2, '{"a":1}', NOW)), load, dict)
    assert (snap.value, snap.version) == ({"a": 1}, 2)
    with pytest.raises(InvalidInput):
        outcomes.finish_load_state(Result(Outcome.OK, StateRow(2, '"text"', NOW)), load, int)


def test_finish_list_makes_the_next_cursor_from_the_last_item() -> None:
    op = ListOp("t", NOW, None, None, None, None, 2, None)
    rows = [row(id=f"c{i}", activity_us=NOW - i) for i in range(3)]
    page = outcomes.finish_list(Result(Outcome.OK, rows), op)
    assert [c.id for c in page.items] == ["c0", "c1"]
    assert page.next_cursor is not None and decode_page(page.next_cursor) == (NOW - 1, "c1")
    last = outcomes.finish_list(Result(Outcome.OK, rows[:2]), op)
    assert last.next_cursor is None


def test_finish_the_rest() -> None:
    counts = outcomes.finish_counts(Result(Outcome.OK, TenantCounts({"new": 2, "idle": 1}, {})))
    assert counts.total == 3
    delete = DeleteOp("c1", None, NOW, 10)
    outcomes.finish_delete(Result(Outcome.OK, None), delete)  # no error: it was live
    with pytest.raises(ConversationNotFound):
        outcomes.finish_delete(Result(Outcome.NOT_FOUND, None), delete)
    sweep = SweepOp(NOW, True, "idle", ("active",), 1, 1)
    report = outcomes.finish_sweep(Result(Outcome.OK, SweepCounts(1, 2, 3)), sweep)
    assert (report.idled, report.purged, report.facts_purged, report.dry_run) == (1, 2, 3, True)
    events = outcomes.finish_events(
        Result(Outcome.OK, [EventRow("9-0", "conversation.closed", "t", "c1", "{}", NOW)]), "8"
    )
    assert events[0].kind is EventKind.CLOSED and events[0].id == "9-0"
    with pytest.raises(CursorExpired):
        outcomes.finish_events(Result(Outcome.EXPIRED, []), "8")
    assert outcomes.finish_lease(Result(Outcome.OK, 5), "c1") == 5
    assert outcomes.finish_lease(Result(Outcome.BUSY, 0), "c1") is None
    with pytest.raises(ConversationNotFound):
        outcomes.finish_lease(Result(Outcome.NOT_FOUND, 0), "c1")
    fact = outcomes.finish_remember(Result(Outcome.OK, FactRow("k", "[1]", "low", NOW, NOW + 1)))
    assert (fact.key, fact.value, fact.tier) == ("k", [1], "low")
    assert outcomes.finish_recall(Result(Outcome.OK, []), NOW) == []
    assert "another worker" in str(outcomes.turn_busy("c1"))


def test_empty_metadata_is_a_new_dict_for_each_model() -> None:
    first, second = (outcomes.to_conversation(row(metadata_json="{}")) for _ in range(2))
    assert first.metadata == {} and first.metadata is not second.metadata
    empty = MESSAGE._replace(metadata_json="{}")
    one, two = outcomes.to_messages([empty, empty])
    assert one.metadata == {} and one.metadata is not two.metadata
