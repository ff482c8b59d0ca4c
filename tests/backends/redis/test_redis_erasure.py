"""Redis erasure verified in the raw keyspace: no key of the store's prefix keeps a byte of an
erased contact, in its name, its value (read by type, the event stream with XRANGE) or its DUMP.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

import threadkeep
from tests._servers import REDIS_BASE
from tests.backends._erasure import erase_and_check, fill
from threadkeep.backends.redis._keys import Keys

pytestmark = pytest.mark.redis


def _values(client: Any, key: bytes) -> list[bytes]:
    """The key's name and every member, field, value and score, read as its type."""
    kind = client.type(key)
    parts: list[Any] = [key]
    if kind == b"string":
        parts.append(client.get(key))
    elif kind == b"hash":
        parts += [x for pair in client.hgetall(key).items() for x in pair]
    elif kind == b"list":
        parts += client.lrange(key, 0, -1)
    elif kind == b"set":
        parts += client.smembers(key)
    elif kind == b"zset":
        parts += [x for pair in client.zrange(key, 0, -1, withscores=True) for x in pair]
    elif kind == b"stream":
        for entry_id, fields in client.xrange(key):
            parts += [entry_id, *(x for pair in fields.items() for x in pair)]
    else:
        raise AssertionError(f"unexpected type {kind!r} of {key!r}")
    return [p if isinstance(p, bytes) else str(p).encode() for p in parts]


def _scan(prefix: str) -> tuple[bytes, bytes]:
    """Every key of the store read by type, and every key's DUMP, each joined."""
    client = redis.Redis.from_url(REDIS_BASE)  # bytes: nothing decoded away
    try:
        keys = list(client.scan_iter(match=Keys(prefix).pattern, count=1000))
        assert keys
        read = b"\n".join(v for key in keys for v in _values(client, key))
        dumped = b"\n".join(client.dump(key) or b"" for key in keys)
    finally:
        client.close()
    return read, dumped


def test_an_erased_contact_leaves_nothing_in_any_key(prefix: str) -> None:
    with threadkeep.open(f"{REDIS_BASE}?prefix={prefix}") as store:
        gone = fill(store, "t-1", "gone")
        kept = fill(store, "t-1", "kept")
        read, _ = _scan(prefix)
        assert gone.marker.encode() in read and gone.contact.encode() in read
        erase_and_check(store, gone)
    read, dumped = _scan(prefix)
    assert gone.marker.encode() not in read  # content, metadata, payload, state, facts, keys
    assert gone.marker.encode() not in dumped
    assert gone.contact.encode() not in read  # the contact id: no key name, member or event
    assert kept.marker.encode() in read and kept.marker.encode() in dumped  # scans can fail
