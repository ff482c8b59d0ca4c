"""PostgreSQL benchmark: the threadkeep PostgreSQL store beside raw psycopg doing the same rows
in one transaction and beside LangChain's PostgresChatMessageHistory (``langchain-postgres``).

Run: `make bench` or `python -m bench.bench_postgres [--url postgresql://...] [-n 2000]`.
Everything lives in a fresh schema that is dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import re
import sys
import time
import uuid
from collections import Counter
from typing import Any

import psycopg

import threadkeep
from bench._util import Result, compare, say, table

TEXT = "hello, I would like to sell my house on Elm street"
WINDOW = 20
LONG = 10_000
CONVERSATIONS = 100_000
PROCESSES = 4
PER_PROCESS = 300

RAW_SCHEMA = """
CREATE TABLE raw_conv (id text PRIMARY KEY, last_seq bigint NOT NULL DEFAULT 0,
    message_count integer NOT NULL DEFAULT 0, activity_us bigint NOT NULL DEFAULT 0,
    expires_us bigint, idle_us bigint NOT NULL DEFAULT 0, status text NOT NULL DEFAULT 'new');
CREATE TABLE raw_msg (conversation_id text, seq bigint, role text, content text,
    created_us bigint, metadata_json text, PRIMARY KEY (conversation_id, seq));
CREATE TABLE raw_event (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind text,
    conversation_id text, data_json text, at_us bigint);
