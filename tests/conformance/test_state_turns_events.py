"""State, turn leases, list/counts, events, erasure, contact memory."""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pydantic
import pytest

from threadkeep import (
    ConversationClosed,
    ConversationNotFound,
    CursorExpired,
    ErasureReceipt,
    EventKind,
    InvalidInput,
    Limits,
    ManualClock,
    Retention,
    StateConflict,
    Status,
    TurnInProgress,
)


def contact() -> str:
    return f"c-{uuid4()}"


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class Address(pydantic.BaseModel):
    city: str
    zip: str | None = None


class Lead(pydantic.BaseModel):
    name: str
    seen: datetime
    mood: Mood
    address: Address
    note: str | None = None


@dataclasses.dataclass
class Counter:
    n: int
    tags: list[str]


def test_state_pydantic_round_trip(store: Any) -> None:
    conv = store.start(contact())
    lead = Lead(
        name="Ana",
        seen=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        mood=Mood.SAD,
        address=Address(city="Lyon"),
    )
    assert store.save_state(conv.id, lead) == 1
    snap = store.load_state(conv.id, Lead)
    assert snap.version == 1
    assert snap.value == lead
    assert snap.value.seen.tzinfo is not None
    assert snap.saved_at is not None
    assert store.get(conv.id).state_version == 1


def test_state_dataclass_and_dict(store: Any) -> None:
    conv = store.start(contact())
    store.save_state(conv.id, Counter(3, ["a"]))
    assert store.load_state(conv.id, Counter).value == Counter(3, ["a"])
    store.save_state(conv.id, {"k": [1, 2, {"z": None}]})
    snap = store.load_state(conv.id)
    assert snap.value == {"k": [1, 2, {"z": None}]}
    assert snap.version == 2


def test_state_empty(store: Any) -> None:
    conv = store.start(contact())
    snap = store.load_state(conv.id)
    assert (snap.value, snap.version) == (None, 0)


def test_state_conflict_leaves_state(store: Any) -> None:
    conv = store.start(contact())
    assert store.save_state(conv.id, {"v": 1}, expected_version=0) == 1
    with pytest.raises(StateConflict):
        store.save_state(conv.id, {"v": "bad"}, expected_version=0)
    assert store.load_state(conv.id).value == {"v": 1}
    assert store.save_state(conv.id, {"v": 2}, expected_version=1) == 2
    assert store.load_state(conv.id).version == 2


def test_state_versions_kept_and_rollback(store: Any) -> None:
    conv = store.start(contact())
    for i in range(1, 13):
        store.save_state(conv.id, {"i": i})
    assert store.load_state(conv.id, version=3).value == {"i": 3}
    with pytest.raises(InvalidInput):
        store.load_state(conv.id, version=2)
    assert store.rollback_state(conv.id, 5) == 13
    assert store.load_state(conv.id).value == {"i": 5}
    with pytest.raises(InvalidInput):
        store.rollback_state(conv.id, 1)
    with pytest.raises(StateConflict):
        store.rollback_state(conv.id, 6, expected_version=12)


def test_state_unserializable(store: Any) -> None:
    conv = store.start(contact())
    with pytest.raises(InvalidInput):
        store.save_state(conv.id, {"x": object()})
    assert store.load_state(conv.id).version == 0


# --- turn leases -------------------------------------------------------------------------


def test_turn_exclusive(store: Any) -> None:
    conv = store.start(contact())
    with store.turn(conv.id) as turn:
        assert turn.append("user", "hi").seq == 1
        with pytest.raises(TurnInProgress), store.turn(conv.id):
            pass
    with store.turn(conv.id) as again:
        assert again.append("assistant", "yo").seq == 2


def test_turn_lease_runs_out_and_old_turn_is_fenced(store: Any, clock: Any) -> None:
    conv = store.start(contact())
    with store.turn(conv.id, lease=10) as old:
        clock.advance(11)
        with store.turn(conv.id, lease=10) as new:
            assert new.append("assistant", "new holder").seq == 1
            with pytest.raises(TurnInProgress):
                old.append("assistant", "stale holder")
    assert [m.content for m in store.messages(conv.id)] == ["new holder"]


