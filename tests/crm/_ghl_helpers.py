"""Helpers of the GoHighLevel tests: the test signing key, signed bodies, the map."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: The research notes' deterministic test key (§7.6): seed 00 01 02 … 1f.
TEST_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
TEST_PUBLIC_PEM = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAA6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=
-----END PUBLIC KEY-----
"""
LOCATION = "ve9EPM428h8vShlRW1KT"
PIPELINE = "VDm7RPYC2GLUvdpKmBfC"
STAGE_IDS = {
    "Q2": "11111111-0000-4000-8000-000000000002",
    "QUALIFIED": "11111111-0000-4000-8000-0000000000aa",
}
MAP = {
    "fields": {"price_expectation": "6dvNaf7VhkQ9snc5vnjJ", "motivation": {"key": "motivation"}},
    "pipeline": {"id": PIPELINE, "stages": STAGE_IDS},
    "tags": {"QUALIFIED": ["seller-qualified"], "STALLED": ["seller-stalled"]},
}


def sign(body: bytes) -> str:
    return base64.b64encode(TEST_KEY.sign(body)).decode()


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """A fresh webhook of ``kind`` (timestamp now, a new webhookId)."""
    return {
        "type": kind,
        "locationId": LOCATION,
        **fields,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "webhookId": str(uuid.uuid4()),
    }


def signed(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return raw, {"X-GHL-Signature": sign(raw), "Content-Type": "application/json"}