"""


def _now_us() -> int:
    return time.time_ns() // 1000


class Raw:
    """Hand-written psycopg: the same rows as a threadkeep append, in one transaction."""

    def __init__(self, url: str, schema: str) -> None:
        self.conn = psycopg.connect(url, options=f"-c search_path={schema}")

    def start(self) -> str:
        cid = uuid.uuid4().hex
        with self.conn.transaction():
            self.conn.execute("INSERT INTO raw_conv (id) VALUES (%s)", (cid,))
        return cid

    def append(self, cid: str, content: str) -> int:
        now = _now_us()
        with self.conn.transaction():
            seq = self.conn.execute(
                "UPDATE raw_conv SET last_seq = last_seq + 1, message_count = message_count + 1,"
                " activity_us = %s, expires_us = %s, idle_us = %s, status = 'active' "
                "WHERE id = %s RETURNING last_seq",
                (now, now + 1, now + 1, cid),
            ).fetchone()[0]  # type: ignore[index]
            self.conn.execute(
                "INSERT INTO raw_msg VALUES (%s, %s, 'user', %s, %s, '{}')",
                (cid, seq, content, now),
            )
            self.conn.execute(
                "INSERT INTO raw_event (kind, conversation_id, data_json, at_us) "
                "VALUES ('message.appended', %s, '{}', %s)",
                (cid, now),
            )
            self.conn.execute("SELECT pg_notify('raw', '')")
        return int(seq)

    def window(self, cid: str, n: int) -> list[Any]:
        with self.conn.transaction():
            return self.conn.execute(
                "SELECT seq, role, content FROM raw_msg WHERE conversation_id = %s "
                "ORDER BY seq DESC LIMIT %s",
                (cid, n),
            ).fetchall()

    def page(self, tenant: str, limit: int) -> list[Any]:
        with self.conn.transaction():
            return self.conn.execute(
                "SELECT * FROM conversations WHERE tenant = %s "
                "AND (expires_us IS NULL OR expires_us > %s) "
                "ORDER BY activity_us DESC, id DESC LIMIT %s",
                (tenant, _now_us(), limit + 1),
            ).fetchall()


def _langchain(url: str, schema: str) -> Any:
    try:
        from langchain_core.messages import HumanMessage
        from langchain_postgres import PostgresChatMessageHistory
    except ImportError:
        say("langchain-postgres missing (pip install -e '.[bench]'); skipping LangChain")
        return None
    conn = psycopg.connect(url, options=f"-c search_path={schema}", autocommit=True)
    PostgresChatMessageHistory.create_tables(conn, "lc_history")

    def history(session: str) -> Any:
        return PostgresChatMessageHistory("lc_history", session, sync_connection=conn)

    return history, HumanMessage


def _seed_conversations(url: str, schema: str, n: int) -> None:
    """Insert n conversations of tenant 'bench' straight in SQL (setup, not measured)."""
    now = _now_us()
    with psycopg.connect(url, options=f"-c search_path={schema}") as conn:
        conn.execute(
            "INSERT INTO conversations (id, tenant, contact_id, status, metadata_json, "
            "created_us, activity_us, expires_us, idle_us, ttl_us, idle_after_us, window_n) "
            "SELECT 'seed' || lpad(g::text, 7, '0'), 'bench', 'contact' || (g %% 5000), "
            "(ARRAY['new','active','idle','closed'])[1 + g %% 4], '{}', %(now)s - g * 1000, "
            "%(now)s - g * 1000, %(now)s + 604800000000, %(now)s + 1800000000, "
            "604800000000, 1800000000, 20 FROM generate_series(1, %(n)s) g",
            {"now": now, "n": n},
        )
        conn.execute("ANALYZE conversations")


def _worker(url: str, cid: str, count: int, out: Any) -> None:
    store = threadkeep.open(url)
    seqs = [store.append(cid, "user", TEXT).seq for _ in range(count)]
    store.close()
    out.put(seqs)


def _concurrent(url: str, schema: str) -> tuple[Result, str]:
    store = threadkeep.open(url)
    cid = store.start(contact_id="race").id
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, cid, PER_PROCESS, out)) for _ in range(4)]
    began = time.perf_counter()
    for p in procs:
        p.start()
    acked = [s for _ in procs for s in out.get(timeout=300)]
    for p in procs:
        p.join()
    seconds = time.perf_counter() - began
    store.close()
    with psycopg.connect(url.split("?")[0], options=f"-c search_path={schema}") as conn:
        stored = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM messages WHERE conversation_id = %s", (cid,)
            ).fetchall()
        ]
    dup = sum(c - 1 for c in Counter(stored).values())
    lost = len(set(acked) - set(stored))
    total = PROCESSES * PER_PROCESS
    res = Result(f"append × {PROCESSES} processes", total, seconds, 0.0, 0.0)
    return res, f"acked {len(acked)}, stored {len(stored)}, lost {lost}, duplicated {dup}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--conversations", type=int, default=CONVERSATIONS)
    args = parser.parse_args(argv)
    schema = f"tk_bench_{uuid.uuid4().hex[:8]}"
    url = f"{args.url}?schema={schema}"
    n = args.n
    try:
        store = threadkeep.open(url)
        with psycopg.connect(args.url, options=f"-c search_path={schema}") as conn:
            conn.execute(RAW_SCHEMA)
        raw = Raw(args.url, schema)
        lc = _langchain(args.url, schema)
        rows: list[tuple[Result, Result | None, str]] = []

        say("append …")
        conv = store.start(contact_id="bench").id
        rcid = raw.start()
        tk, rw = compare(
            ("threadkeep append", lambda i: store.append(conv, "user", TEXT)),
            ("raw psycopg append", lambda i: raw.append(rcid, TEXT)),
            n,
        )
        rows += [(tk, rw, "row lock + message + event + NOTIFY, one transaction")]
        if lc is not None:
            history, human = lc
            h = history(str(uuid.uuid4()))
            tk, lcr = compare(
                ("threadkeep append", lambda i: store.append(conv, "user", TEXT)),
                ("langchain add_message", lambda i: h.add_message(human(TEXT))),
                n,
            )
            rows.append((tk, lcr, "LangChain: one autocommit INSERT, no seq/lifecycle/event"))

        for size in (WINDOW, LONG):
            say(f"window read at {size} messages …")
            cid = store.start(contact_id=f"w{size}").id
            rc = raw.start()
            session = str(uuid.uuid4())
            for i in range(size):
                store.append(cid, "user", f"{TEXT} {i}")
                raw.append(rc, f"{TEXT} {i}")
            if lc is not None:
                history(session).add_messages([human(f"{TEXT} {i}") for i in range(size)])
            reads = max(200, n // (10 if size == LONG else 1))

            def window(i: int, cid: str = cid) -> object:
                return store.messages(cid, last=WINDOW)

            def context(i: int, cid: str = cid) -> object:
                return store.context(cid)

            def raw_window(i: int, rc: Any = rc) -> object:
                return raw.window(rc, WINDOW)

            tk, rw = compare(
                (f"threadkeep window @ {size}", window), (f"raw window @ {size}", raw_window), reads
            )
            rows.append((tk, rw, f"last {WINDOW} of {size}"))
            tk, rw = compare(
                (f"threadkeep context() @ {size}", context),
                (f"raw window @ {size}", raw_window),
                reads,
            )
            rows.append((tk, rw, f"role/content dicts of the window ({WINDOW})"))
            if lc is not None:
                hs = history(session)

                def lc_window(i: int, hs: Any = hs) -> object:
                    return hs.messages

                tk, lcr = compare(
                    (f"threadkeep window @ {size}", window),
                    (f"langchain messages @ {size}", lc_window),
                    max(50, reads // 20) if size == LONG else reads,
                )
                rows.append((tk, lcr, "LangChain has no window: it reads the whole history"))

        say(f"list page among {args.conversations} conversations …")
        _seed_conversations(args.url, schema, args.conversations)
        tk, rw = compare(
            ("threadkeep list page", lambda i: store.list(tenant="bench", limit=20)),
            ("raw list page", lambda i: raw.page("bench", 20)),
            n,
        )
        rows.append((tk, rw, f"20 of {args.conversations}, newest activity first"))

        say("4-process concurrent appends …")
        res, note = _concurrent(url, schema)
        rows.append((res, None, note))

        table(f"PostgreSQL ({args.url}, schema {schema}, n={n})", rows)
        store.close()
        raw.conn.close()
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return 0


# ---- EXPLAIN (ANALYZE, BUFFERS) of the hot queries on a large generated dataset ----------

BASE_US = 1_790_000_000_000_000  # the dataset's "now", µs
CONV_SQL = """
INSERT INTO conversations (id, tenant, contact_id, agent_id, channel, status, stage,
    metadata_json, created_us, activity_us, expires_us, idle_us, message_count, last_seq,
    state_version, ttl_us, idle_after_us, window_n)
