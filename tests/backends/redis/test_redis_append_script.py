"""The append script's shortcuts, checked in the raw keyspace: an idempotency key is checked and
noted in one HSETNX and taken back when the append is refused; the idempotency hash gets its
native TTL only when it may be new, and still expires with the record; the sweep's and the
listing's indexes are right after appends that wrote them on the short path.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import threadkeep
from tests._servers import RedisServer
from threadkeep import ConversationClosed, ManualClock, Retention
from threadkeep._rules import plans
from threadkeep.backends.redis import _codec as codec
from threadkeep.backends.redis._flows import Flows
from threadkeep.backends.redis._keys import Keys

pytestmark = pytest.mark.redis


def test_a_refused_append_leaves_no_key_behind(own_server: RedisServer) -> None:
    """A closed conversation refuses an append after its key was noted (HSETNX): the key is
    taken back, so the hash, its queues and a later replay are as if it was never sent."""
    with threadkeep.open(own_server.url + "?prefix=refused") as store:
        keys, client = Keys("refused"), own_server.client()
        kept = store.start("c-1")
        first = store.append(kept.id, "user", "hi", idempotency_key="k-1")
        store.append(kept.id, "user", "no key")
        before = {
            name: client.dump(name)
            for name in (
                keys.idempotency(kept.id),
                keys.idempotency_order(kept.id),
                keys.retry_order(kept.id),
            )
        }
        store.close_conversation(kept.id)
        with pytest.raises(ConversationClosed):
            store.append(kept.id, "user", "late", idempotency_key="k-2")
        with pytest.raises(ConversationClosed):
            store.append(kept.id, "user", "late, no key")
        assert {name: client.dump(name) for name in before} == before
        assert store.append(kept.id, "user", "hi", idempotency_key="k-1") == first
        # a conversation with no idempotency hash yet: the refused one leaves none either
        empty = store.start("c-2")
        store.close_conversation(empty.id)
        with pytest.raises(ConversationClosed):
            store.append(empty.id, "user", "late", idempotency_key="k-3")
        with pytest.raises(ConversationClosed):
            store.append(empty.id, "user", "late, no key")
        assert client.exists(keys.idempotency(empty.id), keys.retry_order(empty.id)) == 0
        assert store.messages(empty.id) == []
        client.close()


def test_the_idempotency_hash_expires_with_the_record(own_server: RedisServer) -> None:
    """The hash's TTL is set when it may be new (its first key, a caller key after the hash was
    emptied) and renewed with every key; in between appends leave it as it is."""
    clock = ManualClock()
    ttl = timedelta(hours=2)
    with threadkeep.open(own_server.url + "?prefix=ttl", clock=clock) as store:
        keys, client = Keys("ttl"), own_server.client()
        conv = store.start("c-1", retention=Retention(ttl=ttl))
        record, hashed = keys.conversation(conv.id), keys.idempotency(conv.id)

        def same() -> bool:
            at = int(client.pexpiretime(record))
            return at > 0 and int(client.pexpiretime(hashed)) == at

        for i in range(40):
            store.append(conv.id, "user", f"m{i}")
            assert same(), i
        # the store's clock far on: the record's TTL is renewed, and the hash's with it
        clock.advance(timedelta(hours=1))
        store.append(conv.id, "user", "later")
        assert same()
        # a caller key into a hash its queue outlived (clear_messages forgets their keys)
        store.append(conv.id, "user", "keyed", idempotency_key="k-1")
        store.clear_messages(conv.id)
        client.delete(hashed)  # as if every field had been forgotten
        store.append(conv.id, "user", "keyed again", idempotency_key="k-2")
        assert same()
        client.close()


def test_indexes_are_right_after_short_path_appends(own_server: RedisServer) -> None:
    """Scores of the listing, counting and sweep indexes follow each append."""
    clock = ManualClock()
    ttl = timedelta(hours=2)
    with threadkeep.open(own_server.url + "?prefix=ix", clock=clock) as store:
        keys, client = Keys("ix"), own_server.client()
        conv = store.start("c-1", tenant="t", stage="Q1", retention=Retention(ttl=ttl))
        for i in range(5):
            clock.advance(timedelta(seconds=1))
            message = store.append(conv.id, "user", f"m{i}")
            got = store.get(conv.id)
            act = int(message.created_at.timestamp() * 1_000_000)
            exp = act + int(ttl.total_seconds() * 1_000_000)
            member = f"{conv.id}\nt\nc-1"
            assert client.zscore(keys.tenant("t"), conv.id) == act
            assert client.zscore(keys.tenant_status(got.status, "t"), conv.id) == act
            assert client.zscore(keys.contact("t", "c-1"), conv.id) == act
            assert client.zscore(keys.status_counts(got.status, "t"), conv.id) == exp
            assert client.zscore(keys.stage_counts("t", "Q1"), conv.id) == exp
            assert client.zscore(keys.expiries, member) == exp
            assert client.zscore(keys.idle, conv.id) > act
        assert store.counts(tenant="t").by_status == {"active": 1}
        assert [c.id for c in store.list(tenant="t").items] == [conv.id]
        client.close()


def test_a_full_log_moves_its_floor_in_one_command(own_server: RedisServer) -> None:
    """Once the event log holds ``events_kept``, each append sets the floor and reads the old one
    in one SET ... GET (was a GET and a SET); a store opened with a larger ``events_kept`` never
    lowers the floor (the old value is put back), and a smaller one raises it."""
    url = own_server.url + "?prefix=floor"
    keys, client = Keys("floor"), own_server.client()
    with threadkeep.open(url, limits=threadkeep.Limits(events_kept=5)) as store:
        conv = store.start("c-1")
        first = list(store.events())[0]
        for i in range(20):
            store.append(conv.id, "user", f"m{i}")
        client.config_resetstat()
        for i in range(10):
            store.append(conv.id, "user", f"n{i}")
        stats = client.info("commandstats")
        last = int(client.get(keys.event_number))
        assert int(client.get(keys.event_floor)) == last - 5
        assert len(list(store.events())) <= 5
        with pytest.raises(threadkeep.CursorExpired):
            list(store.events(after=first.id))
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    assert calls["set"] == 10 and "get" not in calls, calls
    with threadkeep.open(url, limits=threadkeep.Limits(events_kept=8)) as store:
        store.append(conv.id, "user", "more kept")  # its floor would be last + 1 - 8: lower
        assert int(client.get(keys.event_floor)) == last - 5
        assert [e.id for e in store.events()][-1] == f"{last + 1}-0"
    with threadkeep.open(url, limits=threadkeep.Limits(events_kept=2)) as store:
        store.append(conv.id, "user", "fewer kept")
        assert int(client.get(keys.event_floor)) == last + 2 - 2
        assert len(list(store.events())) <= 2
    client.close()


def test_a_replayed_retry_key_leaves_no_caller_key(own_server: RedisServer) -> None:
    """The flows never send both keys; the script still answers a resent retry key without
    keeping a caller key it had just noted for an append that does not happen."""
    with threadkeep.open(own_server.url + "?prefix=both") as store:
        backend: Any = store._backend
        sent: list[Any] = []
        evalsha = backend._evalsha

        def capture(script: Any, request: Any) -> Any:
            sent.append((script, request))
            return evalsha(script, request)

        conv = store.start("c-1")
        backend._evalsha = capture
        message = store.append(conv.id, "user", "hi")
        backend._evalsha = evalsha
        script, request = sent[-1]
        args = list(request.args)
        # ARGV[11] retry key, then no tail (ARGV[12] tenant, ARGV[13] caller key: left out)
        assert len(args) == 11 and args[10].startswith("+")
        args += ["", "+k-new"]
        client = own_server.client()
        reply = client.evalsha(script.sha, 1, request.route, *args)
        assert reply[0] == "ok" and reply[1].startswith(f"{message.seq} ")
        assert not client.hexists(Keys("both").idempotency(conv.id), "k-new")
        assert [m.content for m in store.messages(conv.id)] == ["hi"]
        client.close()


def test_appends_work_when_the_log_keeps_no_events(own_server: RedisServer) -> None:
    """events_kept=0: every event is trimmed as it is written (the conversation's list of its
    event ids too), and appends succeed (the list's trim was LTRIM -0, which Redis refused
    after the message had been written)."""
    limits = threadkeep.Limits(events_kept=0)
    with threadkeep.open(own_server.url + "?prefix=nolog", limits=limits) as store:
        conv = store.start("a")
        for text in ("one", "two", "three"):
            store.append(conv.id, "user", text)
        assert [m.content for m in store.messages(conv.id)] == ["one", "two", "three"]
        assert list(store.events(timeout=0)) == []
        assert own_server.client().llen(Keys("nolog").event_ids(conv.id)) <= 1


def _captured(store: Any) -> tuple[list[Any], Any]:
    """Capture the (script, Eval) of each EVALSHA the store's driver sends; and the original."""
    backend: Any = store._backend
    sent: list[Any] = []
    evalsha = backend._evalsha

    def capture(script: Any, request: Any) -> Any:
        sent.append((script, request))
        return evalsha(script, request)

    backend._evalsha = capture
    return sent, evalsha


