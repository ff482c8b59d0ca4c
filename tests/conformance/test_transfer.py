"""Export from one store and import into each backend: a lossless move between backends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import uuid4

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
