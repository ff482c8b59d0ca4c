"""The common PostgreSQL append as one statement of the client's (``pg.APPEND_ONE``).

A keyless first try runs one statement with data-modifying parts and no function; where it
appends nothing (a status change, a fence not held, a conversation missing, closed or
expired) ``append_message_v2`` follows and judges. Here: the common append calls no
function on the server; four processes appending to one conversation leave seqs gap-free,
each message once and its event in seq order; and random appends through both paths, or
through the function alone, leave the same rows (the log trimmed to a small ``events_kept``,
its floors, erasures' placeholders, trims past ``max_messages``).
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

import threadkeep
from tests.backends.postgres._helpers import (
    SHARED,
    blocked_by,
    connect,
    flows_of,
    now_us,
    url_of,
)
from threadkeep._rules import lifecycle, ops
from threadkeep._rules.retention import RetentionUs
from threadkeep._rules.rows import ConversationRow
from threadkeep.backends.postgres import _flows as flows_module, _schema as pg
from threadkeep.backends.postgres._conn import Ending, pump

pytestmark = pytest.mark.postgres

NOW = 1_900_000_000_000_000
LIFECYCLE = lifecycle.ON_MESSAGE_VALUES


def _append(cid: str, n: int, **changes: Any) -> ops.AppendOp:
    fields: dict[str, Any] = {
        "conversation_id": cid, "tenant": None, "now_us": NOW + n, "role": "user",
        "content": f"m{n}", "metadata_json": "{}", "idempotency_key": None,
        "on_message": LIFECYCLE, "fence": None, "events_kept": 10_000,
    }  # fmt: skip
    fields.update(changes)
    return ops.AppendOp(**fields)


def _function_calls(conn: Any) -> dict[str, int]:
    rows = conn.execute(
        "SELECT funcname, calls FROM pg_stat_xact_user_functions "
        "WHERE schemaname = current_schema()"
    ).fetchall()
    return dict(rows)


def test_a_common_append_is_one_statement_and_calls_no_function(schema: str) -> None:
    """The harness's append (keyless, by bare id, the status kept): the flow sends the
    planner setting and one statement, and the server runs no PL/pgSQL function (main called
    ``append_message_v2``); a status change still goes to the function."""
    with threadkeep.open(url_of(schema)) as store:
        cid = store.resume("c", tenant="t").id
    flows = flows_of(schema)
    first_key = pg.INTERNAL_KEY + uuid.uuid4().hex
    second_key = pg.INTERNAL_KEY + uuid.uuid4().hex
    with connect(schema) as conn:
        conn.execute("SET LOCAL track_functions = 'pl'")
        seen: list[str] = []
        first = pump(
            conn, _recorded(flows._append(_append(cid, 1, now_us=now_us()), first_key, False), seen)
        )
        calls = _function_calls(conn)
        conn.commit()
    assert first.value is not None and first.value.seq == 1  # new -> active: the function's
    assert calls.get("append_message_v2") == 1
    assert seen[-1] == pg.APPEND
    with connect(schema) as conn:
        conn.execute("SET LOCAL track_functions = 'pl'")
        seen = []
        second = pump(
            conn,
            _recorded(flows._append(_append(cid, 2, now_us=now_us()), second_key, False), seen),
        )
        calls = _function_calls(conn)
        stored = conn.execute(
            "SELECT seq, idem_key FROM messages WHERE conversation_id = %s ORDER BY seq", (cid,)
        ).fetchall()
        conn.commit()
    assert second.value is not None and second.value.seq == 2
    assert calls == {}  # no append_message_v2, no emit_event, no trim_messages
    assert seen == [pg.INDEX_SCANS, pg.APPEND_ONE.every]
    assert stored == [(1, first_key), (2, second_key)]  # the retry key kept, as by the function


def test_the_common_append_raises_no_warning_in_its_implicit_transaction(schema: str) -> None:
    """The append's transaction is an implicit one (no BEGIN): the planner setting before its
    statement must not be ``SET LOCAL``, which works there but sends a WARNING ("can only be
    used in transaction blocks"), logged by the server at every append."""
    with threadkeep.open(url_of(schema)) as store:
        cid = store.resume("c", tenant="t").id
        store.append(cid, "user", "first")  # new -> active: the next one is the common append
    flows = flows_of(schema)
    notices: list[str] = []
    with connect(schema, autocommit=True) as conn:
        conn.add_notice_handler(lambda notice: notices.append(str(notice.message_primary)))
        seen: list[str] = []
        key = pg.INTERNAL_KEY + uuid.uuid4().hex
        done = pump(
            conn,
            _recorded(flows._append(_append(cid, 2, now_us=now_us()), key, False), seen),
            transaction=True,
            ending=Ending(flows.channel, together=True),
        )
        setting = conn.execute("SELECT current_setting('enable_seqscan')").fetchone()
    assert done.value is not None and done.value.seq == 2
    assert seen == [pg.INDEX_SCANS, pg.APPEND_ONE.every]
    assert notices == []
    assert setting == ("on",)  # the setting ended with the append's transaction


def test_a_trim_that_waits_holds_no_follower_back(schema: str) -> None:
    """Review: the statement took the log's shared lock before ``trim_messages`` (the
    function takes it after), so while a trim past ``max_messages`` waited on a row lock no
    follower could read past it: another conversation's committed append was held back. Now
    the lock is taken with the event, after the trim, as the function does."""
    with threadkeep.open(url_of(schema)) as store:
        capped = store.start("a", tenant="t", retention=threadkeep.Retention(max_messages=2))
        other = store.start("b", tenant="t")
        for i in range(3):
            store.append(capped.id, "user", f"m{i}")
        store.append(other.id, "user", "o1")
        cursor = [e.id for e in store.events(tenant="t", timeout=0)][-1]
        with connect(schema) as blocker:  # holds the message the next trim deletes
            blocker.execute(
                "SELECT 1 FROM messages WHERE conversation_id = %s AND seq = 2 FOR UPDATE",
                (capped.id,),
            )
            trimming = threading.Thread(target=store.append, args=(capped.id, "user", "trims"))
            trimming.start()
            deadline = time.monotonic() + 10
            while not blocked_by(blocker.info.backend_pid):
                assert time.monotonic() < deadline, "the trimming append never waited"
                time.sleep(0.02)
            later = store.append(other.id, "user", "o2")
            seen = [e.data for e in store.events(tenant="t", after=cursor, timeout=0)]
            blocker.rollback()
        trimming.join(30)
    assert {"seq": later.seq, "role": "user"} in seen


def test_an_append_by_bare_id_to_an_id_two_tenants_hold_appends_once(schema: str) -> None:
    """Review: where a transfer's race left two rows of one id, the statement by bare id
    updated both and failed ("more than one row returned by a subquery"), every time; now it
    declines there and the function appends to one, as before."""
    with threadkeep.open(url_of(schema)) as store:
        conv = store.resume("c", tenant="t1")
        store.append(conv.id, "user", "first")
        with connect(schema) as conn:
            columns = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                    "current_schema() AND table_name = 'conversations' AND column_name <> "
                    "'tenant' ORDER BY ordinal_position"
                ).fetchall()
            ]
            names = ", ".join(columns)
            conn.execute(
                f"INSERT INTO conversations (tenant, {names}) "
                f"SELECT 't2', {names} FROM conversations WHERE id = %s",
                (conv.id,),
            )
            conn.commit()
        message = store.append(conv.id, "user", "second")
    assert message.seq == 2


