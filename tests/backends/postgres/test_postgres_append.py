"""PostgreSQL appends in one statement (``schema.APPEND``), held to ``decide.append``.

The statement writes on the server what the rules would; the flow judges its answer with
``decide.append`` and, should the statement have written nothing the rules would write, makes
the append in statements judged one by one (``Flows._append_locked``). Here both run on the
same starting rows, each in a savepoint rolled back afterwards, and must answer and leave the
same rows, over generated conversations: every status, live or expired, another tenant's,
stored and archived keys, resends, fences, trimming and tool-call links.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import threadkeep
from tests._servers import wait_until
from tests.backends.postgres._helpers import (
    SHARED,
    connect,
    flows_of,
    open_backend,
    recorded,
    url_of,
)
from threadkeep._rules import decide, lifecycle, ops
from threadkeep._rules.retention import RetentionUs
from threadkeep._rules.rows import ConversationRow
from threadkeep._rules.validate import ROLES
from threadkeep.backends.postgres import _flows as flows_module, _schema as schema
from threadkeep.backends.postgres._conn import pump

pytestmark = pytest.mark.postgres

NOW = 1_000_000_000
TOKEN = 7


@pytest.fixture
def migrated(schema: str) -> str:
    open_backend(schema).close()
    return schema


def _state(conn: psycopg.Connection[Any], cid: str, after_event: int) -> tuple[Any, ...]:
    """Every row an append may write: the conversation, its messages, archive and events."""

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return conn.execute(sql, {"id": cid, "after": after_event}).fetchall()

    return (
        rows("SELECT * FROM conversations WHERE id = %(id)s"),
        rows("SELECT * FROM messages WHERE conversation_id = %(id)s ORDER BY seq"),
        rows("SELECT * FROM idem_archive WHERE conversation_id = %(id)s ORDER BY idem_key"),
        rows(
            "SELECT kind, tenant, conversation_id, data_json, at_us FROM events "
            "WHERE conversation_id = %(id)s AND id > %(after)s ORDER BY id"
        ),
    )


def _start(conn: psycopg.Connection[Any], case: dict[str, Any]) -> str:
    """Insert the case's conversation, messages and archived key; return its id."""
    cid = uuid.uuid4().hex
    kept = case["links"]
    last_seq = case["trimmed"] + len(kept)
    row = ConversationRow(
        id=cid, tenant="t1", contact_id="a", agent_id=None, channel=None,
        status=case["status"], stage=None, metadata_json="{}", created_us=NOW - 10,
        activity_us=NOW - 10, expires_us=case["expires_us"], idle_us=NOW + 5,
        message_count=len(kept), last_seq=last_seq, state_version=0,
        retention=RetentionUs(case["ttl_us"], 900, 5, case["max_messages"]),
    )  # fmt: skip
    conn.execute(schema.INSERT_CONVERSATION, schema.encode_conversation(row))
    conn.execute(
        "UPDATE conversations SET lease_token = %s, lease_until_us = %s WHERE id = %s",
        (TOKEN, case["lease_until_us"], cid),
    )
    seqs = list(range(case["trimmed"] + 1, last_seq + 1))
    keys: list[str | None] = [None] * len(kept)
    if kept and case["stored"] == "kept":
        keys[-1] = case["key"]
    conn.execute(
        schema.INSERT_MESSAGES,
        {
            "tenant": "t1", "id": cid, "seqs": seqs, "roles": ["user"] * len(kept),
            "contents": [f"m{s}".encode() for s in seqs], "times": [NOW - 10] * len(kept),
            "metadata": ["{}"] * len(kept), "keys": keys, "payloads": [None] * len(kept),
            "links": kept,
        },
    )  # fmt: skip
    if case["stored"] == "archived":
        conn.execute(
            "INSERT INTO idem_archive (tenant, conversation_id, idem_key, seq, role, content, "
            "created_us, metadata_json) VALUES ('t1', %s, %s, 0, 'user', 'old', 1, '{}')",
            (cid, case["key"]),
        )
    return cid