SELECT 'tkx' || lpad(g::text, 23, '0'), 'loc-' || (g %% 10), 'contact-' || g,
    'agent-' || (g %% 50), 'sms', (ARRAY['active','idle','waiting_agent','closed'])[1 + g %% 4],
    'Q' || (g %% 5), '{}', %(now)s - g * 60000000, %(now)s - g * 6000000,
    CASE WHEN g %% 100 = 0 THEN %(now)s - 1 ELSE %(now)s - g * 6000000 + 604800000000 END,
    %(now)s - g * 6000000 + 1800000000,
    CASE WHEN g = 1 THEN %(long)s ELSE %(per)s END, CASE WHEN g = 1 THEN %(long)s ELSE %(per)s END,
    3, 604800000000, 1800000000, 20
FROM generate_series(1, %(n)s::bigint) g
"""
MSG_SQL = """
INSERT INTO messages (tenant, conversation_id, seq, role, content, created_us, metadata_json,
    idem_key)
SELECT 'loc-' || (g %% 10), 'tkx' || lpad(g::text, 23, '0'), s,
    CASE WHEN s %% 2 = 1 THEN 'user' ELSE 'assistant' END,
    convert_to('message ' || s || ' of conversation ' || g || ': I would like to sell my house',
        'UTF8'),
    %(now)s - g * 6000000 - (%(per)s - s) * 1000000, '{}',
    CASE WHEN s %% 2 = 1 THEN 'wamid.' || g || '.' || s END
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
    CROSS JOIN generate_series(%(s0)s::bigint, %(s1)s::bigint) s