def test_turn_timeout_waits_for_release(store: Any) -> None:
    conv = store.start(contact())
    held = threading.Event()

    def hold() -> None:
        with store.turn(conv.id, lease=30):
            held.set()
            threading.Event().wait(0.3)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        with store.turn(conv.id, timeout=10) as turn:
            assert turn.append("user", "after wait").seq == 1
    finally:
        holder.join()


# A turn's append answering also the conversation as of it (the chat turn's one op for the
# user's message and the status it is answered by): the same as a get() right after it.


def test_turn_append_read_answers_the_conversation_as_of_its_append(store: Any, clock: Any) -> None:
    conv = store.start(contact(), stage="lead")
    clock.advance(5)
    with store.turn(conv.id) as turn:
        message, seen = turn._append_read("user", "hi", None)
        assert (message.seq, message.content, message.replayed) == (1, "hi", False)
        assert seen == store.get(conv.id)
        assert (seen.status, seen.stage, seen.contact_id) == ("active", "lead", conv.contact_id)
        assert (seen.message_count, seen.last_activity_at) == (1, message.created_at)
        keyed, seen = turn._append_read("user", "again", "k-1")
        assert (keyed.seq, seen.message_count) == (2, 2)
        assert seen == store.get(conv.id)
    assert [m.content for m in store.messages(conv.id)] == ["hi", "again"]


def test_turn_append_read_of_a_known_key_answers_the_conversation_as_stored(
    store: Any, clock: Any
) -> None:
    conv = store.start(contact())
    with store.turn(conv.id) as turn:
        first, _ = turn._append_read("user", "hi", "k-1")
    store.set_status(conv.id, Status.WAITING_AGENT)
    store.close_conversation(conv.id)
    clock.advance(5)
    with store.turn(conv.id) as turn:
        again, seen = turn._append_read("user", "hi", "k-1")
    assert (again.seq, again.replayed, again.created_at) == (1, True, first.created_at)
    assert seen.status == "closed"
    assert seen == store.get(conv.id)


def test_turn_append_read_follows_the_status_a_message_moves_to(store: Any) -> None:
    conv = store.start(contact())
    store.set_status(conv.id, Status.WAITING_AGENT)  # a person has it: a message keeps it so
    with store.turn(conv.id) as turn:
        _, seen = turn._append_read("user", "hello?", None)
        assert seen.status == "waiting_agent"
        assert seen == store.get(conv.id)
        store.close_conversation(conv.id)
        with pytest.raises(ConversationClosed):
            turn._append_read("user", "anyone?", None)
    assert store.get(conv.id).message_count == 1


def test_turn_append_read_after_a_trim_counts_what_is_kept(store: Any) -> None:
    """A backend may answer no conversation for an append that trimmed (the caller reads it);
    one it answers counts what the trim kept, whole exchanges (not the last max_messages)."""
    conv = store.start(contact(), retention=Retention(max_messages=2))
    call = {"type": "function_call", "call_id": "c1", "name": "estimate", "arguments": "{}"}
    store.append(conv.id, "assistant", "", payload=call)
    result = {"type": "function_call_output", "call_id": "c1", "output": "450k"}
    store.append(conv.id, "tool", "", payload=result)
    with store.turn(conv.id) as turn:
        _, seen = turn._append_read("user", "m0", None)  # keeps [m0]: not [result, m0]
        assert seen in (None, store.get(conv.id))
        for n in range(1, 4):
            _, seen = turn._append_read("user", f"m{n}", None)
            assert seen in (None, store.get(conv.id))
    assert [m.content for m in store.messages(conv.id)] == ["m2", "m3"]
    assert store.get(conv.id).message_count == 2


def test_turn_append_read_is_fenced_like_append(store: Any, clock: Any) -> None:
    conv = store.start(contact())
    with store.turn(conv.id, lease=10) as old:
        clock.advance(11)
        with store.turn(conv.id, lease=10) as new:
            _, seen = new._append_read("user", "new holder", None)
            with pytest.raises(TurnInProgress):
                old._append_read("user", "stale holder", None)
    assert [m.content for m in store.messages(conv.id)] == ["new holder"]
    assert seen.message_count == 1


