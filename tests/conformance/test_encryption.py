"""Encryption at rest on every backend × API: values round-trip, the raw store holds only
sealed text (seen through a store opened without keys), rotation moves every value to the
current key while appends go on, and a missing key or an altered value is a clear error.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import threadkeep
from threadkeep import Encryption, EncryptionError, Retention
from threadkeep._rules.ops import RewriteOp

K1 = Encryption(keys={"k1": b"1" * 32}, current="k1")
K2_K1 = Encryption(keys={"k2": b"2" * 32, "k1": b"1" * 32}, current="k2")
K2 = Encryption(keys={"k2": b"2" * 32}, current="k2")
PAYLOAD = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
RESULT = {"type": "function_call_output", "call_id": "c1", "output": "ok"}


@pytest.fixture
def stores(make_store: Callable[..., Any], store_url: str) -> Callable[..., Any]:
    """``make_store``, whose stores of memory:// share one backend (as other URLs share data)."""
    shared: dict[str, Any] = {}

    def make(**kwargs: Any) -> Any:
        if store_url.startswith("memory:"):
            kwargs["instrument"] = lambda backend: shared.setdefault("backend", backend)
        return make_store(**kwargs)

    return make


@pytest.fixture
def tenant() -> str:
    return f"enc-{uuid.uuid4().hex[:12]}"


def _contact(secret: str) -> str:
    """The contact of ``_fill``: ids are not encrypted, so they must not hold the secret."""
    return "contact-" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def _fill(store: Any, secret: str, tenant: str) -> str:
    """A conversation with ``secret`` in content, payloads, two states and a fact's history."""
    conv = store.start(_contact(secret), tenant=tenant)
    store.append(conv.id, "user", f"hello {secret}", idempotency_key="k-1")
    store.append(conv.id, "assistant", "", payload={**PAYLOAD, "arguments": secret})
    store.append(conv.id, "tool", f"result {secret}", payload={**RESULT, "output": secret})
    store.save_state(conv.id, {"v": 1, "s": secret})
    store.save_state(conv.id, {"v": 2, "s": secret})
    store.remember(_contact(secret), "name", f"old {secret}", tenant=tenant)
    store.remember(_contact(secret), "name", f"new {secret}", tenant=tenant)
    return str(conv.id)


def _raw_texts(raw: Any, conversation_id: str, contact: str, tenant: str) -> list[str]:
    """Every stored value a store without keys returns: what the backend holds."""
    texts = []
    for m in raw.messages(conversation_id):
        texts.append(m.content)
        if m.payload is not None:
            texts.append(m.payload)
    texts += [raw.load_state(conversation_id, version=v).value for v in (1, 2)]
    for fact in raw.recall(contact, tenant=tenant):
        texts += [fact.value, *(h.value for h in fact.history)]
    return texts


def test_values_round_trip_sealed(stores: Callable[..., Any], tenant: str) -> None:
    store = stores(encryption=K1)
    secret = uuid.uuid4().hex
    conv_id = _fill(store, secret, tenant)
    messages = store.messages(conv_id)
    assert [m.content for m in messages] == [f"hello {secret}", "", f"result {secret}"]
    assert messages[1].payload == {**PAYLOAD, "arguments": secret}
    assert store.message_by_key(conv_id, "k-1").content == f"hello {secret}"
    replay = store.append(conv_id, "user", f"hello {secret}", idempotency_key="k-1")
    assert replay.replayed and replay.content == f"hello {secret}" and replay.seq == 1
    window = store.context(conv_id, format="openai", token_budget=10_000)
    assert window[0] == {"role": "user", "content": f"hello {secret}"}
    assert store.load_state(conv_id).value == {"v": 2, "s": secret}
    assert store.load_state(conv_id, version=1).value == {"v": 1, "s": secret}
    assert store.rollback_state(conv_id, 1) == 3
    assert store.load_state(conv_id).value == {"v": 1, "s": secret}
    (fact,) = store.recall(_contact(secret), tenant=tenant)
    assert fact.value == f"new {secret}"
    assert [h.value for h in fact.history] == [f"old {secret}"]
    again = store.remember(_contact(secret), "name", f"new {secret}", tenant=tenant)
    assert len(again.history) == 1  # the same value refreshes, as without encryption
    popped = store.pop_last(conv_id)
    assert popped is not None and popped.content == f"result {secret}"
    items = [("user", f"summary {secret}"), ("assistant", "", {"payload": PAYLOAD})]
    new = store.replace_messages(conv_id, items)
    assert [m.content for m in new] == [f"summary {secret}", ""]
    assert new[1].payload == PAYLOAD
    assert store.get(conv_id).message_count == 2  # listing and counts are unaffected
    assert store.counts(tenant=tenant).total >= 1
    raw = stores()
    assert not any(
        secret in str(text) for text in _raw_texts(raw, conv_id, _contact(secret), tenant)
    )
    assert raw.messages(conv_id)[0].content.startswith("tk1:k1:")
    events = list(raw.events(tenant=tenant))
    assert events and not any(secret in str(e.data) for e in events)


