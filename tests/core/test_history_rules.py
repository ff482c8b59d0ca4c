"""Batches checked whole before any write; where max_messages trimming may cut (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from threadkeep import DEFAULT_LIMITS, InvalidInput, Limits
from threadkeep._rules.history import check_items, check_message, trim_start
from threadkeep._rules.parts import CALLS, RESULT
from threadkeep._rules.rows import NewMessage


def check(
    items: object, *, distinct_keys: bool = False, max_batch: int = 1000
) -> tuple[NewMessage, ...]:
    return check_items(items, Limits(max_batch=max_batch), distinct_keys=distinct_keys)


def test_a_batch_is_checked_item_by_item():
    got = check([
        ("user", "hi"),
        ["assistant", "", {"payload": {"type": "function_call", "call_id": "c", "name": "f",
                                       "arguments": "{}"}}],
        ("tool", " ", {"payload": {"type": "function_call_output", "call_id": "c",
                                   "output": "ok"}, "idempotency_key": "k", "metadata": {"a": 1}}),
    ])  # fmt: skip
    assert [(m.role, m.content, m.link) for m in got] == [
        ("user", "hi", 0), ("assistant", "", CALLS), ("tool", " ", RESULT)
    ]  # fmt: skip
    assert got[0].payload_json is None
    assert got[2].payload_json == '{"type":"function_call_output","call_id":"c","output":"ok"}'
    assert (got[2].idempotency_key, got[2].metadata_json) == ("k", '{"a":1}')


def test_items_may_come_from_any_iterable():
    assert len(check(x for x in [("user", "a"), ("user", "b")])) == 2
    assert check([]) == ()


@pytest.mark.parametrize(
    ("items", "says"),
    [
        ("user: hi", "must be a list"),
        ({"role": "user"}, "must be a list"),
        (42, "must be a list"),
        ([("user",)], "item 0: must be"),
        ([("user", "a"), ("user", "b", "c", "d")], "item 1: must be"),
        (["user hi"], "item 0: must be"),
        ([("user", "a", ["payload"])], "item 0: options must be a dict"),
        ([("user", "a", {"colour": "red"})], "item 0: unknown option colour; allowed: payload"),
        ([("user", "a"), ("robot", "b")], "item 1: unknown role 'robot'"),
        ([("user", "")], "item 0: content is empty"),
        ([("user", "a", {"payload": (1,)})], "item 0: payload must be a JSON object"),
        ([("user", "a", {"metadata": [1]})], "item 0: metadata must be a JSON object"),
        ([("user", "a", {"idempotency_key": ""})], "item 0: idempotency_key"),
    ],
)
def test_a_bad_item_is_named(items, says):
    with pytest.raises(InvalidInput, match=says):
        check(items)


def test_batch_size_is_bounded():
    check([("user", "a")] * 3, max_batch=3)
    with pytest.raises(InvalidInput, match="at most 3 items"):
        check([("user", "a")] * 4, max_batch=3)


def test_keys_repeat_only_where_a_replay_makes_sense():
    items = [("user", "a", {"idempotency_key": "k"}), ("user", "a", {"idempotency_key": "k"})]
    assert len(check(items)) == 2  # append_many: the second replays the first
    with pytest.raises(InvalidInput, match="item 1: idempotency key 'k' is used twice"):
        check(items, distinct_keys=True)  # replace_messages: a history holds a key once


def test_blank_content_needs_a_payload():
    kwargs: dict[str, Any] = {"metadata": None, "idempotency_key": None, "limits": DEFAULT_LIMITS}
    assert check_message("assistant", "", payload=[{"type": "text", "text": "x"}], **kwargs)
    with pytest.raises(InvalidInput, match="content is empty"):
        check_message("assistant", "  ", payload=None, **kwargs)
    with pytest.raises(InvalidInput, match="content must be text"):
        check_message("assistant", None, payload={"a": 1}, **kwargs)


N, C, R = 0, CALLS, RESULT


@pytest.mark.parametrize(
    ("links", "first", "start"),
    [
        ([N, N, N, N], 2, 2),
        ([N, C, R, N], 2, 3),  # not at the result
        ([N, C, R, N], 1, 1),  # the call and its result, whole
        ([N, C, C, R, R, N], 2, 5),  # parallel calls: after both results
        ([N, C, N, C, R], 2, 3),  # a reasoning step (C) keeps the item after it
        ([N, C, R], 2, None),  # nothing may start: keep the exchange until it ends
        ([N, N], 0, 0),
        ([R, N], 0, 1),
    ],
)
def test_trim_keeps_whole_exchanges(links, first, start):
    assert trim_start(links, first) == start