def test_an_append_sends_only_the_arguments_it_needs_and_gets_its_seq_back(
    own_server: RedisServer,
) -> None:
    """The optional tail of append.lua's arguments (tenant, caller key, fence, append_read's
    flag) is left out from its last non-empty one on, and a message stored by the call comes
    back as its seq alone (session 12: 14 arguments always, the whole entry sent back). The
    Message the store returns is the one read back, whatever the arguments were."""
    with threadkeep.open(own_server.url + "?prefix=tail") as store:
        conv = store.start("c-1", tenant="t")
        sent, _ = _captured(store)
        payload = {"type": "message", "content": [{"type": "text", "text": "a\nb"}]}
        made = [
            store.append(conv.id, "user", "plain"),
            store.append(conv.id, "assistant", "two\nlines\n", tenant="t"),
            store.append(conv.id, "user", "keyed", idempotency_key="k-1", metadata={"a": [1]}),
            store.append(conv.id, "tool", "", payload=payload, tenant="t", idempotency_key="k-2"),
        ]
        # base … retry keys kept, the retry key (ARGV[11]); then the tail as far as it is used
        assert [len(request.args) for _, request in sent] == [11, 12, 13, 13]
        assert [request.args[10] != "" for _, request in sent] == [True, True, False, False]
        assert made == store.messages(conv.id)
        # the script answers a message it stored with its seq, a number
        script, request = sent[0]
        args = [*request.args[:10], "+another-call"]
        client = own_server.client()
        assert client.evalsha(script.sha, 1, request.route, *args) == ["ok", 5]
        # a resent call (the same retry key) is answered with the entry stored the first time
        replay = client.evalsha(script.sha, 1, request.route, *request.args)
        assert replay[0] == "ok" and replay[1].startswith("1 user\n")
        client.close()
        assert len(store.messages(conv.id)) == 5


@pytest.mark.parametrize(
    ("role", "content", "options"),
    [
        ("user", "plain", {}),
        ("assistant", "two\nlines\n", {"metadata": {"m": "\n"}, "idempotency_key": "k-1"}),
        ("tool", "", {"payload": [1, "\n", {"a": None}]}),
        ("user", "both", {"payload": {"x": 1}, "idempotency_key": "k-2", "tenant": "t"}),
    ],
)
def test_the_append_body_is_the_codecs(role: str, content: str, options: dict[str, Any]) -> None:
    """The flow writes the message body inline: it is codec.encode_message's, byte for byte."""
    op = plans.append(
        1_764_621_234_567_890, threadkeep.Limits(), "c-1", role, content,
        metadata=options.get("metadata"), idempotency_key=options.get("idempotency_key"),
        tenant=options.get("tenant"), payload=options.get("payload"),
    )  # fmt: skip
    flows = Flows(Keys("body"), 100)
    request = flows._append_eval(flows.keys, op)
    assert request.args[5] == codec.encode_message(
        op.role, op.content, op.now_us, op.metadata_json, op.idempotency_key, op.payload_json,
        op.link,
    )  # fmt: skip
