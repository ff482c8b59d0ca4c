"""PostgreSQL sweep: bounded transactions, locked rows skipped."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

import threadkeep
from tests.backends.postgres._helpers import connect, flows_of, url_of
from threadkeep._rules import ops

pytestmark = pytest.mark.postgres


def test_sweep_purges_in_bounded_transactions(schema: str) -> None:
    """The real sweep flow on a real connection: every transaction erases at most ``batch``
    conversations and ``batch * MESSAGES_PER_CONVERSATION`` messages, rows locked by a
    writer are skipped (not waited for), and nothing expired is visible before the purge."""
    from datetime import UTC, datetime, timedelta

    from threadkeep.backends.postgres._flows import COMMIT, MESSAGES_PER_CONVERSATION

    clock = threadkeep.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = threadkeep.open(
        url_of(schema), clock=clock, retention=threadkeep.Retention(ttl=timedelta(minutes=5))
    )
    try:
        ids = [store.start(contact_id=f"c{i}").id for i in range(8)]
        for cid in ids[:-1]:
            store.append(cid, "user", "hello")
        for n in range(130):  # one long history
            store.append(ids[-1], "user", f"m{n}")
        clock.advance(timedelta(minutes=10))
        assert store.list().items == []  # expired: invisible before any purge
        now = int(clock.now().timestamp() * 1_000_000)
        op = ops.SweepOp(now, False, "idle", ("new", "active"), 3, 100)
        flow = flows_of(schema).call(op).attempt(1)
        convs, msgs = [0], [0]  # erased per transaction
        with connect(schema) as conn, connect(schema) as writer:
            writer.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (ids[0],))
            rows: Any = None
            with contextlib.suppress(StopIteration), conn.cursor() as cur:
                while True:
                    query, params = flow.send(rows)
                    if query == COMMIT[0]:
                        conn.commit()
                        convs.append(0)
                        msgs.append(0)
                        rows = []
                        continue
                    cur.execute(query, params or None)
                    rows = cur.fetchall() if cur.description is not None else []
                    # schema.ERASE statements answer how many rows they deleted
                    gone = rows[0][0] if query.startswith("WITH gone AS") else cur.rowcount
                    if "DELETE FROM conversations" in query:
                        convs[-1] += gone
                    elif "DELETE FROM messages" in query:
                        msgs[-1] += gone
            conn.commit()
            writer.rollback()
        assert max(convs) <= 3 and sum(convs) == 7  # ids[0] was locked: skipped, not waited
        assert max(msgs) <= 3 * MESSAGES_PER_CONVERSATION and sum(msgs) == 6 + 130
        assert store.sweep().purged == 1  # the next sweep takes the one skipped
        with connect(schema) as conn:
            assert conn.execute("SELECT count(*) FROM conversations").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    finally:
        store.close()


def test_sweep_runs_its_statements_from_generic_plans(schema: str) -> None:
    """Once psycopg has prepared sweep's statements, the server runs them from the generic
    plan and never plans them again per call (at 1,000,000 conversations it re-planned the
    expiry probe and the idle update on every sweep); the setting ends with each of sweep's
    transactions, so the session's other statements keep PostgreSQL's own choice."""
    with threadkeep.open(url_of(schema) + "&pool_size=1") as store:
        cid = store.start(contact_id="c").id
        store.append(cid, "user", "hello")
        for _ in range(12):  # psycopg prepares on the 6th run; the server plans 5 custom first
            store.sweep()
        backend: Any = store._backend
        with backend._pool.connection() as conn:
            rows = conn.execute(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE '%SKIP LOCKED%'"
            ).fetchall()
            mode = conn.execute("SHOW plan_cache_mode").fetchone()
    # the expiry probe, the idle update, the facts' purge and the placeholders' purge
    assert len(rows) == 4, rows
    assert all(generic > 0 and custom == 0 for _, generic, custom in rows), rows
    assert mode == ("auto",)
