"""Export from one store and import into each backend: a lossless move between backends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest

import threadkeep
from threadkeep.transfer import export_records, import_record


def _records(store: threadkeep.Store, tenant: str) -> list[dict[str, Any]]:
    return list(export_records(store, tenant)[1])


def test_export_then_import_into_each_backend(store_url: str) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    clock = threadkeep.ManualClock()
    with threadkeep.open("memory://", clock=clock) as src:
        a = src.start("c-1", tenant=tenant, agent_id="jorge", channel="sms", stage="Q1",
                      metadata={"intent": "sell"})  # fmt: skip
        for i in range(5):
            clock.advance(timedelta(seconds=7))
            src.append(a.id, "user" if i % 2 == 0 else "assistant", f"m{i}",
                       metadata={"i": i}, idempotency_key=f"wamid.{i}")  # fmt: skip
        src.save_state(a.id, {"price": 450_000})
        src.set_status(a.id, "waiting_agent")
        b = src.start("c-2", tenant=tenant, retention=threadkeep.Retention(ttl=None))
        src.append(b.id, "user", "bye")
        src.close_conversation(b.id)
        src.remember("c-1", "prefers", "text", tenant=tenant, tier="critical",
                     source={"kind": "crm", "event": "ContactUpdate"})  # fmt: skip
        original = _records(src, tenant)

    target_clock = threadkeep.ManualClock()
    with threadkeep.open(store_url, clock=target_clock) as dst:
        assert [import_record(dst, target_clock, r) for r in original] == [True, True]
        assert [import_record(dst, target_clock, r) for r in original] == [False, False]
        copied = _records(dst, tenant)
        # A retried webhook after the move is still recognised as a replay.
        target_clock.advance(timedelta(minutes=1))
        replay = dst.append(a.id, "user", "m0", idempotency_key="wamid.0", tenant=tenant)
        assert replay.seq == 1
    for rec in original:
        rec["conversation"]["state_version"] = rec["state"]["version"] = min(
            rec["state"]["version"], 1
        )
    assert copied == original


def _record(tenant: str, conversation_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    at = "2026-01-01T00:00:00+00:00"
    return {
        "conversation": {"id": conversation_id, "tenant": tenant, "contact_id": "c-9",
                         "status": "active", "created_at": at, "last_activity_at": at,
                         "expires_at": None, "stage": None, "metadata": {}},
        "messages": messages,
        "state": {"version": 0, "value": None},
        "facts": [{"key": "k", "value": 1, "tier": "nope", "updated_at": at}],
    }  # fmt: skip


def test_a_failed_import_leaves_nothing_half_made(store_url: str) -> None:
    """A record with a bad message (after a good one), a bad time or a bad fact raises
    InvalidInput and writes nothing: no conversation, no message, no fact."""
    tenant = f"t-{uuid4().hex[:8]}"
    good = {"seq": 1, "role": "user", "content": "hi", "created_at": "2026-01-01T00:00:01+00:00"}
    bad_records = [
        _record(tenant, f"x-{uuid4().hex[:8]}", [good, {**good, "seq": 2, "metadata": [1]}]),
        _record(tenant, f"x-{uuid4().hex[:8]}", [good, {**good, "seq": 2, "created_at": "now"}]),
        _record(tenant, f"x-{uuid4().hex[:8]}", [good]),  # its fact's tier is bad
    ]
    bad_records[0]["facts"] = bad_records[1]["facts"] = []
    clock = threadkeep.ManualClock()
    with threadkeep.open(store_url, clock=clock) as dst:
        for record in bad_records:
            with pytest.raises(threadkeep.InvalidInput):
                import_record(dst, clock, record)
            with pytest.raises(threadkeep.ConversationNotFound):
                dst.get(record["conversation"]["id"])
        assert dst.list(tenant=tenant).items == []
        assert dst.recall("c-9", tenant=tenant) == []
