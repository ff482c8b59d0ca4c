"""PostgreSQL event log: every placeholder an erasure leaves goes, and the floor passes it
(migration 10: the trim racing an erasure, placeholders below the floor, the 8 → 9 upgrade).
"""

from __future__ import annotations

import psycopg
import pytest

import threadkeep
from tests._servers import wait_until
from tests.backends.postgres._helpers import (
    SHARED,
    blocked_by,
    call_in_thread,
    connect,
    drop_schema,
    flows_of,
    now_us,
    schema_at_version,
    url_of,
)
from threadkeep._rules import ops

pytestmark = pytest.mark.postgres


def _rows(schema: str) -> list[tuple[int, str]]:
    with connect(schema) as conn:
        return [
            (int(i), str(t)) for i, t in conn.execute("SELECT id, tenant FROM events ORDER BY id")
        ]


def _floor(schema: str) -> int:
    with connect(schema) as conn:
        row = conn.execute("SELECT max(floor) FROM events_floors").fetchone()
    assert row is not None
    return int(row[0])


def test_a_trim_that_waited_on_an_erasure_deletes_its_placeholder(schema: str) -> None:
    """The trim's DELETE waits on the event an erasure is replacing; when the erasure
    commits, that statement finds the row gone and does not see the placeholder (inserted
    after its snapshot). The trim deletes the placeholder all the same and raises the floor,
    so the cursor from before the erased event expires (in 9 the placeholder stayed for good
    and that cursor read on)."""
    from threadkeep.backends.postgres._conn import pump

    with threadkeep.open(url_of(schema), limits=threadkeep.Limits(events_kept=4)) as store:
        gone = store.start(contact_id="c1", tenant="t")  # event 1
        kept = store.start(contact_id="c2", tenant="t")  # event 2
        store.set_stage(kept.id, "Q1", tenant="t")  # event 3
        with connect(schema) as eraser:
            pid = eraser.info.backend_pid
            # the erasure's own event (4) trims nothing (10,000 kept)
            op = ops.DeleteOp(gone.id, "t", now_us(), 10_000)
            pump(eraser, flows_of(schema).call(op).attempt(1))  # replaced, not committed
            # event 5 trims id 1: its DELETE waits on the row the eraser holds
            thread, out = call_in_thread(lambda: store.set_stage(kept.id, "Q2", tenant="t"))
            wait_until("the trim to wait on the erasure", lambda: blocked_by(pid))
            eraser.commit()
        thread.join(60)
        assert not thread.is_alive() and not isinstance(out[0], Exception), out
        assert _rows(schema) == [(2, "t"), (3, "t"), (4, "t"), (5, "t")]  # no placeholder
        assert _floor(schema) == 1
        with pytest.raises(threadkeep.CursorExpired):
            list(store.events(after="0", tenant="t", timeout=0))
        assert [e.id for e in store.events(after="1", tenant="t", timeout=0)] == [
            "2",
            "3",
            "4",
            "5",
        ]


def test_an_append_whose_trim_waited_on_an_erasure_deletes_its_placeholder(schema: str) -> None:
    """The same race with an append's event (migration 13 runs its steps inside the append's
    function, not through emit_event): the trim deletes the placeholder the erasure committed
    while it waited and raises the floor past it."""
    from threadkeep.backends.postgres._conn import pump

    with threadkeep.open(url_of(schema), limits=threadkeep.Limits(events_kept=5)) as store:
        gone = store.start(contact_id="c1", tenant="t")  # event 1
        kept = store.start(contact_id="c2", tenant="t")  # event 2
        store.append(kept.id, "user", "hi", tenant="t")  # events 3 and 4 (new -> active)
        with connect(schema) as eraser:
            pid = eraser.info.backend_pid
            op = ops.DeleteOp(gone.id, "t", now_us(), 10_000)  # event 5 trims nothing
            pump(eraser, flows_of(schema).call(op).attempt(1))  # replaced, not committed
            # event 6, the append's, trims id 1: its DELETE waits on the row the eraser holds
            thread, out = call_in_thread(lambda: store.append(kept.id, "user", "again"))
            wait_until("the trim to wait on the erasure", lambda: blocked_by(pid))
            eraser.commit()
        thread.join(60)
        assert not thread.is_alive() and not isinstance(out[0], Exception), out
        assert _rows(schema) == [(2, "t"), (3, "t"), (4, "t"), (5, "t"), (6, "t")]
        assert _floor(schema) == 1
        with pytest.raises(threadkeep.CursorExpired):
            list(store.events(after="0", tenant="t", timeout=0))
        assert [e.id for e in store.events(after="1", tenant="t", timeout=0)] == [
            "2",
            "3",
            "4",
            "5",
            "6",
        ]


def _event_left_below_the_floor(
    store: threadkeep.Store, schema: str
) -> tuple[threadkeep.Conversation, threadkeep.Conversation]:
    """With ``store`` keeping 2 events: event 2 (of the first conversation) is still
    uncommitted when its id is trimmed, then commits, below the floor (4); returns the two
    conversations."""
    late = store.start(contact_id="c1", tenant="t")  # event 1
    with connect(schema) as slow:  # event 2, uncommitted through its trim
        slow.execute(
            "INSERT INTO events (kind, tenant, conversation_id, data_json, at_us) "
            "VALUES ('stage.changed', 't', %s, '{}', 0)",
            (late.id,),
        )
        other = store.start(contact_id="c2", tenant="t")  # event 3 trims id 1
        for stage in ("Q1", "Q2", "Q3"):  # events 4, 5, 6 trim ids 2 (not yet), 3, 4
            store.set_stage(other.id, stage, tenant="t")
        slow.commit()
    assert _floor(schema) == 4
    return late, other