def test_turn_unknown_conversation(store: Any) -> None:
    with pytest.raises(ConversationNotFound), store.turn("conv-unknown"):
        pass


# --- list and counts ---------------------------------------------------------------------


def test_list_filters_and_order(store: Any, clock: Any) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    a = store.start(contact(), tenant=tenant, agent_id="x", stage="Q1")
    clock.advance(1)
    b = store.start(contact(), tenant=tenant, agent_id="y", stage="Q2")
    clock.advance(1)
    c = store.start(contact(), tenant=tenant, agent_id="x", stage="Q1")
    clock.advance(1)
    store.append(a.id, "user", "bump")
    ids = [conv.id for conv in store.list(tenant=tenant).items]
    assert ids == [a.id, c.id, b.id]
    assert {x.id for x in store.list(tenant=tenant, agent_id="x").items} == {a.id, c.id}
    assert [x.id for x in store.list(tenant=tenant, stage="Q2").items] == [b.id]
    assert [x.id for x in store.list(tenant=tenant, status="active").items] == [a.id]
    assert [x.id for x in store.list(tenant=tenant, contact_id=b.contact_id).items] == [b.id]
    counts = store.counts(tenant=tenant)
    assert counts.total == 3
    assert counts.by_status.get("new") == 2
    assert counts.by_status.get("active") == 1


def test_counts_follow_every_change(store: Any, clock: Any) -> None:
    """counts() as the tenant's live rows are started, moved, staged, erased, expired, swept."""
    tenant = f"t-{uuid4().hex[:8]}"
    short = Retention(ttl=timedelta(hours=1))
    a = store.start(contact(), tenant=tenant, stage="Q1")
    b = store.start(contact(), tenant=tenant, stage="Q1")
    c = store.start(contact(), tenant=tenant)
    store.start(contact(), tenant=tenant, stage="Q2", retention=short)
    e = store.start(contact(), tenant=tenant, retention=short)
    store.start(contact(), tenant=f"{tenant}-other", stage="Q1")

    def seen() -> tuple[int, dict[str, int], dict[str, int]]:
        counts = store.counts(tenant=tenant)
        by_status = {k: v for k, v in counts.by_status.items() if v}
        return counts.total, by_status, {k: v for k, v in counts.by_stage.items() if v}

    assert seen() == (5, {"new": 5}, {"Q1": 2, "Q2": 1})
    store.append(a.id, "user", "hi")  # new → active
    store.set_stage(b.id, "Q2")
    store.set_stage(c.id, "Q1")
    store.close_conversation(b.id)
    assert seen() == (5, {"new": 3, "active": 1, "closed": 1}, {"Q1": 2, "Q2": 2})
    store.delete(c.id)
    assert seen() == (4, {"new": 2, "active": 1, "closed": 1}, {"Q1": 1, "Q2": 2})
    clock.advance(timedelta(hours=2))  # d and e expire, unswept: no longer counted
    assert seen() == (2, {"active": 1, "closed": 1}, {"Q1": 1, "Q2": 1})
    store.sweep()  # erases d and e, and idles a
    assert seen() == (2, {"idle": 1, "closed": 1}, {"Q1": 1, "Q2": 1})
    with pytest.raises(ConversationNotFound):
        store.get(e.id)
    store.delete_contact(a.contact_id, tenant=tenant)
    assert seen() == (1, {"closed": 1}, {"Q2": 1})