CASES = st.fixed_dictionaries(
    {
        "status": st.sampled_from([s.value for s in lifecycle.Status]),
        "expires_us": st.sampled_from([None, NOW - 1, NOW, NOW + 1]),
        "ttl_us": st.sampled_from([None, 50]),
        "tenant": st.sampled_from([None, "t1", "t2"]),
        "links": st.lists(st.integers(0, 3), max_size=6),
        "trimmed": st.sampled_from([0, 4]),
        "max_messages": st.sampled_from([None, 1, 2, 3, 6]),
        "caller_key": st.booleans(),
        "resent": st.booleans(),
        "stored": st.sampled_from([None, "kept", "archived"]),
        "fence": st.sampled_from([None, TOKEN, TOKEN + 1]),
        "lease_until_us": st.sampled_from([0, NOW, NOW + 100]),
        "role": st.sampled_from(ROLES),
        "link": st.integers(0, 3),
        "payload": st.sampled_from([None, '{"type":"text"}']),
        "on_message": st.sampled_from([lifecycle.ON_MESSAGE_VALUES, {"new": "idle"}, {}]),
    }
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=CASES)
# the trim's boundary (a kept message linked, one below max_messages), which 150 random
# cases rarely reach: a `>=` for `>` in the function's trim test passed without it
@example(
    case={
        "status": "active", "expires_us": None, "ttl_us": None, "tenant": "t1", "links": [1],
        "trimmed": 0, "max_messages": 2, "caller_key": False, "resent": False, "stored": None,
        "fence": None, "lease_until_us": 0, "role": "user", "link": 0, "payload": None,
        "on_message": lifecycle.ON_MESSAGE_VALUES,
    }
)  # fmt: skip
def test_one_statement_answers_and_writes_as_the_rules_do(
    migrated: str, case: dict[str, Any]
) -> None:
    flows = flows_of(migrated)
    retry_key = schema.INTERNAL_KEY + uuid.uuid4().hex
    if not case["caller_key"] and not case["resent"]:
        case["stored"] = None  # a first attempt's internal key is new
    case["key"] = f"key-{uuid.uuid4().hex}" if case["caller_key"] else retry_key
    op = ops.AppendOp(
        "", case["tenant"], NOW, case["role"], "new", '{"m":1}',
        case["key"] if case["caller_key"] else None, case["on_message"], case["fence"],
        10_000, case["payload"], case["link"],
    )  # fmt: skip
    with connect(migrated) as conn:
        cid = _start(conn, case)
        op = dataclasses.replace(op, conversation_id=cid)
        after = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchall()[0][0]
        conn.execute("SAVEPOINT start")
        seen: list[str] = []
        told: list[Any] = []  # append_read's: the row as the append left it, when told
        fast = pump(conn, recorded(flows._append(op, retry_key, case["resent"], told), seen))
        fast_rows = _state(conn, cid, after)
        row_now, _ = pump(conn, flows._lock(cid, None))
        if fast.value is not None and told and told[0] is not None:
            assert told[0] == decide.visible(row_now, None, NOW)
        conn.execute("ROLLBACK TO SAVEPOINT start")
        slow = pump(conn, flows._append_locked(op, retry_key, case["resent"]))
        slow_rows = _state(conn, cid, after)
        conn.rollback()
    # the rules never append where the statements did not: no statement of _append_locked
    one = [schema.INDEX_SCANS, schema.APPEND_ONE.pick(op.tenant)]
    if (
        case["caller_key"]
        or case["resent"]
        or op.on_message == {"new": "idle"}
        or not op.on_message
    ):
        assert seen == [schema.APPEND]  # no common append: the function at once
    else:
        assert seen in (one, [*one, schema.APPEND])
    assert fast == slow
    assert fast_rows == slow_rows