def test_sweep_deletes_the_placeholders_at_or_below_the_floor(schema: str) -> None:
    """An event still uncommitted when its id was trimmed, erased later, leaves its
    placeholder below the floor, where no trim comes: sweep deletes it, and only such
    placeholders (one above the floor waits for its trim). In 9 it stayed for good."""
    url = url_of(schema)
    with (
        threadkeep.open(url, limits=threadkeep.Limits(events_kept=2)) as store,
        threadkeep.open(url) as eraser,  # its writes trim nothing (10,000 kept)
    ):
        late, other = _event_left_below_the_floor(store, schema)
        assert _rows(schema) == [(2, "t"), (5, "t"), (6, "t")]  # 2 left below the floor
        eraser.delete(late.id, tenant="t")  # event 7; a placeholder at 2
        eraser.delete(other.id, tenant="t")  # event 8; placeholders at 5 and 6
        placeholders = [(2, ""), (5, ""), (6, "")]
        assert _rows(schema) == [*placeholders, (7, "t"), (8, "t")]
        eraser.sweep()
        assert _rows(schema) == [(5, ""), (6, ""), (7, "t"), (8, "t")]
        assert _floor(schema) == 4


def test_sweep_deletes_the_events_left_below_the_floor(schema: str) -> None:
    """An event still uncommitted when its id was trimmed stays below the floor, where no
    trim comes and no reader looks: sweep deletes it, so the log holds about events_kept
    rows under concurrent writers (it stayed until its conversation was erased)."""
    with threadkeep.open(url_of(schema), limits=threadkeep.Limits(events_kept=2)) as store:
        _event_left_below_the_floor(store, schema)
        assert _rows(schema) == [(2, "t"), (5, "t"), (6, "t")]
        store.sweep()
        assert _rows(schema) == [(5, "t"), (6, "t")]
        assert [e.kind.value for e in store.events(tenant="t", timeout=0)] == ["stage.changed"] * 2


@pytest.mark.parametrize("partitions", [0, 2])
def test_events_erased_before_version_9_get_placeholders_on_upgrade(
    schema: str, partitions: int
) -> None:
    """A schema at version 8 whose erasures left no placeholders: migration 10 gives each id
    missing between the floor and the highest drawn one a placeholder, so the trim of an
    event erased before the upgrade raises the floor past it and a cursor from before it
    expires (in 9 it read on), and every placeholder leaves with its trim. The same on a
    schema partitioned by tenant."""
    from threadkeep.backends.postgres._schema import PARTITION, SET_PARTITIONS

    with psycopg.connect(SHARED) as conn:
        schema_at_version(conn, schema, 8)
        if partitions:
            conn.execute(SET_PARTITIONS, {"n": str(partitions)})
            conn.execute(PARTITION)
        conn.execute(
            "INSERT INTO events (kind, tenant, conversation_id, data_json, at_us) "
            "SELECT 'conversation.deleted', 't', 'c' || g, '{}', g FROM generate_series(1, 5) g"
        )
        conn.execute("DELETE FROM events WHERE id = 1")  # trimmed: the floor is 1
        conn.execute("UPDATE events_floors SET floor = 1 WHERE shard = 1")
        conn.execute("DELETE FROM events WHERE id IN (2, 4)")  # erased by version 8
    with threadkeep.open(url_of(schema), limits=threadkeep.Limits(events_kept=5)) as store:
        assert _rows(schema) == [(2, ""), (3, "t"), (4, ""), (5, "t")]
        assert [e.id for e in store.events(after="3", timeout=0)] == ["5"]
        for n in range(4):  # events 6 to 9 trim ids 1 to 4
            store.start(contact_id=f"n{n}", tenant="t")
        assert _floor(schema) == 4
        with pytest.raises(threadkeep.CursorExpired):  # it never saw the erased event 4
            list(store.events(after="3", tenant="t", timeout=0))
        assert [e.id for e in store.events(after="4", timeout=0)] == ["5", "6", "7", "8", "9"]
    assert [t for _, t in _rows(schema)] == ["t"] * 5  # the placeholders left with the trim
    with connect(schema) as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = 'events'::regclass")
        assert kind.fetchone() == ("p" if partitions else "r",)


@pytest.mark.parametrize("partitions", [0, 2])
def test_events_drawn_names_its_own_schemas_sequence(schema: str, partitions: int) -> None:
    """events_drawn() holds its schema's identity sequence (bound at creation, migration 10;
    a partitioned schema's table, rebuilt after the migrations, has a sequence of its own):
    it depends on that sequence and no other and reads the highest id drawn, in two schemas
    of one database. Version 7's looked the sequence up by name on every call (no
    dependency)."""
    other = f"{schema}_b"
    try:
        for name, cid in ((schema, "c1"), (other, "c2")):
            with threadkeep.open(f"{url_of(name)}&partitions={partitions}") as store:
                for n in range(3 if name == schema else 5):
                    store.start(contact_id=f"{cid}-{n}")
        for name, drawn in ((schema, 3), (other, 5)):
            with connect(name) as conn:
                (sequence,) = conn.execute(
                    "SELECT pg_get_serial_sequence('events', 'id')"
                ).fetchone() or (None,)
                bound = conn.execute(
                    "SELECT refobjid = %s::regclass FROM pg_depend "
                    "WHERE classid = 'pg_proc'::regclass AND objid = 'events_drawn'::regproc "
                    "AND refclassid = 'pg_class'::regclass",
                    (sequence,),
                ).fetchall()
                assert sequence is not None and sequence.startswith(f"{name}.")
                assert bound == [(True,)]  # its schema's sequence, and only that
                assert conn.execute("SELECT events_drawn()").fetchone() == (drawn,)
    finally:
        drop_schema(other)