def test_list_pagination_visits_each_once(store: Any, clock: Any) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    made = set()
    for i in range(23):
        made.add(store.start(contact(), tenant=tenant).id)
        if i % 3:
            clock.advance(1)  # some share an activity time: the id breaks ties
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list(tenant=tenant, limit=5, cursor=cursor)
        seen.extend(c.id for c in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == made


def test_list_pagination_under_writes(store: Any, clock: Any) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    convs = []
    for _ in range(20):
        convs.append(store.start(contact(), tenant=tenant))
        clock.advance(1)
    touched: set[str] = set()
    seen: list[str] = []
    page = store.list(tenant=tenant, limit=4)
    step = 0
    while True:
        seen.extend(c.id for c in page.items)
        if page.next_cursor is None:
            break
        clock.advance(1)
        victim = convs[step % len(convs)]
        store.append(victim.id, "user", "touch")
        touched.add(victim.id)
        store.start(contact(), tenant=tenant)
        step += 3
        page = store.list(tenant=tenant, limit=4, cursor=page.next_cursor)
    assert len(seen) == len(set(seen))
    untouched = {c.id for c in convs} - touched
    assert untouched <= set(seen)


def test_list_bad_cursor(store: Any) -> None:
    with pytest.raises(InvalidInput):
        store.list(cursor="not-a-cursor!!")


# --- events ------------------------------------------------------------------------------


def test_events_kinds_and_resume(store: Any) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    conv = store.start(contact(), tenant=tenant)
    store.append(conv.id, "user", "secret-content")
    store.set_stage(conv.id, "Q1")
    store.save_state(conv.id, {"a": 1})
    store.set_status(conv.id, "waiting_agent")
    store.close_conversation(conv.id)
    events = list(store.events(tenant=tenant))
    assert [e.kind for e in events] == [
        "conversation.started",
        "message.appended",
        "status.changed",
        "stage.changed",
        "state.saved",
        "status.changed",
        "conversation.closed",
    ]
    assert all(e.conversation_id == conv.id and e.tenant == tenant for e in events)
    assert [e.kind for e in events][:2] == [EventKind.STARTED, EventKind.MESSAGE_APPENDED]
    assert all(type(e.kind) is EventKind for e in events)
    assert "secret-content" not in repr([e.data for e in events])
    assert events[1].data == {"seq": 1, "role": "user"}
    rest = list(store.events(tenant=tenant, after=events[2].id))
    assert [e.id for e in rest] == [e.id for e in events[3:]]
    ids = [e.id for e in events]
    assert ids == sorted(ids)


def test_events_tenant_filter(store: Any) -> None:
    t1, t2 = f"t-{uuid4().hex[:8]}", f"t-{uuid4().hex[:8]}"
    store.start(contact(), tenant=t1)
    store.start(contact(), tenant=t2)
    assert {e.tenant for e in store.events(tenant=t1)} == {t1}
    all_tenants = {e.tenant for e in store.events()}
    assert {t1, t2} <= all_tenants


def test_events_cursor_expired(make_store: Callable[..., Any]) -> None:
    store = make_store(limits=Limits(events_kept=5))
    tenant = f"t-{uuid4().hex[:8]}"
    conv = store.start(contact(), tenant=tenant)
    first = list(store.events(tenant=tenant))[0]
    for i in range(10):
        store.append(conv.id, "user", f"m{i}")
    with pytest.raises(CursorExpired):
        list(store.events(tenant=tenant, after=first.id))
    assert len(list(store.events())) <= 5


def test_events_wait_receives_from_other_thread(store: Any) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    conv = store.start(contact(), tenant=tenant)
    last = list(store.events(tenant=tenant))[-1].id
    timer = threading.Timer(0.3, lambda: store.append(conv.id, "user", "later"))
    timer.start()
    try:
        got = []
        for event in store.events(tenant=tenant, after=last, timeout=10):
            got.append(event)
            break
    finally:
        timer.join()
    assert got and got[0].kind == "message.appended"


# --- erasure -----------------------------------------------------------------------------


def test_delete_erases(store: Any, store_url: str) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    conv = store.start(contact(), tenant=tenant)
    secret = f"secret-{uuid4()}"
    store.append(conv.id, "user", secret)
    store.save_state(conv.id, {"s": secret})
    store.delete(conv.id)
    with pytest.raises(ConversationNotFound):
        store.get(conv.id)
    with pytest.raises(ConversationNotFound):
        store.messages(conv.id)
    with pytest.raises(ConversationNotFound):
        store.delete(conv.id)
    assert store.list(tenant=tenant).items == []
    events = list(store.events(tenant=tenant))
    assert [e.kind for e in events] == ["conversation.deleted"]
    assert events[0].data == {}
    assert secret not in repr(events)
    _assert_not_on_disk(store, store_url, secret)


def test_delete_contact_erases(store: Any, store_url: str, clock: ManualClock) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    cid = contact()
    secret = f"secret-{uuid4()}"
    a = store.start(cid, tenant=tenant)
    store.append(a.id, "user", secret)
    store.close_conversation(a.id)
    clock.advance(timedelta(seconds=1))  # b is the younger: the receipt lists a first
    b = store.start(cid, tenant=tenant)
    store.save_state(b.id, {"s": secret})
    store.remember(cid, "name", secret, tenant=tenant)
    other = store.start(contact(), tenant=tenant)
    logged = [e for e in store.events(tenant=tenant) if e.conversation_id in {a.id, b.id}]
    receipt = store.delete_contact(cid, tenant=tenant)
    assert isinstance(receipt, ErasureReceipt)
    assert (receipt.tenant, receipt.contact_id) == (tenant, cid)
    assert receipt.conversations == (a.id, b.id)
    assert (receipt.live, receipt.messages, receipt.states, receipt.facts) == (2, 1, 1, 1)
    assert receipt.events == len(logged) > 0
    assert receipt.erased_at == clock.now()
    assert receipt.backend == store_url.split(":", 1)[0] and receipt.store == store.url
    for conv in (a, b):
        with pytest.raises(ConversationNotFound):
            store.get(conv.id)
    assert store.recall(cid, tenant=tenant) == []
    assert [c.id for c in store.list(tenant=tenant).items] == [other.id]
    assert store.find_open(cid, tenant=tenant) is None
    events = [e for e in store.events(tenant=tenant) if e.conversation_id in {a.id, b.id}]
    assert {e.kind for e in events} == {"conversation.deleted"}
    assert all(e.data == {} for e in events)
    _assert_not_on_disk(store, store_url, secret)
    again = store.delete_contact(cid, tenant=tenant)  # nothing left: an empty receipt
    assert (again.conversations, again.live, again.messages, again.facts) == ((), 0, 0, 0)


def _assert_not_on_disk(store: Any, store_url: str, secret: str) -> None:
    if not store_url.startswith("sqlite:///"):
        return
    path = Path(store_url[len("sqlite:///") :])
    store.sweep()
    for candidate in [path, *path.parent.glob(path.name + "-*")]:
        if candidate.exists():
            assert secret.encode() not in candidate.read_bytes(), candidate


# --- contact memory ----------------------------------------------------------------------


def test_remember_recall_tiers(lone_store: Any, clock: Any) -> None:
    store = lone_store
    cid = contact()
    store.remember(cid, "name", "Ana", tier="critical")
    store.remember(cid, "mood", {"v": "ok"}, tier="low")
    fact = store.remember(cid, "plan", [1, 2])  # medium
    assert fact.tier == "medium"
    assert fact.expires_at == fact.updated_at + timedelta(days=7)
    assert {f.key for f in store.recall(cid)} == {"name", "mood", "plan"}
    assert [f.value for f in store.recall(cid, "mood")] == [{"v": "ok"}]
    clock.advance(timedelta(hours=25))
    assert {f.key for f in store.recall(cid)} == {"name", "plan"}
    clock.advance(timedelta(days=7))
    assert {f.key for f in store.recall(cid)} == {"name"}
    assert store.sweep().facts_purged == 2
    assert store.recall(cid, tenant="other") == []


def test_remember_overwrites_and_bad_tier(store: Any) -> None:
    cid = contact()
    store.remember(cid, "k", 1)
    store.remember(cid, "k", 2)
    assert [f.value for f in store.recall(cid, "k")] == [2]
    with pytest.raises(InvalidInput):
        store.remember(cid, "k", 3, tier="forever")