def test_the_rules_append_where_the_statement_declines(
    migrated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the statement's copy of the on-message table lag the rules (here it is empty, so
    the statement declines every append), the append is made as the rules say, in statements
    of a transaction of its own: the same messages, status, replays and events."""
    declined: dict[str, list[str]] = {
        "sources": [],
        "targets": [],
        "changes": [],
        "change_data": [],
    }
    monkeypatch.setattr(flows_module, "_ON_MESSAGE", declined)
    with threadkeep.open(url_of(migrated)) as store:
        conv = store.resume("c", tenant="t")
        backend: Any = store._backend
        seen: list[str] = []
        real = backend._flows.call

        def recording(op: Any) -> Any:
            run = real(op)
            return dataclasses.replace(run, attempt=lambda n: recorded(run.attempt(n), seen))

        monkeypatch.setattr(backend._flows, "call", recording)
        first = store.append(conv.id, "user", "hi")
        # the common statement declines (new -> active changes the status), then the function
        assert seen[:3] == [schema.INDEX_SCANS, schema.APPEND_ONE.every, schema.APPEND]
        assert seen[3] == schema.LOCK_CONVERSATION.every
        keyed = store.append(conv.id, "assistant", "yo", idempotency_key="k")
        replay = store.append(conv.id, "assistant", "yo", idempotency_key="k")
        assert [first.seq, keyed.seq, replay.seq] == [1, 2, 2]
        assert replay.replayed and not keyed.replayed
        assert store.get(conv.id).status == "active"
        assert [m.content for m in store.messages(conv.id, last=5)] == ["hi", "yo"]
        events = [(e.kind.value, e.data) for e in store.events(tenant="t", timeout=0)]
    assert events[1:] == [
        ("message.appended", {"seq": 1, "role": "user"}),
        ("status.changed", {"from": "new", "to": "active"}),
        ("message.appended", {"seq": 2, "role": "assistant"}),
    ]


def test_a_closing_statement_not_sent_with_its_commit_still_wakes_listeners(migrated: str) -> None:
    """A call not safe to resend waits for a ``Closing`` statement's answer before COMMIT (one
    round trip more); what the statement may have logged is still announced after it."""
    from threadkeep._url import StoreURL
    from threadkeep.backends.postgres._conn import ConnectionOptions, Ending

    channel = ConnectionOptions(StoreURL.parse(url_of(migrated))).channel
    with threadkeep.open(url_of(migrated)) as store:
        cid = store.start("c").id
    op = ops.AppendOp(
        cid, None, NOW, "user", "hi", "{}", None, lifecycle.ON_MESSAGE_VALUES, None, 9
    )
    ending = Ending(channel, together=False)
    with connect(migrated, autocommit=True) as listener, connect(migrated, autocommit=True) as conn:
        listener.execute(f"LISTEN {channel}")
        answer = pump(conn, flows_of(migrated).call(op).attempt(1), transaction=True, ending=ending)
        assert answer.value is not None and answer.value.seq == 1
        assert [n.channel for n in listener.notifies(timeout=5, stop_after=1)] == [channel]


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(
        st.text(st.characters(blacklist_characters="\x00", codec="utf-8")),
        max_size=8,
    )
)
def test_the_on_message_arrays_are_sent_as_literals_that_read_back_the_same(
    items: list[str],
) -> None:
    # the append's on-message table goes as text[] literals made once (psycopg would
    # dump a list of str element by element on every append): they must read back exactly
    from threadkeep.backends.postgres._flows import _text_array

    with psycopg.connect(SHARED) as conn:
        row = conn.execute("SELECT %s::text[]", (_text_array(items),)).fetchone()
    assert row is not None and row[0] == items


def test_appends_to_conversations_without_stage_or_agent_leave_those_indexes_empty(
    migrated: str,
) -> None:
    """An append rewrites every index entry of its conversation (activity is in the list
    indexes: no HOT update); the stage and agent list indexes hold only rows that have one
    (a list filter is an equality, never NULL), so these appends insert nothing there."""

    def pages() -> dict[str, int]:
        with connect(migrated) as conn:
            return dict(
                conn.execute(
                    "SELECT relname, pg_relation_size(oid) / current_setting('block_size')::int "
                    "FROM pg_class WHERE relname IN ('conversations_stage_page', "
                    "'conversations_agent_page', 'conversations_page') "
                    "AND relnamespace = current_schema()::regnamespace"
                ).fetchall()
            )

    with threadkeep.open(url_of(migrated)) as store:
        plain = [store.resume(f"c{i}", tenant="t").id for i in range(20)]
        for cid in plain:
            store.append(cid, "user", "hi")
        # the metapage alone: no entry was ever inserted (the full index has a leaf too)
        assert pages() == {
            "conversations_stage_page": 1,
            "conversations_agent_page": 1,
            "conversations_page": 2,
        }
        staged = store.start("s", tenant="t", agent_id="bot")
        store.set_stage(staged.id, "Q1", tenant="t")
        store.append(staged.id, "user", "hi")
        assert [c.id for c in store.list(tenant="t", stage="Q1").items] == [staged.id]
        assert [c.id for c in store.list(tenant="t", agent_id="bot").items] == [staged.id]
        assert len(store.list(tenant="t").items) == 21


def test_appends_read_their_rows_by_key_on_a_small_analyzed_store(migrated: str) -> None:
    """On a store of a few conversations, analyzed (the planner then prefers a sequential
    scan of a table of a few pages), an append's statements still find the conversation and
    the log's floor row by their keys: no sequential scan of either table (migration 12)."""

    def scans() -> dict[str, tuple[int, int]]:
        """Per table: sequential scans, rows updated."""
        with psycopg.connect(SHARED, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT relname, seq_scan, n_tup_upd FROM pg_stat_user_tables "
                "WHERE schemaname = %s AND relname IN ('conversations', 'events_floors')",
                (migrated,),
            ).fetchall()
        return {name: (seq, updated) for name, seq, updated in rows}

    with threadkeep.open(url_of(migrated)) as store:
        ids = [store.resume(f"c{i}", tenant="t").id for i in range(3)]
        for cid in ids:
            store.append(cid, "user", "hi")
    with connect(migrated, autocommit=True) as conn:
        conn.execute("ANALYZE conversations")
        conn.execute("ANALYZE events_floors")
    wait_until("the setup's statistics", lambda: scans()["conversations"][1] > 0)
    time.sleep(1.1)  # a backend's counters reach the statistics at most once a second
    before = scans()
    with threadkeep.open(f"{url_of(migrated)}&pool_size=1") as store:
        for n in range(20):  # past the 5 custom plans: the session's generic plans too
            store.append(ids[n % 3], "user", "hi", tenant="t")
    # the store's session reports its counters when it ends
    wait_until(
        "the appends' statistics",
        lambda: scans()["conversations"][1] >= before["conversations"][1] + 20,
    )
    after = scans()
    assert after["conversations"][0] == before["conversations"][0]
    assert after["events_floors"][0] == before["events_floors"][0]


