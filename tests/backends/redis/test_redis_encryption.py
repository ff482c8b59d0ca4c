"""Redis encryption at rest verified in the raw keyspace (values read by type, and DUMPs)."""

from __future__ import annotations

import pytest
import redis

import threadkeep
from tests._servers import REDIS_BASE
from tests.backends._sealed import KEYS, fill
from tests.backends.redis.test_redis_erasure import _scan
from threadkeep.backends.redis._keys import Keys

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


def test_rotation_keeps_every_keys_expiry(prefix: str) -> None:
    url = f"{REDIS_BASE}?prefix={prefix}"
    old = threadkeep.Encryption(keys={"k1": b"1" * 32}, current="k1")
    new = threadkeep.Encryption(keys={"k2": b"2" * 32, "k1": b"1" * 32}, current="k2")
    with threadkeep.open(url, encryption=old) as store:
        conv = store.start("c-1", tenant="t-1")
        store.append(conv.id, "user", "hello", idempotency_key="k")
        store.save_state(conv.id, {"a": 1})
        store.remember("c-1", "name", "Ann", tenant="t-1")
    keys = Keys(prefix)
    names = [
        keys.messages(conv.id),
        keys.idempotency(conv.id),
        keys.states(conv.id),
        keys.facts("t-1", "c-1"),
    ]
    client = redis.Redis.from_url(REDIS_BASE)
    try:
        before = [client.pexpiretime(name) for name in names]
        assert all(at > 0 for at in before)
        with threadkeep.open(url, encryption=new) as store:
            assert store.reencrypt(tenant="t-1").rewritten == 3  # its key record goes along
        assert [client.pexpiretime(name) for name in names] == before
        entry = client.lindex(keys.messages(conv.id), 0)
        assert isinstance(entry, bytes)
        assert entry.split(b"\n")[-1].startswith(b"tk1:k2:")
        assert client.hget(keys.idempotency(conv.id), "k") == entry
    finally:
        client.close()
