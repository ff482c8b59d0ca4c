"""Delivery states of outgoing messages, on every backend and both APIs: set_delivery moves a
message's delivery up only (queued < attempted < sent < delivered < read; failed terminal),
atomically, keeps the provider id once known, and appends a message.delivery event."""

from __future__ import annotations

import threading
from typing import Any
from uuid import uuid4

import pytest

from threadkeep import ConversationNotFound, InvalidInput


def contact() -> str:
    return f"c-{uuid4()}"


def test_states_only_move_up(store: Any) -> None:
    conv = store.start(contact(), channel="whatsapp")
    store.append(conv.id, "user", "hi")
    reply = store.append(conv.id, "assistant", "hello", metadata={"reply_to": 1})
    assert reply.delivery is None and reply.to_dict()["delivery"] is None
    queued = store.set_delivery(conv.id, 2, "queued")
    assert queued.delivery["state"] == "queued" and queued.metadata["reply_to"] == 1
    attempted = store.set_delivery(conv.id, 2, "queued", attempted=True)
    assert attempted.delivery["attempted_at"] is not None
    sent = store.set_delivery(conv.id, 2, "sent", provider_id="wamid.OUT1")
    assert sent.delivery["provider_id"] == "wamid.OUT1"
    read = store.set_delivery(conv.id, 2, "read")
    # out of order and duplicates: nothing moves down
    for late in ("delivered", "sent", "queued", "read"):
        assert store.set_delivery(conv.id, 2, late).delivery == read.delivery
    stored = store.messages(conv.id)[1]
    assert stored.delivery["state"] == "read"
    assert stored.delivery["provider_id"] == "wamid.OUT1"  # kept from "sent"
    assert stored.to_dict()["delivery"]["state"] == "read"
    assert store.messages(conv.id)[0].delivery is None  # the other message is untouched


def test_failed_is_terminal_and_keeps_its_reason(store: Any) -> None:
    conv = store.start(contact())
    store.append(conv.id, "assistant", "hello")
    store.set_delivery(conv.id, 1, "sent", provider_id="SM1")
    failed = store.set_delivery(conv.id, 1, "failed", error="131047 Re-engagement message")
    assert failed.delivery["error"] == "131047 Re-engagement message"
    for late in ("read", "delivered", "failed"):
        assert store.set_delivery(conv.id, 1, late).delivery == failed.delivery


def test_events_and_missing_messages(store: Any) -> None:
    conv = store.start(contact())
    store.append(conv.id, "assistant", "hello")
    store.set_delivery(conv.id, 1, "sent")
    store.set_delivery(conv.id, 1, "sent")  # unchanged: no event
    kinds = [
        (e.kind, e.data) for e in store.events(tenant="default") if e.conversation_id == conv.id
    ]
    assert kinds[-1] == ("message.delivery", {"seq": 1, "state": "sent"})
    assert [k for k, _ in kinds].count("message.delivery") == 1
    assert store.set_delivery(conv.id, 7, "sent") is None
    with pytest.raises(ConversationNotFound):
        store.set_delivery(conv.id, 1, "read", tenant="another")
    with pytest.raises(InvalidInput):
        store.set_delivery(conv.id, 1, "bounced")
    with pytest.raises(InvalidInput):
        store.set_delivery(conv.id, 0, "sent")
    assert store.messages(conv.id)[0].delivery["state"] == "sent"


def test_keyed_message_replays_with_its_delivery(store: Any) -> None:
    conv = store.start(contact())
    store.append(conv.id, "assistant", "hello", idempotency_key="out-1")
    store.set_delivery(conv.id, 1, "delivered", provider_id="p1")
    again = store.append(conv.id, "assistant", "hello", idempotency_key="out-1")
    assert again.replayed and again.delivery["state"] == "delivered"
    assert store.message_by_key(conv.id, "out-1").delivery["provider_id"] == "p1"


def test_concurrent_updates_end_at_the_highest(make_store: Any, store_url: str) -> None:
    store = make_store()
    conv = store.start(contact())
    store.append(conv.id, "assistant", "hello")
    states = ["sent", "read", "delivered", "sent", "delivered", "queued"] * 2
    # separate handles where the backend is shared (a memory store lives in its one object)
    handles = [store if store_url.startswith("memory") else make_store() for _ in states]
    errors: list[BaseException] = []

    def worker(handle: Any, state: str) -> None:
        try:
            handle.set_delivery(conv.id, 1, state)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=a) for a in zip(handles, states, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.messages(conv.id)[0].delivery["state"] == "read"
