"""Delivery states of outgoing messages and the one rule of their order (sans I/O).

A message sent through a channel carries ``delivery``: ``{"state", "provider_id", "error",
"updated_at"}`` (plus ``attempted_at`` once a send was attempted), kept in its metadata under
``delivery``. States only move up: ``queued`` < ``queued`` with a send attempted < ``sent`` <
``delivered`` < ``read``, and ``failed`` is terminal. A change that does not move up (a
duplicate, a late ``sent`` after ``read``, anything after ``failed``) changes nothing.
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["DELIVERY_KEY", "DELIVERY_STATES", "apply", "rank"]

#: The message metadata key holding the delivery.
DELIVERY_KEY: Final = "delivery"
DELIVERY_STATES: Final = ("queued", "sent", "delivered", "read", "failed")
_RANK: Final = {state: 2 * i for i, state in enumerate(DELIVERY_STATES)}


def rank(delivery: Any) -> int:
    """Return the rank of a delivery (-1 for none or an unknown state)."""
    if not isinstance(delivery, dict):
        return -1
    state = delivery.get("state")
    if state not in _RANK:
        return -1
    attempted = state == "queued" and bool(delivery.get("attempted_at"))
    return _RANK[state] + (1 if attempted else 0)


def apply(metadata_json: str, delivery_json: str) -> str | None:
    """Return the metadata with ``delivery_json`` applied, or None when it changes nothing.

    Fields the new delivery leaves out or sets to null keep their stored values, except
    ``error``, which is the new delivery's own.
    """
    metadata = json.loads(metadata_json)
    current = metadata.get(DELIVERY_KEY)
    new = json.loads(delivery_json)
    if rank(new) <= rank(current):
        return None
    merged = dict(current) if isinstance(current, dict) else {}
    merged.update({k: v for k, v in new.items() if v is not None})
    merged["error"] = new.get("error")
    metadata[DELIVERY_KEY] = merged
    return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)