def _recorded(flow: Any, seen: list[str]) -> Any:
    rows = None
    try:
        while True:
            query, params = flow.send(rows)
            seen.append(query)
            rows = yield query, params
    except StopIteration as done:
        return done.value


APPENDERS = 4
EACH = 50


def _hammer(url: str, cid: str, n: int, barrier: Any, out: Any) -> None:
    """One process: EACH keyless appends to the shared conversation; reports its seqs."""
    with threadkeep.open(url) as store:
        barrier.wait()
        out.put([store.append(cid, "user", f"{n}-{k}").seq for k in range(EACH)])


@pytest.mark.slow
def test_four_processes_appending_to_one_conversation_leave_seqs_gap_free(schema: str) -> None:
    """Every append waits for the row lock of the others' and takes its seq on the newest
    version (READ COMMITTED's re-check): 200 appends, seqs 1..200 once each, every content
    once, the events' ids in seq order (the seq is taken under the lock, the event id after
    it), the counters exact."""
    url = url_of(schema)
    with threadkeep.open(url) as store:
        cid = store.resume("hot", tenant="t").id
        store.append(cid, "user", "first")  # new -> active: the rest keep the status
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(APPENDERS), ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(url, cid, n, barrier, out)) for n in range(APPENDERS)
    ]
    for p in procs:
        p.start()
    acked = [seq for _ in procs for seq in out.get(timeout=240)]
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * APPENDERS
    total = APPENDERS * EACH + 1
    assert sorted(acked) == list(range(2, total + 1))
    with psycopg.connect(SHARED, options=f"-c search_path={schema}") as conn:
        messages = conn.execute(
            "SELECT seq, convert_from(content, 'UTF8') FROM messages "
            "WHERE conversation_id = %s ORDER BY seq",
            (cid,),
        ).fetchall()
        events = conn.execute(
            "SELECT (data_json::json ->> 'seq')::bigint FROM events "
            "WHERE conversation_id = %s AND kind = 'message.appended' ORDER BY id",
            (cid,),
        ).fetchall()
        row = conn.execute(
            "SELECT last_seq, message_count FROM conversations WHERE id = %s", (cid,)
        ).fetchone()
    assert [m[0] for m in messages] == list(range(1, total + 1))
    contents = sorted(m[1] for m in messages[1:])
    assert contents == sorted(f"{n}-{k}" for n in range(APPENDERS) for k in range(EACH))
    assert [e[0] for e in events] == list(range(1, total + 1))
    assert row == (total, total)


