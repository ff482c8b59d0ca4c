"""What the raw-store encryption tests share: a contact whose encrypted values carry a marker.

Each backend's test fills one store without keys and one with keys, then scans the raw store
(with the erasure tests' scanners): the plain marker is there (so the scan can fail), the
sealed one is in no byte.
"""

from __future__ import annotations

import uuid

import threadkeep

__all__ = ["KEYS", "fill"]

KEYS = threadkeep.Encryption(keys={"k1": threadkeep.Encryption.generate_key()}, current="k1")


def fill(store: threadkeep.Store, who: str) -> str:
    """Store ``who``'s marker in message content and payload, state versions and facts (with
    their history), on a trimmed conversation too (archived idempotency keys); return it.
    """
    marker = f"{who}-{uuid.uuid4().hex}"
    for retention in (None, threadkeep.Retention(max_messages=1)):
        conv = store.start(f"contact-{uuid.uuid4().hex[:8]}", tenant="t-1", retention=retention)
        store.append(conv.id, "user", f"my secret is {marker}", idempotency_key="k-1")
        store.append(conv.id, "assistant", "", payload={"type": "text", "text": marker})
        store.save_state(conv.id, {"budget": marker, "v": 1})
        store.save_state(conv.id, {"budget": marker, "v": 2})
        store.remember(conv.contact_id, "name", f"name {marker}", tenant="t-1")
        store.remember(conv.contact_id, "name", f"renamed {marker}", tenant="t-1")
    return marker