def test_a_trim_reads_the_messages_it_keeps_only_up_to_the_first(migrated: str) -> None:
    """trim_messages finds the first message it keeps by one ordered range that stops there
    (migration 12), not by probing the message before each kept one: in a conversation
    keeping 200, a trim of the first 10 fetches a few index entries, not 200."""
    with threadkeep.open(url_of(migrated)) as store:
        conv = store.start("c", tenant="t")
        store.append_many(conv.id, [("user", f"m{i}") for i in range(210)], tenant="t")
    with connect(migrated) as conn:  # one transaction: its own counts
        conn.execute("SELECT trim_messages('t', %s, 11)", (conv.id,))
        row = conn.execute(
            "SELECT idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'messages' "
            "AND schemaname = %s",
            (migrated,),
        ).fetchone()
        assert conn.execute(
            "SELECT count(*), min(seq) FROM messages WHERE conversation_id = %s", (conv.id,)
        ).fetchone() == (200, 11)
    assert row is not None and row[0] < 50, row


def test_an_append_names_the_status_in_its_update_only_when_it_changes(schema: str) -> None:
    """An append that leaves the status as it was updates the row without naming ``status``,
    so a trigger on ``UPDATE OF status`` (the counters' is one, migration 6) is not considered
    for it (its WHEN clause was parsed and tested on every append: docs/performance.md, "The
    PostgreSQL append's server instructions, seventh round"); one that changes the status
    names it, and the counters follow both."""
    with threadkeep.open(url_of(schema)) as store:
        conv = store.start(contact_id="c", tenant="t")
        with psycopg.connect(SHARED, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute("CREATE TABLE status_named (n integer NOT NULL)")
            conn.execute(
                "CREATE FUNCTION status_named() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN INSERT INTO status_named VALUES (1); RETURN NEW; END $$"
            )
            conn.execute(
                "CREATE TRIGGER status_named BEFORE UPDATE OF status ON conversations "
                "FOR EACH ROW EXECUTE FUNCTION status_named()"
            )

            def named() -> int:
                row = conn.execute("SELECT count(*) FROM status_named").fetchone()
                assert row is not None
                return int(row[0])

            store.append(conv.id, "user", "one", tenant="t")  # new -> active
            assert named() == 1
            store.append(conv.id, "user", "two", tenant="t")  # active -> active
            store.append(conv.id, "user", "three")
            assert named() == 1
            assert store.get(conv.id, tenant="t").status == "active"
            assert store.counts(tenant="t").by_status == {"active": 1}


def _keyless(cid: str, tenant: str | None, content: str) -> dict[str, Any]:
    """``schema.APPEND``'s parameters for a keyless first try (an internal key, no look-up)."""
    return {
        "tenant": tenant,
        "id": cid,
        "now": time.time_ns() // 1000,
        "key": f"{schema.INTERNAL_KEY}{uuid.uuid4().hex}",
        "look_up": False,
        "fence": None,
        **flows_module._ON_MESSAGE,
        "appended": flows_module._APPENDED,
        "role": "user",
        "content": content.encode(),
        "metadata_json": "{}",
        "payload": None,
        "link": 0,
        "keep": 10_000,
    }


def _seqs(conn: psycopg.Connection[Any], cid: str) -> tuple[Any, ...] | None:
    """The conversation's last seq and count, and its messages' seqs."""
    return conn.execute(
        "SELECT c.last_seq, c.message_count, (SELECT array_agg(seq ORDER BY seq) FROM messages m "
        "WHERE m.conversation_id = c.id) FROM conversations c WHERE c.id = %s",
        (cid,),
    ).fetchone()


@pytest.mark.parametrize("tenant", ["t", None])
def test_an_append_finds_its_conversation_by_one_index_scan(
    migrated: str, tenant: str | None
) -> None:
    """A keyless append reads the conversation by a key, then its UPDATE finds that version
    by its ctid, a TID scan that opens no index (migration 14): one index scan of
    ``conversations`` per append, by bare id or naming the tenant (version 13 made two)."""
    with threadkeep.open(url_of(migrated)) as store:
        cid = store.resume("c", tenant="t").id
        store.append(cid, "user", "one", tenant="t")
    with connect(migrated) as conn:  # one transaction: its own counts
        answer = conn.execute(str(schema.APPEND), _keyless(cid, tenant, "two")).fetchone()
        scans = conn.execute(
            "SELECT idx_scan, n_tup_upd FROM pg_stat_xact_user_tables "
            "WHERE relname = 'conversations' AND schemaname = %s",
            (migrated,),
        ).fetchone()
        seqs = _seqs(conn, cid)
    assert answer is not None and answer[0] is True  # written
    assert scans == (1, 1)
    assert seqs == (2, 2, [1, 2])


def test_a_keyless_append_takes_no_row_lock_before_its_update(migrated: str) -> None:
    """A keyless first try reads the row without locking it and updates that version
    (migration 14): another session's FOR KEY SHARE lock on the row, which a FOR UPDATE
    waits for (version 13's first statement), does not hold it (its UPDATE changes no key
    column). An append with a key to look up still locks the row first."""
    with threadkeep.open(url_of(migrated)) as store:
        cid = store.resume("c", tenant="t").id
        store.append(cid, "user", "one", tenant="t")
    with connect(migrated) as holder, connect(migrated) as conn:
        holder.execute("SELECT 1 FROM conversations WHERE id = %s FOR KEY SHARE", (cid,))
        conn.execute("SET lock_timeout = '2s'")  # a hang guard: a wait fails, not a timing
        answer = conn.execute(str(schema.APPEND), _keyless(cid, "t", "two")).fetchone()
        assert answer is not None and answer[0] is True
        conn.commit()
        keyed = {**_keyless(cid, "t", "three"), "key": "k", "look_up": True}
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute(str(schema.APPEND), keyed)
        conn.rollback()
        holder.rollback()
        assert _seqs(conn, cid) == (2, 2, [1, 2])


def test_an_append_whose_row_changed_after_its_read_locks_and_judges_it_again(
    migrated: str,
) -> None:
    """A keyless append whose UPDATE waits on another writer of the row (here one that
    appends by hand) finds, once that one commits, a newer version than the one it read: the
    UPDATE writes nothing (on PostgreSQL 15 the TID recheck refuses it; the xmin test does
    on a server whose recheck does not test the ctid: this test cannot tell the two apart),
    and the function locks the newer row and appends after it (seq gap-free, counts right,
    the other writer's change kept)."""
    with threadkeep.open(url_of(migrated)) as store:
        cid = store.resume("c", tenant="t").id
        store.append(cid, "user", "one", tenant="t")
    with (
        connect(migrated) as other,
        connect(migrated, autocommit=True) as conn,
        connect(migrated, autocommit=True) as watch,
    ):
        other.execute(
            "UPDATE conversations SET last_seq = 2, message_count = 2, metadata_json = "
            '\'{"by": "other"}\' WHERE id = %s',
            (cid,),
        )
        other.execute(
            "INSERT INTO messages (tenant, conversation_id, seq, role, content, created_us, "
            "metadata_json) VALUES ('t', %s, 2, 'user', 'two', 0, '{}')",
            (cid,),
        )
        pid = conn.info.backend_pid
        done: list[Any] = []
        appender = threading.Thread(
            target=lambda: done.append(
                conn.execute(str(schema.APPEND), _keyless(cid, None, "three")).fetchone()
            )
        )
        appender.start()
        try:
            wait_until(
                "the append to wait on the other writer's row lock",
                lambda: (
                    watch.execute(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                        (pid,),
                    ).fetchone()
                    == (True,)
                ),
            )
        finally:
            other.commit()
            appender.join()
        assert done and done[0] is not None
        answer = done[0]
        assert answer[0] is True  # written
        # the row it locked and wrote over: the other writer's metadata and last seq
        assert (answer[8], answer[14]) == ('{"by": "other"}', 2)
        assert _seqs(conn, cid) == (3, 3, [1, 2, 3])
