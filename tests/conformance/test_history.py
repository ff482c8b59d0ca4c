"""Lossless items and the history operations frameworks need, on every backend and both APIs.

payload kept verbatim; append_many (one transaction, one seq range, a key per item);
pop_last; clear_messages; replace_messages (compare-and-set on the last seq); messages with
``before=`` and any ``last=``; message_by_key; windows that never split a tool call from its
result; context() in each provider's format.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest

from threadkeep import (
    ConversationClosed,
    ConversationNotFound,
    HistoryConflict,
    InvalidInput,
    Limits,
    Retention,
    StateConflict,
    TurnInProgress,
)

SIGNATURE = "EqQBCkgIARABGAIiQHVb0a+/=="
BIG = "iVBORw0KGgo" * 60_000  # ~660 KB of base64: over the content limit, under the payload's


def contact() -> str:
    return f"c-{uuid4()}"


def call(call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "estimate", "arguments": "{}"}


def output(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": "450k"}


def seqs(messages: list[Any]) -> list[int]:
    return [m.seq for m in messages]


# ---- payload ------------------------------------------------------------------------------


def test_a_payload_reads_back_deep_equal(store: Any) -> None:
    conv = store.start(contact())
    blocks = [
        {"type": "thinking", "thinking": "Let me look…\n", "signature": SIGNATURE},
        {"type": "text", "text": "Sure", "citations": None},
        {"type": "tool_use", "id": "toolu_1", "name": "estimate", "input": {"zip": "78701",
                                                                          "n": 1.5, "x": None}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": BIG}},
        {"odd": "\u0000 NUL, \u2028 and emoji 🏠", "big": 2**70, "neg": -0.0, "t": True},
    ]  # fmt: skip
    msg = store.append(conv.id, "assistant", "", payload=blocks, idempotency_key="k1")
    assert msg.payload == blocks
    assert msg.content == ""
    (read,) = store.messages(conv.id)
    assert read.payload == blocks
    assert read.payload[0]["signature"] == SIGNATURE
    assert store.message_by_key(conv.id, "k1") == read
    replay = store.append(conv.id, "assistant", "", payload=blocks, idempotency_key="k1")
    assert (replay.seq, replay.payload) == (1, blocks)
    assert store.get(conv.id).message_count == 1


def test_a_message_without_payload_has_none(store: Any) -> None:
    conv = store.start(contact())
    msg = store.append(conv.id, "user", "hi")
    assert msg.payload is None
    assert store.messages(conv.id)[0].payload is None
    assert msg.to_dict()["payload"] is None


class _Text(str):
    """A str subclass, as an app's own text type or a ``(str, Enum)`` member would be."""

    def __str__(self) -> str:
        return "not the text"

    def __format__(self, spec: str) -> str:
        return "not the text either"


def test_text_of_a_str_subclass_is_kept_as_its_plain_string(store: Any) -> None:
    """Review (session 12): Redis built the returned message from the caller's objects while
    it stored their formatted text, so the two differed; every backend now keeps the plain
    string of a str subclass, returned and read back alike."""
    conv = store.start(contact())
    msg = store.append(conv.id, "user", _Text("hello"), idempotency_key=_Text("k-1"))
    (read,) = store.messages(conv.id)
    for got in (msg, read, store.message_by_key(conv.id, "k-1")):
        assert (got.content, got.idempotency_key) == ("hello", "k-1")
        assert type(got.content) is str and type(got.idempotency_key) is str


@pytest.mark.parametrize("content", ["", "  \n"])
def test_content_may_be_empty_only_with_a_payload(store: Any, content: str) -> None:
    conv = store.start(contact())
    with pytest.raises(InvalidInput, match="content"):
        store.append(conv.id, "assistant", content)
    msg = store.append(conv.id, "assistant", content, payload=call("c1"))
    assert msg.content == content


@pytest.mark.parametrize(
    ("payload", "says"),
    [((1, 2), "object or array"), ({"k": {1: 2}}, "keys"), ({"k": float("nan")}, "NaN")],
)
def test_a_bad_payload_writes_nothing(store: Any, payload: Any, says: str) -> None:
    conv = store.start(contact())
    with pytest.raises(InvalidInput, match=says):
        store.append(conv.id, "assistant", "x", payload=payload)
    assert store.get(conv.id).message_count == 0


def test_payload_has_its_own_size_limit(make_store: Callable[..., Any]) -> None:
    store = make_store(limits=Limits(max_payload_bytes=1000, max_content_bytes=10))
    conv = store.start(contact())
    store.append(conv.id, "user", "", payload={"t": "x" * 900})
    with pytest.raises(InvalidInput, match="max_payload_bytes"):
        store.append(conv.id, "user", "", payload={"t": "x" * 1000})
    assert store.get(conv.id).message_count == 1