"""


def _explain_setup(conn: psycopg.Connection[Any], conversations: int, per: int, long: int) -> None:
    args = {"now": BASE_US, "n": conversations, "per": per, "long": long}
    t0 = time.perf_counter()
    conn.execute(CONV_SQL, args)
    say(f"{conversations} conversations in {time.perf_counter() - t0:.0f}s")
    chunk = max(1, 1_000_000 // per)
    for lo in range(1, conversations + 1, chunk):
        hi = min(conversations, lo + chunk - 1)
        conn.execute(MSG_SQL, {**args, "lo": lo, "hi": hi, "s0": 1, "s1": per})
        say(f"messages of conversations {lo}..{hi}: {time.perf_counter() - t0:.0f}s")
    conn.execute(MSG_SQL, {**args, "lo": 1, "hi": 1, "s0": per + 1, "s1": long})
    conn.execute(
        "INSERT INTO states (tenant, conversation_id, version, value_json, saved_us) "
        'SELECT c.tenant, c.id, v, \'{"stage": "Q2"}\', %(now)s '
        "FROM conversations c CROSS JOIN generate_series(1, 3) v",
        args,
    )
    conn.execute(
        "INSERT INTO events (kind, tenant, conversation_id, data_json, at_us) "
        "SELECT 'message.appended', 'loc-' || (g %% 10), 'tkx' || lpad((g %% %(n)s + 1)::text,"
        " 23, '0'), '{}', %(now)s FROM generate_series(1, 10000) g",
        args,
    )
    for table_name in ("conversations", "messages", "states", "events", "meta"):
        conn.execute(f"VACUUM (ANALYZE) {table_name}")
    say(f"dataset ready in {time.perf_counter() - t0:.0f}s")


def _explain_flow(
    conn: psycopg.Connection[Any], title: str, flow: Any, out: list[str], steps: int = 99
) -> None:
    """Run a flow's statements, each under EXPLAIN (ANALYZE, BUFFERS); SELECTs run again
    for the rows the flow needs. Everything is rolled back."""
    from threadkeep.backends.postgres._flows import COMMIT

    cur = psycopg.ClientCursor(conn)
    rows: Any = None
    with contextlib.suppress(StopIteration):
        for _ in range(steps):
            query, params = flow.send(rows)
            if query == COMMIT[0]:
                break
            literal = cur.mogrify(query, params or None)
            plan = cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + literal).fetchall()
            out.append(f"### {title}\n\n```sql\n{query}\n```\n\n```\n")
            out.extend(r[0] + "\n" for r in plan)
            out.append("```\n\n")
            rows = []
            if query.lstrip().upper().startswith("SELECT"):
                rows = cur.execute(literal).fetchall()
            elif "RETURNING" in query:  # the flow needs as many rows as the statement returned
                found = re.search(r"actual time=\S+ rows=(\d+)", plan[0][0])
                rows = [(1,)] * int(found.group(1)) if found else []
    conn.rollback()


def explain_main(argv: list[str] | None = None) -> int:
    from threadkeep._rules import ops
    from threadkeep.backends.postgres._flows import Flows

    parser = argparse.ArgumentParser(description="EXPLAIN the hot queries on generated data")
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--per", type=int, default=100, help="messages per conversation")
    parser.add_argument("--long", type=int, default=LONG, help="messages of conversation 1")
    parser.add_argument("--schema", help="reuse this generated schema")
    parser.add_argument("--keep", action="store_true", help="do not drop the schema")
    parser.add_argument("--out", default="explain.md")
    args = parser.parse_args(argv)
    schema = args.schema or f"tk_explain_{uuid.uuid4().hex[:8]}"
    say(f"schema {schema}")
    try:
        threadkeep.open(f"{args.url}?schema={schema}").close()
        opts = f"-c search_path={schema}"
        with psycopg.connect(args.url, options=opts, autocommit=True) as conn:
            have = conn.execute("SELECT count(*) FROM conversations").fetchone()
            if not have or not have[0]:
                _explain_setup(conn, args.conversations, args.per, args.long)
        with psycopg.connect(args.url, options=opts) as conn:
            sizes = conn.execute(
                "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM messages), "
                "(SELECT count(*) FROM events), (SELECT count(*) FROM states), "
                "pg_size_pretty(pg_total_relation_size('messages'))"
            ).fetchone()
            assert sizes is not None
            conn.rollback()
            flows = Flows("threadkeep_events_" + schema)
            now = BASE_US
            cid = "tkx" + str(args.conversations // 2 + 1).rjust(23, "0")
            long_id = "tkx" + "1".rjust(23, "0")
            on_msg = {"new": "active", "active": "active", "idle": "active"}
            out: list[str] = []
            key = f"wamid.{args.conversations // 2 + 1}.7"
            plans: list[tuple[str, ops.Op[Any], int]] = [
                (
                    "append with an idempotency key (lock row, key look-up, write, event)",
                    ops.AppendOp(
                        cid, None, now, "user", "hi", "{}", "wamid.new", on_msg, None, 10_000
                    ),
                    99,
                ),
                (
                    "idempotency replay (key found)",
                    ops.AppendOp(cid, None, now, "user", "hi", "{}", key, on_msg, None, 10_000),
                    99,
                ),
                (f"window read: last 20 of {args.long}", ops.WindowOp(long_id, None, now), 1),
                (f"window read: last 20 of {args.per}", ops.ReadOp(cid, None, now, 20, 0, 20), 1),
                (
                    "read after a seq (page of 50)",
                    ops.ReadOp(long_id, None, now, None, 5000, 50),
                    2,
                ),
                ("get", ops.GetOp(cid, None, now), 1),
                (
                    "list page: one tenant, newest activity first",
                    ops.ListOp("loc-3", now, None, None, None, None, 50, None),
                    1,
                ),
                (
                    "list page: next page by keyset cursor",
                    ops.ListOp(
                        "loc-3",
                        now,
                        None,
                        None,
                        None,
                        None,
                        50,
                        (now - 5003 * 6000000, "tkx" + "5003".rjust(23, "0")),
                    ),
                    1,
                ),
                (
                    "list page filtered by status",
                    ops.ListOp("loc-3", now, "idle", None, None, None, 50, None),
                    1,
                ),
                (
                    "find the contact's open conversation",
                    ops.FindOpenOp("loc-1", "contact-50001", ("new", "active", "idle"), now),
                    1,
                ),
                ("load state", ops.LoadStateOp(cid, None, now, None), 2),
                ("events after a cursor, one tenant", ops.EventsOp("loc-3", 5000, 100, 0.0), 2),
                (
                    "sweep: one bounded bite (20 expired conversations, at most 400 messages)",
                    ops.SweepOp(now, False, "idle", ("new", "active"), 20, 10_000),
                    6,
                ),
            ]
            work = [(title, flows.call(op), steps) for title, op, steps in plans]
            for title, call, steps in work:
                _explain_flow(conn, title, call.attempt(1), out, steps)  # warm the cache
            out.clear()  # then the same statements again, and those plans are shown
            for title, call, steps in work:
                _explain_flow(conn, title, call.attempt(1), out, steps)
        head = (
            f"Dataset: {sizes[0]:,} conversations, {sizes[1]:,} messages "
            f"(messages table with indexes: {sizes[4]}), {sizes[2]:,} events, "
            f"{sizes[3]:,} state versions.\n\n"
        )
        with open(args.out, "w") as fh:
            fh.write(head + "".join(out))
        say(f"wrote {args.out}")
    finally:
        if not args.keep:
            with psycopg.connect(args.url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            say(f"dropped {schema}")
    return 0


if __name__ == "__main__":
    sys.exit(explain_main(sys.argv[2:]) if sys.argv[1:2] == ["--explain"] else main())