def test_a_turns_append_read_is_sealed_and_answers_plaintext(
    stores: Callable[..., Any], tenant: str
) -> None:
    store = stores(encryption=K1)
    secret = uuid.uuid4().hex
    conv = store.start(_contact(secret), tenant=tenant)
    with store.turn(conv.id) as turn:
        message, seen = turn._append_read("user", f"hi {secret}", "k-1")
        again, _ = turn._append_read("user", f"hi {secret}", "k-1")
    assert (message.content, again.content, again.replayed) == (f"hi {secret}",) * 2 + (True,)
    assert seen == store.get(conv.id)
    raw = stores()
    assert raw.messages(conv.id)[0].content.startswith("tk1:k1:")


def test_sizes_are_checked_on_the_plaintext(stores: Callable[..., Any], tenant: str) -> None:
    store = stores(encryption=K1, limits=threadkeep.Limits(max_content_bytes=100))
    conv = store.start("c")
    assert store.append(conv.id, "user", "x" * 100).content == "x" * 100  # sealed: ~190
    with pytest.raises(threadkeep.InvalidInput):
        store.append(conv.id, "user", "x" * 101)


def test_a_missing_key_is_named_and_an_altered_value_is_refused(
    stores: Callable[..., Any],
    tenant: str,
) -> None:
    old = stores(encryption=K1)
    conv = old.start("c")
    old.append(conv.id, "user", "secret one")
    with pytest.raises(EncryptionError, match="'k1'") as caught:
        stores(encryption=K2).messages(conv.id)
    assert caught.value.key_id == "k1"
    raw = stores()
    sealed = raw.messages(conv.id)[0].content
    # a ciphertext copied into another conversation does not open (bound to its place)
    other = raw.start("c")
    raw.append(other.id, "user", sealed)
    with pytest.raises(EncryptionError, match="fails authentication"):
        old.messages(other.id)
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    raw.append(conv.id, "user", flipped)
    with pytest.raises(EncryptionError, match="altered"):
        old.messages(conv.id)


def test_rotation_moves_every_value_while_appends_go_on(
    stores: Callable[..., Any], tenant: str
) -> None:
    old = stores(encryption=K1)
    secret = uuid.uuid4().hex
    ids = [_fill(old, f"{secret}-{i}", tenant) for i in range(3)]
    rotating = stores(encryption=K2_K1)
    writer = stores(encryption=K2_K1)
    written: list[int] = []
    stop = threading.Event()

    def append_meanwhile() -> None:
        while not stop.is_set() and len(written) < 200:
            written.append(writer.append(ids[0], "user", f"during {len(written)}").seq)

    thread = threading.Thread(target=append_meanwhile)
    thread.start()
    progress: list[threadkeep.Reencrypted] = []
    try:
        report = rotating.reencrypt(tenant=tenant, batch=2, progress=progress.append)
    finally:
        stop.set()
        thread.join()
    assert report.done and report.conversations == 3
    assert [p.conversations for p in progress] == [1, 2, 3]
    assert rotating.reencrypt(tenant=tenant).rewritten == 0  # nothing left under k1
    new = stores(encryption=K2)  # the old key is gone: every value must open without it
    for i, conv_id in enumerate(ids):
        contents = [m.content for m in new.messages(conv_id, limit=1000, after=0)]
        assert contents[:3] == [f"hello {secret}-{i}", "", f"result {secret}-{i}"]
        assert new.load_state(conv_id, version=1).value == {"v": 1, "s": f"{secret}-{i}"}
        (fact,) = new.recall(_contact(f"{secret}-{i}"), tenant=tenant)
        assert (fact.value, fact.history[0].value) == (f"new {secret}-{i}", f"old {secret}-{i}")
    during = new.messages(ids[0], limit=1000, after=3)
    assert [m.content for m in during] == [f"during {n}" for n in range(len(written))]
    assert [m.seq for m in during] == written  # nothing lost, nothing overwritten
    raw = stores()
    for i, conv_id in enumerate(ids):
        texts = _raw_texts(raw, conv_id, _contact(f"{secret}-{i}"), tenant)
        assert all(str(t).startswith("tk1:k2:") for t in texts if t != ""), texts