def test_the_default_payload_limit_is_one_mib(store: Any) -> None:
    conv = store.start(contact())
    store.append(conv.id, "user", "", payload=["x" * (1024 * 1024 - 10)])
    with pytest.raises(InvalidInput, match="payload is 1048577 bytes"):
        store.append(conv.id, "user", "", payload=["x" * (1024 * 1024 - 3)])


# ---- append_many ----------------------------------------------------------------------------


def test_append_many_stores_a_batch_in_one_seq_range(store: Any) -> None:
    conv = store.start(contact())
    store.append(conv.id, "user", "before")
    got = store.append_many(
        conv.id,
        [
            ("user", "hi", {"idempotency_key": "k1", "metadata": {"via": "sms"}}),
            ("assistant", "", {"payload": call("c1")}),
            ("tool", "", {"payload": output("c1"), "idempotency_key": "k3"}),
            ("assistant", "450k"),
        ],
    )
    assert seqs(got) == [2, 3, 4, 5]
    assert [m.role for m in got] == ["user", "assistant", "tool", "assistant"]
    assert got[0].metadata == {"via": "sms"}
    assert got[1].payload == call("c1")
    assert store.messages(conv.id) == [store.messages(conv.id)[0], *got]
    conv = store.get(conv.id)
    assert (conv.status, conv.message_count) == ("active", 5)
    kinds = [e.kind for e in store.events(tenant="default") if e.conversation_id == conv.id]
    assert kinds.count("message.appended") == 5


def test_append_many_replays_items_already_stored(store: Any) -> None:
    conv = store.start(contact())
    batch = [("user", "a", {"idempotency_key": "k1"}), ("user", "b", {"idempotency_key": "k2"})]
    first = store.append_many(conv.id, batch)
    again = store.append_many(conv.id, batch)
    assert again == first
    assert [m.replayed for m in again] == [True, True]
    mixed = store.append_many(
        conv.id,
        [("user", "c", {"idempotency_key": "k3"}), ("user", "a", {"idempotency_key": "k1"}),
         ("user", "d"), ("user", "c", {"idempotency_key": "k3"})],
    )  # fmt: skip
    assert seqs(mixed) == [3, 1, 4, 3]
    assert [m.replayed for m in mixed] == [False, True, False, True]
    assert store.get(conv.id).message_count == 4


def test_append_many_refuses_the_whole_batch(store: Any) -> None:
    conv = store.start(contact())
    with pytest.raises(InvalidInput, match="role"):
        store.append_many(conv.id, [("user", "ok"), ("robot", "bad")])
    with pytest.raises(InvalidInput, match="item 1"):
        store.append_many(conv.id, [("user", "ok"), ("user", "x", {"colour": "red"})])
    with pytest.raises(InvalidInput):
        store.append_many(conv.id, [("user",)])
    assert store.get(conv.id).message_count == 0
    store.close_conversation(conv.id)
    with pytest.raises(ConversationClosed):
        store.append_many(conv.id, [("user", "late")])
    assert store.get(conv.id).message_count == 0


def test_append_many_of_nothing_is_nothing(store: Any) -> None:
    conv = store.start(contact())
    assert store.append_many(conv.id, []) == []
    with pytest.raises(ConversationNotFound):
        store.append_many("conv-does-not-exist", [("user", "x")])


def writers(make_store: Callable[..., Any], store_url: str) -> list[Any]:
    """Four handles on one store: separate ones where the backend is shared."""
    if store_url.startswith("memory"):
        return [make_store()] * 4  # a memory store lives in its one Store object
    return [make_store() for _ in range(4)]


def test_append_many_batches_never_interleave(
    make_store: Callable[..., Any], store_url: str
) -> None:
    stores = writers(make_store, store_url)
    conv = stores[0].start(contact())
    results: list[list[Any]] = []

    def write(s: Any, n: int) -> None:
        for i in range(5):
            results.append(s.append_many(conv.id, [("user", f"{n}.{i}.{j}") for j in range(4)]))

    threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for batch in results:
        first = batch[0].seq
        assert seqs(batch) == list(range(first, first + 4))
    assert seqs(stores[0].messages(conv.id)) == list(range(1, 81))


def test_a_turn_appends_items_under_its_lease(store: Any, clock: Any) -> None:
    conv = store.start(contact())
    with store.turn(conv.id, lease=10) as turn:
        got = turn.append_many(
            [("assistant", "", {"payload": call("c1")}), ("tool", "", {"payload": output("c1")})]
        )
        assert seqs(got) == [1, 2]
        assert turn.append("assistant", "", payload=call("c2")).payload == call("c2")
        clock.advance(11)
        with store.turn(conv.id, lease=10):
            with pytest.raises(TurnInProgress):
                turn.append_many([("assistant", "late")])
            with pytest.raises(TurnInProgress):
                turn.append("assistant", "", payload=call("c3"))
    assert seqs(store.messages(conv.id)) == [1, 2, 3]


