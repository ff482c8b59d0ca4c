"""Edge values get one answer on every backend: the bounds of ``_rules.validate``.

Each test here failed on at least one backend before the bounds were set (b07f6d3): an
``OverflowError`` or ``BackendError`` on one backend where another answered, a raw
``UnicodeEncodeError`` or ``RecursionError``, NaN saved as null, a wait that never ended.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest

from threadkeep import ConversationNotFound, InvalidInput, Retention

MAX_INT = 2**63 - 1


def contact() -> str:
    return f"c-{uuid4()}"


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# ---- integers: at most 2**63 - 1 (finding 7 and 13) ---------------------------------------


def test_reads_past_the_end_are_empty_up_to_the_largest_integer(store: Any) -> None:
    conv = store.start(contact())
    store.append(conv.id, "user", "hi")
    assert store.messages(conv.id, after=MAX_INT) == []
    assert store.messages(conv.id, after=MAX_INT, limit=1) == []
    assert store.messages(conv.id, after=1) == []
    events = list(store.events(after=str(MAX_INT), timeout=0))
    assert events == []


@pytest.mark.parametrize("after", [2**63, 10**30])
def test_integers_past_the_largest_are_invalid_input(store: Any, after: int) -> None:
    conv = store.start(contact())
    with pytest.raises(InvalidInput) as caught:
        store.messages(conv.id, after=after)
    assert caught.value.field == "after"
    with pytest.raises(InvalidInput):
        store.load_state(conv.id, version=after)
    with pytest.raises(InvalidInput):
        store.rollback_state(conv.id, after)
    with pytest.raises(InvalidInput):
        store.save_state(conv.id, {"a": 1}, expected_version=after)
    with pytest.raises(InvalidInput):
        list(store.events(after=str(after), timeout=0))


@pytest.mark.parametrize("version", [2**31, MAX_INT])
def test_large_state_versions_are_simply_not_kept(store: Any, version: int) -> None:
    conv = store.start(contact())
    store.save_state(conv.id, {"a": 1})
    with pytest.raises(InvalidInput, match="not kept"):
        store.load_state(conv.id, version=version)
    with pytest.raises(InvalidInput, match="not kept"):
        store.rollback_state(conv.id, version)
    with pytest.raises(Exception, match="version 1, not"):
        store.save_state(conv.id, {"a": 2}, expected_version=version)


@pytest.mark.parametrize(
    "cursor", ["²", "①", "1" + "0" * 30, "-1", "1-1", "", " 1", "99999999999999999999-0"]
)
def test_malformed_event_cursors_are_invalid_input(store: Any, cursor: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        list(store.events(after=cursor, timeout=0))
    assert caught.value.field == "after"


def test_event_cursors_may_be_written_the_redis_way(store: Any) -> None:
    tenant = f"t-{uuid4().hex}"
    store.start(contact(), tenant=tenant)
    store.start(contact(), tenant=tenant)
    first, second = list(store.events(tenant=tenant, timeout=0))
    number = first.id.removesuffix("-0")
    for cursor in (number, number + "-0"):
        assert [e.id for e in store.events(tenant=tenant, after=cursor, timeout=0)] == [second.id]


@pytest.mark.parametrize(
    "cursor",
    [
        _b64([2**63, "zz"]),
        _b64([True, "zz"]),
        _b64([1, "\ud800"]),
        _b64([1, "a\x00"]),
        _b64([-1, "zz"]),
        base64.urlsafe_b64encode(b"[" * 100_000).decode(),
        "[" * 100_000,
    ],
    ids=["past-max", "bool", "surrogate", "nul", "negative", "deep", "long"],
)
def test_crafted_list_cursors_are_invalid_input(store: Any, cursor: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.list(cursor=cursor)
    assert caught.value.field == "cursor"


def test_a_cursor_at_the_largest_activity_lists_from_the_start(store: Any) -> None:
    tenant = f"t-{uuid4().hex}"
    conv = store.start(contact(), tenant=tenant)
    page = store.list(tenant=tenant, cursor=_b64([MAX_INT, "zz"]))
    assert [c.id for c in page.items] == [conv.id]


# ---- leases and waits (finding 13) -----------------------------------------------------


@pytest.mark.parametrize(
    "lease", [math.nan, math.inf, -math.inf, 1e300, 0, -1, "30", 365 * 86400 + 1]
)
def test_bad_leases_are_invalid_input(store: Any, lease: Any) -> None:
    conv = store.start(contact())
    with pytest.raises(InvalidInput) as caught, store.turn(conv.id, lease=lease):
        pass
    assert caught.value.field == "lease"


def test_the_longest_lease_is_a_year(store: Any) -> None:
    conv = store.start(contact())
    with store.turn(conv.id, lease=timedelta(days=365)) as turn:
        assert turn.append("assistant", "ok").seq == 1


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -1, "1"])
def test_bad_waits_are_invalid_input_not_a_hang(store: Any, timeout: Any) -> None:
    conv = store.start(contact())
    with pytest.raises(InvalidInput):
        list(store.events(timeout=timeout))
    with pytest.raises(InvalidInput), store.turn(conv.id, timeout=timeout):
        pass


# ---- JSON values: depth, NaN, text (findings 1, 8, 14) -----------------------------------


def test_metadata_nests_at_most_64_levels_and_nothing_deeper_is_written(store: Any) -> None:
    conv = store.start(contact(), metadata=_nested(64))
    assert store.append(conv.id, "user", "ok", metadata=_nested(64)).seq == 1
    with pytest.raises(InvalidInput) as caught:
        store.start(contact(), metadata=_nested(65))
    assert caught.value.field == "metadata"
    with pytest.raises(InvalidInput):
        store.append(conv.id, "user", "deep", metadata=_nested(1200))  # was a RecursionError
    with pytest.raises(InvalidInput):
        store.remember(conv.contact_id, "k", [_nested(65)])
    assert store.get(conv.id).message_count == 1


@pytest.mark.parametrize(
    "metadata", [{"a": "\ud800"}, {"\udfff": 1}, {"a": ["ok", {"b": "x\ud800"}]}]
)
def test_lone_surrogates_in_metadata_are_invalid_input(store: Any, metadata: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.start(contact(), metadata=metadata)
    assert caught.value.field == "metadata"
    conv = store.start(contact())
    with pytest.raises(InvalidInput):
        store.append(conv.id, "user", "hi", metadata=metadata)
    with pytest.raises(InvalidInput):
        store.remember(conv.contact_id, "k", metadata)
    assert store.messages(conv.id) == []
    assert store.recall(conv.contact_id) == []


@pytest.mark.parametrize(
    "state", [{"a": math.nan}, {"b": math.inf}, [1, -math.inf], {"s": "\ud800"}]
)
def test_nan_infinity_and_lone_surrogates_in_state_are_invalid_input(
    store: Any, state: Any
) -> None:
    conv = store.start(contact())
    with pytest.raises(InvalidInput) as caught:
        store.save_state(conv.id, state)
    assert caught.value.field == "state"
    assert store.load_state(conv.id).version == 0


def test_a_state_with_nulls_is_saved_as_given(store: Any) -> None:
    conv = store.start(contact())
    store.save_state(conv.id, {"a": None, "b": [None, 1.5]})
    assert store.load_state(conv.id).value == {"a": None, "b": [None, 1.5]}


# ---- idempotency keys (finding 15) -------------------------------------------------------


def test_a_key_replays_its_message_after_max_messages_trimmed_it(store: Any) -> None:
    conv = store.start(contact(), retention=Retention(max_messages=2))
    first = store.append(conv.id, "user", "one", idempotency_key="k1")
    store.append(conv.id, "user", "two", idempotency_key="k2")
    store.append(conv.id, "user", "three", idempotency_key="k3")
    replay = store.append(conv.id, "user", "one", idempotency_key="k1")
    assert replay == first and replay.replayed
    assert [m.content for m in store.messages(conv.id)] == ["two", "three"]
    assert store.get(conv.id).message_count == 2


def test_keys_are_scoped_to_their_conversation(store: Any) -> None:
    a, b = store.start(contact()), store.start(contact())
    first = store.append(a.id, "user", "hi", idempotency_key="k")
    other = store.append(b.id, "user", "hi", idempotency_key="k")
    assert not other.replayed and other.conversation_id == b.id
    assert store.append(a.id, "user", "hi", idempotency_key="k") == first


def test_a_deleted_conversation_is_not_found_by_its_keys(make_store: Callable[..., Any]) -> None:
    store = make_store()
    conv = store.start(contact())
    store.append(conv.id, "user", "hi", idempotency_key="k")
    store.delete(conv.id)
    with pytest.raises(ConversationNotFound):
        store.append(conv.id, "user", "hi", idempotency_key="k")