def _conversation(cid: str, rnd: random.Random) -> ConversationRow:
    return ConversationRow(
        id=cid, tenant=rnd.choice(["t1", "t2"]), contact_id="a", agent_id=None, channel=None,
        status=rnd.choice(["new", "active", "active", "waiting_agent", "closed"]), stage=None,
        metadata_json="{}", created_us=NOW - 10, activity_us=NOW - 10,
        expires_us=rnd.choice([None, None, None, NOW + 50]), idle_us=NOW + 5, message_count=0,
        last_seq=0, state_version=0,
        retention=RetentionUs(rnd.choice([None, 10**9]), 900, 5, rnd.choice([None, None, 3])),
    )  # fmt: skip


def _run(schema_name: str, seed: int) -> tuple[list[Any], tuple[Any, ...]]:
    """The same random appends (and an erasure) on a fresh schema: answers and every row."""
    rnd = random.Random(seed)
    with threadkeep.open(url_of(schema_name)):
        pass
    flows = flows_of(schema_name)
    ids = [f"c{seed}-{n}" for n in range(4)]
    answers: list[Any] = []
    with connect(schema_name, autocommit=True) as conn:
        for cid in ids:
            row = _conversation(cid, rnd)
            conn.execute(pg.INSERT_CONVERSATION, pg.encode_conversation(row))
            if rnd.random() < 0.5:  # a live lease: token 5 passes its fence
                conn.execute(
                    "UPDATE conversations SET lease_token = 5, lease_until_us = %s WHERE id = %s",
                    (NOW + 60, cid),
                )

        def ending() -> Ending:
            return Ending(flows.channel, together=True)

        for n in range(80):
            cid = rnd.choice(ids)
            if n == 40:  # an erasure: its events become placeholders the log's trim takes
                op: Any = ops.DeleteOp(cid, None, NOW + n, 7)
                answer = pump(conn, flows.call(op).attempt(1), transaction=True, ending=ending())
                answers.append(answer)
                continue
            keyed = rnd.random() < 0.15
            op = _append(
                cid, n,
                tenant=rnd.choice([None, None, "t1"]),
                role=rnd.choice(["user", "assistant", "tool"]),
                idempotency_key=f"k{rnd.randrange(3)}" if keyed else None,
                payload_json=rnd.choice([None, '{"type":"text"}']),
                link=rnd.randrange(4), events_kept=7,
                fence=rnd.choice([None, None, None, 0, 5]),
            )  # fmt: skip
            run = flows.call(op)
            attempt = 1 if rnd.random() < 0.9 else 2  # 2: a resend, the key looked up
            answers.append(pump(conn, run.attempt(attempt), transaction=True, ending=ending()))
        state = tuple(
            conn.execute(sql).fetchall()
            for sql in (
                "SELECT * FROM conversations ORDER BY id",
                "SELECT conversation_id, seq, role, content, created_us, metadata_json, CASE "
                "WHEN left(idem_key, 1) = E'\\x1f' THEN 'retry key' ELSE idem_key END, payload, "
                "link, tenant FROM messages ORDER BY conversation_id, seq",
                "SELECT tenant, conversation_id, idem_key, seq FROM idem_archive ORDER BY 1, 2, 3",
                "SELECT * FROM events ORDER BY id",
                "SELECT * FROM events_floors ORDER BY shard",
                "SELECT tenant, status, stage, sum(n) FROM conversation_counts "
                "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            )
        )
    return answers, state


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_appends_leave_the_rows_the_function_leaves(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """80 random appends (keyless and keyed, resent, fenced, by id or tenant, statuses that
    change or close, trims past ``max_messages``, a log of 7 events trimmed on every write,
    an erasure's placeholders) on two fresh schemas: through the common statement and its
    fallback, and through ``append_message_v2`` alone. Same answers, same rows."""
    names = [f"tk_one_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    try:
        fast = _run(names[0], seed)
        monkeypatch.setattr(flows_module, "_STAY", "{}")  # the statement never sent
        slow = _run(names[1], seed)
    finally:
        with psycopg.connect(SHARED, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    assert fast[0] == slow[0]
    for got, want in zip(fast[1], slow[1], strict=True):
        assert got == want