# ---- pop_last, clear_messages, replace_messages ---------------------------------------------


def test_pop_last_removes_the_newest_message(store: Any) -> None:
    conv = store.start(contact())
    assert store.pop_last(conv.id) is None
    store.append(conv.id, "user", "a")
    b = store.append(conv.id, "assistant", "", payload=call("c"), idempotency_key="kb")
    assert store.pop_last(conv.id) == b
    assert seqs(store.messages(conv.id)) == [1]
    assert store.message_by_key(conv.id, "kb") is None
    again = store.append(conv.id, "assistant", "b2", idempotency_key="kb")
    assert (again.seq, again.content, again.replayed) == (2, "b2", False)
    conv = store.get(conv.id)
    assert conv.message_count == 2
    kinds = [e.kind for e in store.events(tenant="default") if e.conversation_id == conv.id]
    assert "message.popped" in kinds


def test_concurrent_pops_take_each_message_once(
    make_store: Callable[..., Any], store_url: str
) -> None:
    stores = writers(make_store, store_url)
    conv = stores[0].start(contact())
    stores[0].append_many(conv.id, [("user", str(i)) for i in range(40)])
    popped: list[Any] = []

    def pop(s: Any) -> None:
        while (m := s.pop_last(conv.id)) is not None:
            popped.append(m.content)

    threads = [threading.Thread(target=pop, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(popped, key=int) == [str(i) for i in range(40)]
    assert stores[0].get(conv.id).message_count == 0


def test_clear_messages_keeps_conversation_state_and_lifecycle(store: Any) -> None:
    conv = store.start(contact(), stage="Q1")
    store.append_many(conv.id, [("user", "a", {"idempotency_key": "ka"}), ("assistant", "b")])
    store.save_state(conv.id, {"budget": 5})
    store.set_status(conv.id, "waiting_agent")
    assert store.clear_messages(conv.id) == 2
    assert store.messages(conv.id) == []
    assert store.message_by_key(conv.id, "ka") is None
    after = store.get(conv.id)
    assert (after.status, after.stage, after.message_count) == ("waiting_agent", "Q1", 0)
    assert store.load_state(conv.id).value == {"budget": 5}
    assert store.append(conv.id, "user", "again").seq == 3  # seqs are never reused
    assert store.clear_messages(conv.id) == 1
    assert store.clear_messages(conv.id) == 0
    kinds = [e.kind for e in store.events(tenant="default") if e.conversation_id == conv.id]
    assert kinds.count("messages.cleared") == 2  # clearing nothing changes nothing


def test_replace_messages_swaps_the_history_when_it_is_unchanged(store: Any) -> None:
    conv = store.start(contact())
    store.append_many(conv.id, [("user", str(i)) for i in range(5)])
    summary = [("system", "summary of 0-3"), ("user", "4", {"idempotency_key": "k4"})]
    with pytest.raises(HistoryConflict) as info:
        store.replace_messages(conv.id, summary, expected_last_seq=4)
    assert isinstance(info.value, StateConflict)
    assert (info.value.expected_last_seq, info.value.current_last_seq) == (4, 5)
    assert len(store.messages(conv.id)) == 5
    new = store.replace_messages(conv.id, summary, expected_last_seq=5)
    assert seqs(new) == [6, 7]
    assert store.messages(conv.id) == new
    assert store.message_by_key(conv.id, "k4") == new[1]
    conv = store.get(conv.id)
    assert (conv.message_count, conv.status) == (2, "active")
    assert seqs(store.replace_messages(conv.id, [])) == []
    assert store.messages(conv.id) == []
    with pytest.raises(InvalidInput, match="twice"):
        store.replace_messages(conv.id, [("user", "a", {"idempotency_key": "x"})] * 2)
    kinds = [e.kind for e in store.events(tenant="default") if e.conversation_id == conv.id]
    assert kinds.count("messages.replaced") == 2


def test_history_changes_need_an_open_conversation(store: Any) -> None:
    conv = store.start(contact())
    store.append(conv.id, "user", "a")
    store.close_conversation(conv.id)
    on_closed: list[Callable[[], object]] = [
        lambda: store.pop_last(conv.id),
        lambda: store.clear_messages(conv.id),
        lambda: store.replace_messages(conv.id, []),
    ]
    for change in on_closed:
        with pytest.raises(ConversationClosed):
            change()
    assert len(store.messages(conv.id)) == 1
    on_missing: list[Callable[[], object]] = [
        lambda: store.pop_last("conv-does-not-exist"),
        lambda: store.clear_messages("conv-does-not-exist"),
        lambda: store.replace_messages("conv-does-not-exist", []),
        lambda: store.message_by_key("conv-does-not-exist", "k"),
    ]
    for change in on_missing:
        with pytest.raises(ConversationNotFound):
            change()


# ---- reading ------------------------------------------------------------------------------


def test_messages_pages_backwards_and_reads_any_tail(store: Any) -> None:
    conv = store.start(contact())
    store.append_many(conv.id, [("user", str(i)) for i in range(1000)])
    store.append_many(conv.id, [("user", str(i)) for i in range(1000, 1200)])
    assert seqs(store.messages(conv.id, before=11, limit=3)) == [8, 9, 10]
    assert seqs(store.messages(conv.id, before=3, limit=10)) == [1, 2]
    assert store.messages(conv.id, before=1, limit=10) == []
    assert len(store.messages(conv.id, before=2**70, limit=5)) == 5
    assert len(store.messages(conv.id, last=5000)) == 1200
    assert len(store.messages(conv.id, last=2**31 - 1)) == 1200
    assert len(store.messages(conv.id, last=2**64)) == 1200
    assert seqs(store.messages(conv.id, last=1100))[0] == 101
    with pytest.raises(InvalidInput):
        store.messages(conv.id, before=5, after=1)
    with pytest.raises(InvalidInput):
        store.messages(conv.id, last=0)


def test_message_by_key(store: Any) -> None:
    conv = store.start(contact())
    msg = store.append(conv.id, "user", "hi", idempotency_key="wamid.1")
    assert store.message_by_key(conv.id, "wamid.1") == msg
    assert store.message_by_key(conv.id, "other") is None


# ---- windows --------------------------------------------------------------------------------


def exchange(n: int) -> list[Any]:
    return [
        ("user", f"q{n}"),
        ("assistant", "", {"payload": call(f"c{n}")}),
        ("tool", "", {"payload": output(f"c{n}")}),
        ("assistant", f"a{n}"),
    ]


def test_windows_never_start_with_an_orphaned_result(make_store: Callable[..., Any]) -> None:
    store = make_store(retention=Retention(window=2))
    conv = store.start(contact())
    store.append_many(conv.id, exchange(1))
    # the last 2 would be [result, a1]: the window starts after the result
    assert store.context(conv.id) == [{"role": "assistant", "content": "a1"}]
    assert [m.content for m in store.messages(conv.id, last=2)] == ["a1"]
    assert [m.role for m in store.messages(conv.id, last=3)] == ["assistant", "tool", "assistant"]
    store.append_many(conv.id, exchange(2)[:3])
    assert store.context(conv.id) == [
        {"role": "assistant", "content": "estimate({})"},
        {"role": "tool", "content": "450k"},
    ]
    assert store.messages(conv.id, last=1) == []  # a result alone is no window


def test_max_messages_trims_whole_exchanges(make_store: Callable[..., Any]) -> None:
    store = make_store(retention=Retention(max_messages=2))
    conv = store.start(contact())

    def kept() -> list[str]:
        return [m.content or m.role for m in store.messages(conv.id)]

    store.append_many(conv.id, exchange(1))
    assert kept() == ["a1"]  # not [result, a1]
    store.append_many(conv.id, exchange(2)[:2])
    assert kept() == ["q2", "assistant"]
    store.append(conv.id, "tool", "", payload=output("c2"))
    assert kept() == ["assistant", "tool"]
    store.append(conv.id, "assistant", "a2")
    assert kept() == ["a2"]
    assert store.get(conv.id).message_count == 1


def test_context_in_provider_formats(store: Any) -> None:
    conv = store.start(contact())
    store.append(conv.id, "system", "Be brief.")
    store.append_many(conv.id, exchange(1))
    store.append(conv.id, "agent", "Jorge here.")
    anthropic = store.context(conv.id, format="anthropic")
    assert anthropic["system"] == "Be brief."
    assert [m["role"] for m in anthropic["messages"]] == ["user", "assistant", "user", "assistant"]
    chat = store.context(conv.id, format="openai")
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "tool", "assistant"]
    responses = store.context(conv.id, format="openai-responses")
    assert responses[2] == call("c1")
    plain = store.context(conv.id)
    assert plain[-1] == {"role": "agent", "content": "Jorge here."}
    with pytest.raises(InvalidInput, match="allowed: plain"):
        store.context(conv.id, format="gemini")


def test_context_token_budget_drops_whole_turns(store: Any) -> None:
    conv = store.start(contact())
    for n in range(3):
        store.append_many(conv.id, exchange(n))
    everything = store.context(conv.id)
    assert len(everything) == 12
    newest = store.context(conv.id, token_budget=1)
    assert [m["content"] for m in newest][0] == "q2"
    two = store.context(conv.id, token_budget=10_000, count_tokens=lambda m: 1)
    assert len(two) == 12
    some = store.context(conv.id, token_budget=8, count_tokens=lambda m: 1)
    assert [m["content"] for m in some][0] == "q1"