def test_plaintext_written_before_encryption_reads_and_is_sealed_by_rotation(
    stores: Callable[..., Any],
    tenant: str,
) -> None:
    plain = stores()
    secret = uuid.uuid4().hex
    conv_id = _fill(plain, secret, tenant)
    store = stores(encryption=K1)
    assert store.messages(conv_id)[0].content == f"hello {secret}"
    assert store.load_state(conv_id).value == {"v": 2, "s": secret}
    assert store.recall(_contact(secret), tenant=tenant)[0].history[0].value == f"old {secret}"
    before, events = store.get(conv_id), list(store.events(tenant=tenant))
    assert store.reencrypt(tenant=tenant).rewritten == 3 + 2 + 1
    assert not any(
        secret in str(text) for text in _raw_texts(plain, conv_id, _contact(secret), tenant)
    )
    assert store.get(conv_id) == before  # activity, expiry, counts, state version: unchanged
    assert list(store.events(tenant=tenant)) == events  # a rewrite adds no event
    assert stores(encryption=K1).messages(conv_id)[2].payload["output"] == secret


def test_reencrypt_needs_encryption(store: Any) -> None:
    with pytest.raises(threadkeep.InvalidInput, match="encryption"):
        store.reencrypt()


def test_trimmed_history_keeps_working(stores: Callable[..., Any], tenant: str) -> None:
    store = stores(encryption=K1)
    conv = store.start("c", retention=Retention(max_messages=2, window=2))
    for n in range(4):
        store.append(conv.id, "user", f"m{n}", idempotency_key=f"key-{n}")
    assert [m.content for m in store.messages(conv.id)] == ["m2", "m3"]
    assert store.append(conv.id, "user", "m0", idempotency_key="key-0").content == "m0"
    assert store.context(conv.id) == [
        {"role": "user", "content": "m2"},
        {"role": "user", "content": "m3"},
    ]


def test_token_budgets_count_the_plaintext(stores: Callable[..., Any], tenant: str) -> None:
    store = stores(encryption=K1)
    conv = store.start("c", tenant=tenant)
    for n in range(3):
        store.append(conv.id, "user", f"{n}" * 40)  # 10 tokens each; sealed, about 24
    assert len(store.context(conv.id, token_budget=20)) == 2


def test_export_and_import_move_values_between_keys(store_url: str, tenant: str) -> None:
    """Transfer is sync only (like test_transfer): the store of each backend, two keys."""
    from threadkeep.transfer import export_records, import_record

    clock = threadkeep.ManualClock()
    with threadkeep.open("memory://", encryption=K1) as src:
        conv = src.start("c-1", tenant=tenant)
        src.append(conv.id, "user", "moved in clear", payload={"type": "text", "text": "p"})
        src.save_state(conv.id, {"price": 1})
        src.remember("c-1", "name", "Ann", tenant=tenant)
        src.remember("c-1", "name", "Anne", tenant=tenant)
        (record,) = export_records(src, tenant)[1]
    assert record["messages"][0]["content"] == "moved in clear"
    shared: dict[str, Any] = {}
    keep: dict[str, Any] = {"instrument": lambda backend: shared.setdefault("backend", backend)}
    keep = keep if store_url.startswith("memory:") else {}  # memory://: one store, two views
    with threadkeep.open(store_url, encryption=K2, clock=clock, **keep) as dst:
        assert import_record(dst, clock, record)
        assert dst.messages(conv.id)[0].payload == {"type": "text", "text": "p"}
        assert dst.load_state(conv.id).value == {"price": 1}
        assert dst.recall("c-1", tenant=tenant)[0].value == "Anne"
        with threadkeep.open(store_url, **keep) as raw:
            assert raw.messages(conv.id)[0].content.startswith("tk1:k2:")


