"""Redis encryption at rest verified in the raw keyspace (values read by type, and DUMPs)."""

from __future__ import annotations

import pytest

import threadkeep
from tests._servers import REDIS_BASE
from tests.backends._sealed import KEYS, fill
from tests.backends.redis.test_redis_erasure import _scan

pytestmark = pytest.mark.redis


def test_sealed_values_leave_no_plaintext_in_any_key(prefix: str) -> None:
    url = f"{REDIS_BASE}?prefix={prefix}"
    with threadkeep.open(url) as plain:
        shown = fill(plain, "plain")
    with threadkeep.open(url, encryption=KEYS) as store:
        hidden = fill(store, "sealed")
    read, dumped = _scan(prefix)
    assert shown.encode() in read and shown.encode() in dumped  # the scans can fail
    assert hidden.encode() not in read
    assert hidden.encode() not in dumped
