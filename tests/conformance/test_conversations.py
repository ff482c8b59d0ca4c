"""Conversations: start, get, find_open, resume, append, messages, context, lifecycle."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest

import threadkeep
from tests.core.test_lifecycle import EXPECTED_TRANSITIONS
from threadkeep import (
    ConversationClosed,
    ConversationNotFound,
    IllegalTransition,
    InvalidInput,
    Limits,
    Retention,
    Status,
)


def contact() -> str:
    return f"c-{uuid4()}"


def test_start_and_get(store: Any) -> None:
    cid = contact()
    conv = store.start(
        cid, tenant="t1", agent_id="bot", channel="web", stage="Q0", metadata={"a": 1}
    )
    assert conv.status == "new"
    assert conv.status is Status.NEW
    assert (conv.contact_id, conv.tenant, conv.agent_id, conv.channel, conv.stage) == (
        cid,
        "t1",
        "bot",
        "web",
        "Q0",
    )
    assert conv.metadata == {"a": 1}
    assert conv.message_count == 0
    assert conv.state_version == 0
    assert conv.created_at.tzinfo is not None
    assert store.get(conv.id) == conv
    assert store.get(conv.id, tenant="t1") == conv


def test_get_unknown_is_not_found(store: Any) -> None:
    with pytest.raises(ConversationNotFound):
        store.get("conv-does-not-exist")


def test_find_open_and_resume(store: Any) -> None:
    cid = contact()
    assert store.find_open(cid) is None
    first = store.resume(cid)
    assert first.created
    found = store.resume(cid)
    assert found.id == first.id
    assert not found.created
    assert store.find_open(cid) == first
    store.close_conversation(first.id)
    assert store.find_open(cid) is None
    second = store.resume(cid)
    assert second.id != first.id
    assert second.status == "new"
    assert second.created


def test_created_says_which_call_made_the_conversation(store: Any) -> None:
    conv = store.start(contact())
    assert conv.created
    got = store.get(conv.id)
    assert not got.created
    assert got == conv  # a fact about the call, not the conversation
    assert "created" not in conv.to_dict()
    assert not any(c.created for c in store.list().items)


def test_append_assigns_gap_free_seq(store: Any) -> None:
    conv = store.start(contact())
    msgs = [store.append(conv.id, "user", f"m{i}") for i in range(5)]
    assert [m.seq for m in msgs] == [1, 2, 3, 4, 5]
    assert [m.content for m in store.messages(conv.id)] == [f"m{i}" for i in range(5)]
    assert store.get(conv.id).message_count == 5


def test_append_idempotency_replay_returns_same_message(store: Any, clock: Any) -> None:
    conv = store.start(contact())
    first = store.append(conv.id, "user", "hello", idempotency_key="k1", metadata={"x": 1})
    clock.advance(5)
    again = store.append(conv.id, "user", "hello", idempotency_key="k1", metadata={"x": 1})
    assert again == first
    assert again.replayed
    assert not first.replayed
    assert "replayed" not in again.to_dict()
    assert store.get(conv.id).message_count == 1
    other = store.append(conv.id, "user", "hello", idempotency_key="k2")
    assert other.seq == 2
    assert not other.replayed
    assert not any(m.replayed for m in store.messages(conv.id))


def test_idempotency_replay_after_close_returns_stored(store: Any) -> None:
    conv = store.start(contact())
    first = store.append(conv.id, "user", "hi", idempotency_key="k")
    store.close_conversation(conv.id)
    replay = store.append(conv.id, "user", "hi", idempotency_key="k")
    assert replay == first
    assert replay.replayed
    with pytest.raises(ConversationClosed):
        store.append(conv.id, "user", "hi", idempotency_key="k-new")


def test_append_to_closed_raises(store: Any) -> None:
    conv = store.start(contact())
    store.close_conversation(conv.id)
    with pytest.raises(ConversationClosed):
        store.append(conv.id, "user", "late")
    assert store.messages(conv.id) == []


def test_append_to_unknown_raises(store: Any) -> None:
    with pytest.raises(ConversationNotFound):
        store.append("conv-unknown", "user", "x")


@pytest.mark.parametrize(
    ("role", "content", "metadata"),
    [
        ("wizard", "hi", None),
        ("user", "", None),
        ("user", "   \n\t", None),
        ("user", "hi", {"bad": object()}),
        ("user", "hi", {"bad": float("nan")}),
        ("user", 42, None),
    ],
    ids=["unknown-role", "empty", "blank", "non-json-metadata", "nan-metadata", "non-str"],
)
def test_append_bad_input_writes_nothing(
    store: Any, role: str, content: Any, metadata: Any
) -> None:
    conv = store.start(contact())
    before = store.get(conv.id)
    with pytest.raises(InvalidInput):
        store.append(conv.id, role, content, metadata=metadata)
    assert store.messages(conv.id) == []
    assert store.get(conv.id) == before


def test_append_content_over_limit(make_store: Callable[..., Any]) -> None:
    store = make_store(limits=Limits(max_content_bytes=10))
    conv = store.start(contact())
    store.append(conv.id, "user", "x" * 10)
    with pytest.raises(InvalidInput):
        store.append(conv.id, "user", "x" * 11)
    with pytest.raises(InvalidInput):
        store.append(conv.id, "user", "é" * 6)  # 12 bytes UTF-8
    assert store.get(conv.id).message_count == 1


@pytest.mark.parametrize("bad_id", ["", "has space", "a/b", "x" * 1000, "ünï"])
def test_malformed_id_is_invalid_input(store: Any, bad_id: str) -> None:
    with pytest.raises(InvalidInput):
        store.get(bad_id)
    with pytest.raises(InvalidInput):
        store.append(bad_id, "user", "hi")


def test_start_non_json_metadata(store: Any) -> None:
    cid = contact()
    with pytest.raises(InvalidInput):
        store.start(cid, metadata={"x": {1, 2}})
    assert store.find_open(cid) is None


def test_messages_last_after_limit(store: Any) -> None:
    conv = store.start(contact())
    for i in range(1, 11):
        store.append(conv.id, "user", f"m{i}")
    assert [m.seq for m in store.messages(conv.id, last=3)] == [8, 9, 10]
    assert [m.seq for m in store.messages(conv.id, after=7)] == [8, 9, 10]
    assert [m.seq for m in store.messages(conv.id, after=2, limit=3)] == [3, 4, 5]
    assert [m.seq for m in store.messages(conv.id, limit=2)] == [1, 2]
    assert store.messages(conv.id, after=10) == []
    with pytest.raises(InvalidInput):
        store.messages(conv.id, last=2, after=1)
    with pytest.raises(InvalidInput):
        store.messages(conv.id, limit=0)


def test_context_window(make_store: Callable[..., Any]) -> None:
    store = make_store(retention=Retention(window=3))
    conv = store.start(contact())
    for i in range(5):
        store.append(conv.id, "user" if i % 2 == 0 else "assistant", f"m{i}")
    ctx = store.context(conv.id)
    assert ctx == [
        {"role": "user", "content": "m2"},
        {"role": "assistant", "content": "m3"},
        {"role": "user", "content": "m4"},
    ]


def test_per_conversation_retention(store: Any) -> None:
    conv = store.start(contact(), retention=Retention(window=2))
    for i in range(4):
        store.append(conv.id, "user", f"m{i}")
    assert [c["content"] for c in store.context(conv.id)] == ["m2", "m3"]


def test_max_messages_trims_oldest(make_store: Callable[..., Any]) -> None:
    store = make_store(retention=Retention(max_messages=3))
    conv = store.start(contact())
    for i in range(1, 6):
        store.append(conv.id, "user", f"m{i}")
    assert [m.seq for m in store.messages(conv.id)] == [3, 4, 5]
    assert store.get(conv.id).message_count == 3
    assert store.append(conv.id, "user", "m6").seq == 6


# --- lifecycle ---------------------------------------------------------------------------


def _conversation_in(store: Any, status: str) -> Any:
    conv = store.start(contact())
    path = {
        "new": [],
        "active": ["active"],
        "idle": ["active", "idle"],
        "waiting_agent": ["waiting_agent"],
        "closed": ["closed"],
    }[status]
    for step in path:
        conv = store.set_status(conv.id, step)
    assert conv.status == status
    return conv


@pytest.mark.parametrize("target", [s.value for s in Status])
@pytest.mark.parametrize("source", [s.value for s in Status])
def test_set_status_every_pair(store: Any, source: str, target: str) -> None:
    conv = _conversation_in(store, source)
    before = store.get(conv.id)
    if target == source or target in EXPECTED_TRANSITIONS[source]:
        after = store.set_status(conv.id, target)
        assert after.status == target
        assert store.get(conv.id).status == target
    else:
        with pytest.raises(IllegalTransition) as info:
            store.set_status(conv.id, target)
        assert set(info.value.allowed) == EXPECTED_TRANSITIONS[source]
        assert store.get(conv.id) == before


def test_unknown_status_is_invalid(store: Any) -> None:
    conv = store.start(contact())
    with pytest.raises(InvalidInput):
        store.set_status(conv.id, "sleeping")


def test_first_message_activates(store: Any) -> None:
    conv = store.start(contact())
    store.append(conv.id, "user", "hi")
    assert store.get(conv.id).status == "active"


def test_waiting_agent_stays_on_message(store: Any) -> None:
    conv = store.start(contact())
    store.set_status(conv.id, "waiting_agent")
    store.append(conv.id, "user", "hello?")
    assert store.get(conv.id).status == "waiting_agent"


def test_idle_becomes_active_on_message(store: Any) -> None:
    conv = _conversation_in(store, "idle")
    store.append(conv.id, "user", "back")
    assert store.get(conv.id).status == "active"


def test_set_stage(store: Any) -> None:
    conv = store.start(contact(), stage="Q0")
    assert store.set_stage(conv.id, "Q1").stage == "Q1"
    assert store.set_stage(conv.id, None).stage is None
    store.close_conversation(conv.id)
    with pytest.raises(ConversationClosed):
        store.set_stage(conv.id, "Q2")


def test_assign_sets_the_agent_once_and_logs_it(store: Any, clock: Any) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    conv = store.start(contact(), tenant=tenant)
    clock.advance(30)
    taken = store.assign(conv.id, "dana")
    assert taken.agent_id == "dana"
    assert taken.last_activity_at == conv.last_activity_at + timedelta(seconds=30)
    assert store.get(conv.id).agent_id == "dana"
    assert [c.id for c in store.list(tenant=tenant, agent_id="dana").items] == [conv.id]
    assert store.assign(conv.id, "dana").last_activity_at == taken.last_activity_at  # unchanged
    assert store.assign(conv.id, None).agent_id is None
    kinds = [e.kind for e in store.events(tenant=tenant)]
    assert kinds == ["conversation.started", "agent.assigned", "agent.assigned"]
    assert [e.data for e in store.events(tenant=tenant)][1:] == [
        {"from": None, "to": "dana"},
        {"from": "dana", "to": None},
    ]
    for bad in ("", "  ", "a\x00b", "x" * 257, 7):
        with pytest.raises(InvalidInput):
            store.assign(conv.id, bad)
    assert store.get(conv.id).agent_id is None
    with pytest.raises(ConversationNotFound):
        store.assign(conv.id, "dana", tenant="someone-else")
    store.close_conversation(conv.id)
    with pytest.raises(ConversationClosed):
        store.assign(conv.id, "dana")
    assert store.get(conv.id).agent_id is None


def test_set_retention_counts_from_the_last_activity(store: Any, clock: Any) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    conv = store.start(contact(), tenant=tenant)
    clock.advance(timedelta(days=6))
    kept = store.set_retention(conv.id, Retention(ttl=timedelta(days=30)))
    assert kept.expires_at == conv.last_activity_at + timedelta(days=30)
    assert kept.last_activity_at == conv.last_activity_at  # not activity
    clock.advance(timedelta(days=2))  # past the default 7 days: still there, swept or not
    store.sweep()
    assert store.get(conv.id).expires_at == kept.expires_at
    forever = store.set_retention(conv.id, Retention(ttl=None, window=2))
    assert forever.expires_at is None
    clock.advance(timedelta(days=400))
    store.sweep()
    assert store.get(conv.id).expires_at is None
    for text in ("a", "b", "c"):
        store.append(conv.id, "user", text)
    assert [m["content"] for m in store.context(conv.id)] == ["b", "c"]  # the new window
    unchanged = store.set_retention(conv.id, Retention(ttl=None, window=2))
    assert unchanged.last_activity_at == store.get(conv.id).last_activity_at
    kinds = [e.kind for e in store.events(tenant=tenant)]
    assert kinds.count("retention.changed") == 2
    short = store.set_retention(conv.id, Retention(ttl=timedelta(hours=1)))
    assert short.expires_at == short.last_activity_at + timedelta(hours=1)
    clock.advance(timedelta(hours=2))
    with pytest.raises(ConversationNotFound):
        store.get(conv.id)
    with pytest.raises(ConversationNotFound):
        store.set_retention(conv.id, Retention())
    with pytest.raises(InvalidInput):
        store.set_retention(store.start(contact()).id, {"ttl": None})


def test_activity_advances_last_activity(store: Any, clock: Any) -> None:
    conv = store.start(contact())
    clock.advance(60)
    store.append(conv.id, "user", "x")
    after = store.get(conv.id)
    assert after.last_activity_at == conv.last_activity_at + timedelta(seconds=60)
    assert after.expires_at == after.last_activity_at + timedelta(days=7)


# --- expiry and idling -------------------------------------------------------------------


def test_default_ttl_slides_on_activity(store: Any, clock: Any) -> None:
    cid = contact()
    conv = store.start(cid)
    assert conv.expires_at == conv.created_at + timedelta(days=7)
    clock.advance(timedelta(days=6))
    store.append(conv.id, "user", "still here")
    clock.advance(timedelta(days=6))
    assert store.get(conv.id).status == "active"
    clock.advance(timedelta(days=1))
    with pytest.raises(ConversationNotFound):
        store.get(conv.id)
    with pytest.raises(ConversationNotFound):
        store.append(conv.id, "user", "too late")
    with pytest.raises(ConversationNotFound):
        store.messages(conv.id)
    assert store.find_open(cid) is None
    assert conv.id not in {c.id for c in store.list(contact_id=cid).items}
    assert store.resume(cid).id != conv.id


def test_expired_not_counted(store: Any, clock: Any) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    store.start(contact(), tenant=tenant)
    assert store.counts(tenant=tenant).total == 1
    clock.advance(timedelta(days=7))
    assert store.counts(tenant=tenant).total == 0
    assert store.list(tenant=tenant).items == []


def test_ttl_none_never_expires(store: Any, clock: Any) -> None:
    conv = store.start(contact(), retention=Retention(ttl=None))
    assert conv.expires_at is None
    clock.advance(timedelta(days=3650))
    store.sweep()
    assert store.get(conv.id).id == conv.id


def test_sweep_idles_after_30_minutes(lone_store: Any, clock: Any) -> None:
    store = lone_store
    conv = store.start(contact())
    store.append(conv.id, "user", "hi")
    clock.advance(timedelta(minutes=29))
    assert store.sweep().idled == 0
    assert store.get(conv.id).status == "active"
    clock.advance(timedelta(minutes=1))
    dry = store.sweep(dry_run=True)
    assert (dry.dry_run, dry.idled, dry.purged) == (True, 1, 0)
    assert store.get(conv.id).status == "active"
    report = store.sweep()
    assert (report.dry_run, report.idled, report.purged) == (False, 1, 0)
    idle = store.get(conv.id)
    assert idle.status == "idle"
    assert idle.last_activity_at == store.messages(conv.id)[-1].created_at  # not activity
    assert store.sweep().idled == 0
    store.append(conv.id, "user", "back")
    assert store.get(conv.id).status == "active"


def test_sweep_idling_is_not_activity(store: Any, clock: Any) -> None:
    conv = store.start(contact())
    store.append(conv.id, "user", "hi")
    before = store.get(conv.id)
    clock.advance(timedelta(hours=1))
    store.sweep()
    after = store.get(conv.id)
    assert after.status == "idle"
    assert after.last_activity_at == before.last_activity_at
    assert after.expires_at == before.expires_at


def test_new_conversation_is_not_idled(store: Any, clock: Any) -> None:
    conv = store.start(contact())
    clock.advance(timedelta(hours=1))
    store.sweep()
    assert store.get(conv.id).status == "new"


def test_sweep_purges_expired(lone_store: Any, clock: Any) -> None:
    store = lone_store
    conv = store.start(contact())
    store.append(conv.id, "user", "hi")
    store.start(contact(), retention=Retention(ttl=None))
    clock.advance(timedelta(days=8))
    dry = store.sweep(dry_run=True)
    assert (dry.dry_run, dry.purged, dry.idled) == (True, 1, 0)
    report = store.sweep()
    assert (report.dry_run, report.purged, report.idled) == (False, 1, 0)
    with pytest.raises(ConversationNotFound):
        store.get(conv.id)
    assert store.sweep().purged == 0


def test_delete_of_expired_is_not_found(store: Any, clock: Any) -> None:
    conv = store.start(contact())
    clock.advance(timedelta(days=8))
    with pytest.raises(ConversationNotFound):
        store.delete(conv.id)


# --- tenants, store lifecycle ------------------------------------------------------------


def test_tenant_isolation(store: Any) -> None:
    conv = store.start(contact(), tenant="alpha")
    with pytest.raises(ConversationNotFound):
        store.get(conv.id, tenant="beta")
    with pytest.raises(ConversationNotFound):
        store.append(conv.id, "user", "x", tenant="beta")
    with pytest.raises(ConversationNotFound):
        store.messages(conv.id, tenant="beta")
    with pytest.raises(ConversationNotFound):
        store.set_status(conv.id, "closed", tenant="beta")
    with pytest.raises(ConversationNotFound):
        store.delete(conv.id, tenant="beta")
    assert store.find_open(conv.contact_id, tenant="beta") is None
    assert store.get(conv.id).status == "new"
    assert store.get(conv.id).message_count == 0


def test_closed_store_raises(make_store: Callable[..., Any]) -> None:
    store = make_store()
    conv = store.start(contact())
    store.close()
    store.close()  # idempotent
    with pytest.raises(threadkeep.StoreClosed):
        store.get(conv.id)
    with pytest.raises(threadkeep.StoreClosed):
        store.start(contact())


def test_ping(store: Any) -> None:
    store.ping()


def test_context_manager(store_url: str, clock: Any) -> None:
    with threadkeep.open(store_url, clock=clock) as store:
        store.start(contact())
    with pytest.raises(threadkeep.StoreClosed):
        store.start(contact())