def test_rotation_walks_a_conversation_that_moves_ahead_during_the_walk(
    store_url: str, tenant: str, clock: threadkeep.ManualClock
) -> None:
    """Sync only: the progress callback writes, which the async facade's loop cannot do."""
    shared: dict[str, Any] = {}
    one: dict[str, Any] = {"instrument": lambda backend: shared.setdefault("backend", backend)}
    opts: dict[str, Any] = {"clock": clock, **(one if store_url.startswith("memory:") else {})}
    with (
        threadkeep.open(store_url, encryption=K1, **opts) as old,
        threadkeep.open(store_url, encryption=K2_K1, **opts) as store,
    ):
        ids = []
        for n in range(3):  # the walk goes newest activity first: ids[2], ids[1], ids[0]
            clock.advance(timedelta(seconds=1))
            ids.append(old.start(f"c{n}", tenant=tenant).id)
            old.append(ids[-1], "user", f"m{n}")

        def move_the_oldest_ahead(progress: threadkeep.Reencrypted) -> None:
            if progress.conversations == 1:  # ids[0], not walked yet, jumps before the cursor
                clock.advance(timedelta(seconds=1))
                store.append(ids[0], "user", "moved")

        report = store.reencrypt(tenant=tenant, batch=1, progress=move_the_oldest_ahead)
        assert report.conversations == 3 and report.rewritten == 3
        with threadkeep.open(store_url, encryption=K2, **opts) as new:
            assert [m.content for m in new.messages(ids[0])] == ["m0", "moved"]


def test_rotation_reaches_facts_of_contacts_without_conversations(
    stores: Callable[..., Any], tenant: str
) -> None:
    old = stores(encryption=K1)
    for n in range(5):  # pages of 2 contacts
        old.remember(f"crm-{n}", "email", f"{n}@example.com", tenant=tenant)
        old.remember(f"crm-{n}", "email", f"{n}@work.example", tenant=tenant)
    old.remember("crm-0", "email", "other tenant", tenant=f"{tenant}-x")
    report = stores(encryption=K2_K1).reencrypt(tenant=tenant, batch=2)
    assert (report.conversations, report.rewritten) == (0, 5)
    new = stores(encryption=K2)
    for n in range(5):
        (fact,) = new.recall(f"crm-{n}", tenant=tenant)
        assert (fact.value, fact.history[0].value) == (f"{n}@work.example", f"{n}@example.com")
    with pytest.raises(EncryptionError, match="'k1'"):
        new.recall("crm-0", tenant=f"{tenant}-x")  # another tenant's: not walked


def test_rotation_reaches_messages_kept_only_for_replays(
    stores: Callable[..., Any], tenant: str
) -> None:
    old = stores(encryption=K1)
    conv = old.start("c", tenant=tenant, retention=Retention(max_messages=1))
    for n in range(5):
        old.append(conv.id, "user", f"m{n}", idempotency_key=f"key-{n}", payload={"n": n})
    report = stores(encryption=K2_K1).reencrypt(tenant=tenant, batch=2)
    assert report.rewritten >= 5  # the kept one, and the four only replays still answer
    new = stores(encryption=K2)
    for n in range(5):
        replay = new.append(conv.id, "user", f"m{n}", idempotency_key=f"key-{n}")
        assert replay.replayed and (replay.content, replay.payload) == (f"m{n}", {"n": n})


def test_a_value_written_between_read_and_rewrite_is_never_overwritten(
    store_url: str, tenant: str
) -> None:
    """Drive the walk by hand (sync) and write just before each rewrite lands: the
    compare-and-set of every backend leaves the new values alone; a second walk finishes.
    """
    shared: dict[str, Any] = {}
    one: dict[str, Any] = {"instrument": lambda backend: shared.setdefault("backend", backend)}
    opts = one if store_url.startswith("memory:") else {}
    with (
        threadkeep.open(store_url, encryption=K1, **opts) as old,
        threadkeep.open(store_url, encryption=K2_K1, **opts) as store,
    ):
        conv = old.start("c", tenant=tenant)
        old.append_many(conv.id, [("user", "a"), ("assistant", "b")])
        old.remember("c", "name", "Ann", tenant=tenant)
        flow = store._reencrypt(tenant, 100)
        step = next(flow)
        try:
            while True:
                if isinstance(step, threadkeep.Reencrypted):
                    step = flow.send(None)
                    continue
                if isinstance(step, RewriteOp) and step.messages:
                    store.replace_messages(conv.id, [("user", "compacted")])
                if isinstance(step, RewriteOp) and step.facts:
                    store.remember("c", "name", "Anne", tenant=tenant)
                step = flow.send(store._raw.execute(step))
        except StopIteration as done:
            first: threadkeep.Reencrypted = done.value
        assert (first.rewritten, first.changed) == (0, 3)  # two messages and the fact
        assert store.reencrypt(tenant=tenant).rewritten == 1  # the history "Ann" moved into
        with threadkeep.open(store_url, encryption=K2, **opts) as new:
            assert [m.content for m in new.messages(conv.id)] == ["compacted"]
            (fact,) = new.recall("c", tenant=tenant)
            assert (fact.value, [h.value for h in fact.history]) == ("Anne", ["Ann"])
