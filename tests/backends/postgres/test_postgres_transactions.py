"""PostgreSQL transactions: row locks per conversation, event ids in commit order, state
compare-and-set, bounded logs, resends after a commit of unknown outcome.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

import threadkeep
from tests._servers import wait_until
from tests.backends.postgres._helpers import (
    ON_MESSAGE,
    OPEN,
    blocked_by,
    call_in_thread,
    connect,
    flows_of,
    kill_in_commit,
    make_row,
    now_us,
    open_backend,
    stall_commits,
    url_of,
)
from threadkeep import BackendUnavailable
from threadkeep._rules import ops
from threadkeep.backends.postgres._schema import APPEND, SAVE
from threadkeep.backends.postgres._wire import convert

pytestmark = pytest.mark.postgres


def test_appends_serialize_per_conversation_only(schema: str) -> None:
    """While another session holds conversation A's row lock, an append to B completes
    and an append to A waits for exactly that lock, then lands with the next seq."""
    store = threadkeep.open(url_of(schema))
    try:
        a, b = store.start(contact_id="a"), store.start(contact_id="b")
        store.append(a.id, "user", "a1")
        with connect(schema) as blocker:
            blocker.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (a.id,))
            # would hang (and hit pytest's timeout) if appends serialized globally
            assert store.append(b.id, "user", "b1").seq == 1
            done: list[Any] = []
            waiter = threading.Thread(target=lambda: done.append(store.append(a.id, "user", "a2")))
            waiter.start()
            wait_until(
                "the append to A to wait on A's row lock",
                lambda: blocked_by(blocker.info.backend_pid),
            )
            assert not done and store.append(b.id, "user", "b2").seq == 2
            blocker.rollback()
        waiter.join(60)
        assert [m.seq for m in done] == [2]
        assert [m.content for m in store.messages(a.id)] == ["a1", "a2"]
    finally:
        store.close()


def test_event_ids_follow_commit_order(schema: str) -> None:
    """An event committed late never hides behind a cursor already past it.

    Transaction 1 appends to A (its event written) and stays open; then the store appends to
    B, which commits without waiting for it. B's event is held back (below the horizon only
    once transaction 1 ends); a reader polling in between and resuming from its cursor gets
    both, each once, in position order.
    """
    from threadkeep.backends.postgres._conn import pump

    store = threadkeep.open(url_of(schema))
    flows = flows_of(schema)
    try:
        a, b = store.start(contact_id="a"), store.start(contact_id="b")
        cursor = [e.id for e in store.events(timeout=0)][-1]
        with connect(schema) as slow:
            op = ops.AppendOp(
                a.id, None, now_us(), "user", "slow", "{}", None, ON_MESSAGE, None, 10_000
            )
            pump(slow, flows.call(op).attempt(1))  # event id drawn, not committed
            fast = threading.Thread(target=lambda: store.append(b.id, "user", "fast"))
            fast.start()
            fast.join(60)  # commits while transaction 1 is open: no lock between them
            assert not fast.is_alive()
            seen = list(store.events(after=cursor, timeout=0))
            assert seen == []  # B's event is held back behind transaction 1's
            slow.commit()
        seen += list(store.events(after=seen[-1].id if seen else cursor, timeout=0))
        appended = [e.conversation_id for e in seen if e.kind == "message.appended"]
        assert appended == [a.id, b.id]  # A's transaction began first
        ids = [int(e.id) for e in seen]
        assert ids == sorted(ids)
    finally:
        store.close()


def test_state_cas_has_one_winner_and_keeps_last_k(schema: str) -> None:
    limits = threadkeep.Limits(state_versions_kept=3)
    store = threadkeep.open(url_of(schema), limits=limits)
    try:
        conv = store.start(contact_id="a")
        results: list[Any] = []

        def save(n: int) -> None:
            try:
                results.append(store.save_state(conv.id, {"n": n}, expected_version=0))
            except threadkeep.StateConflict as exc:
                results.append(exc)

        racers = [threading.Thread(target=save, args=(n,)) for n in range(6)]
        for t in racers:
            t.start()
        for t in racers:
            t.join(60)
        assert sorted(type(r).__name__ for r in results) == ["StateConflict"] * 5 + ["int"]
        for n in range(6):
            store.save_state(conv.id, {"n": n})
        with connect(schema) as conn:
            rows = conn.execute("SELECT version FROM states ORDER BY version").fetchall()
        assert [r[0] for r in rows] == [5, 6, 7]  # the last K = 3 versions
        assert store.rollback_state(conv.id, to_version=5) == 8
    finally:
        store.close()


def test_event_log_is_bounded(schema: str) -> None:
    store = threadkeep.open(url_of(schema), limits=threadkeep.Limits(events_kept=5))
    try:
        conv = store.start(contact_id="a")
        first = next(store.events(timeout=0)).id
        for n in range(20):
            store.append(conv.id, "user", f"m{n}")
        with connect(schema) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (5,)
        assert len(list(store.events(timeout=0))) == 5
        with pytest.raises(threadkeep.CursorExpired):
            list(store.events(after=first, timeout=0))
    finally:
        store.close()


def test_resent_append_and_start_apply_once(schema: str) -> None:
    from threadkeep.backends.postgres._conn import pump

    open_backend(schema).close()  # migrate
    flows, now = flows_of(schema), now_us()
    row = make_row(1, random.Random(1), now)
    start = flows.call(ops.StartOp(row, False, OPEN, 100))
    with connect(schema) as conn:
        assert pump(conn, start.attempt(1)).outcome is ops.Outcome.CREATED
        conn.commit()
        assert pump(conn, start.attempt(2)) == (ops.Outcome.CREATED, row)  # the resend
        conn.commit()
        op = ops.AppendOp(row.id, None, now, "user", "hi", "{}", None, ON_MESSAGE, None, 100)
        append = flows.call(op)
        first = pump(conn, append.attempt(1))
        conn.commit()
        again = pump(conn, append.attempt(2))  # the same internal key, looked up first
        conn.commit()
        assert again == first and first.value is not None and first.value.seq == 1
        kinds = [r[0] for r in conn.execute("SELECT kind FROM events ORDER BY id").fetchall()]
        assert kinds == ["conversation.started", "message.appended", "status.changed"]
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (1,)


def test_connection_lost_while_committing_append_is_resent_once(schema: str) -> None:
    store = threadkeep.open(url_of(schema))
    try:
        conv = store.start(contact_id="a")
        stall_commits(schema, "messages")
        thread, out = call_in_thread(lambda: store.append(conv.id, "user", "hi"))
        # lost at the Sync that commits its implicit transaction (no COMMIT statement: was)
        assert _is(kill_in_commit(schema), APPEND)
        thread.join(60)
        assert [m.seq for m in out] == [1]  # resent (safe: it carries its internal key)
        assert [m.content for m in store.messages(conv.id)] == ["hi"]
    finally:
        store.close()


def _is(query: str, statement: str) -> bool:
    """Whether ``query`` (pg_stat_activity's, cut at track_activity_query_size) is
    ``statement`` as the wire sends it."""
    return bool(query) and convert(statement)[0].decode().startswith(query)


def test_connection_lost_while_committing_state_is_not_resent(schema: str) -> None:
    """A save_state whose commit may or may not have happened is not sent again (a resend
    could conflict with itself or save twice): the caller gets BackendUnavailable. Its
    commit is the Sync of its implicit transaction (no COMMIT statement): a connection lost
    once that Sync is sent is a commit of unknown outcome, as a lost COMMIT is."""
    store = threadkeep.open(url_of(schema))
    try:
        conv = store.start(contact_id="a")
        stall_commits(schema, "states")
        thread, out = call_in_thread(
            lambda: store.save_state(conv.id, {"n": 1}, expected_version=0)
        )
        assert _is(kill_in_commit(schema), SAVE.every)
        thread.join(60)
        assert len(out) == 1 and isinstance(out[0], BackendUnavailable)
        with connect(schema) as conn:  # a resend would have committed: the gate is open now
            assert conn.execute("SELECT count(*) FROM states").fetchone() == (0,)
        assert store.save_state(conv.id, {"n": 1}, expected_version=0) == 1
    finally:
        store.close()
