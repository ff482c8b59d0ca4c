"""What the raw-store erasure tests share: a contact whose data carries a marker everywhere.

Each backend's test fills a store with ``fill()``, checks that its raw scan finds both the
erased contact's marker and a kept contact's marker (so the scan can fail), erases the
contact with ``delete_contact()``, and scans again: the erased marker must be gone from every
byte it reads, the kept one still there.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import threadkeep
from threadkeep import Retention

__all__ = ["Marked", "erase_and_check", "fill"]


@dataclass(frozen=True)
class Marked:
    """A contact whose every stored value carries ``marker``."""

    tenant: str
    contact: str
    marker: str


def fill(store: threadkeep.Store, tenant: str, who: str) -> Marked:
    """Store a contact with ``marker`` in message content, metadata, payloads and idempotency
    keys (kept and archived by ``max_messages``), conversation metadata, state versions and
    facts (with their history).
    """
    marker = f"{who}-{uuid.uuid4().hex}"
    contact = f"{who}-contact-{uuid.uuid4().hex[:8]}"
    for retention in (None, Retention(max_messages=1)):  # the second archives trimmed keys
        conv = store.start(contact, tenant=tenant, metadata={"note": marker}, retention=retention)
        store.append(conv.id, "user", f"my secret is {marker}", metadata={"m": marker})
        store.append(
            conv.id,
            "assistant",
            "",
            payload={"type": "text", "text": f"payload {marker}"},
            idempotency_key=f"key-{marker}",
        )
        store.append(conv.id, "user", "again", idempotency_key=f"key2-{marker}")
        store.save_state(conv.id, {"budget": marker, "v": 1})
        store.save_state(conv.id, {"budget": marker, "v": 2})
        store.set_stage(conv.id, "Q1")
    store.remember(contact, "name", f"name {marker}", tenant=tenant)
    store.remember(contact, "name", f"renamed {marker}", tenant=tenant)  # the first is history
    return Marked(tenant, contact, marker)


def erase_and_check(store: threadkeep.Store, gone: Marked) -> threadkeep.ErasureReceipt:
    """Erase ``gone`` and check the receipt says what ``fill()`` stored."""
    receipt = store.delete_contact(gone.contact, tenant=gone.tenant)
    assert len(receipt.conversations) == 2 and receipt.live == 2
    assert receipt.messages == 3 + 1  # all three kept, then one (max_messages=1)
    assert (receipt.states, receipt.facts) == (4, 1)
    assert receipt.events > 0
    return receipt
