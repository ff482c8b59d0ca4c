"""SQLite schema 6 (migration 6): what an append writes, and the guarantees kept with less.

The pages an append writes are counted from the WAL's growth (deterministic, no timing):
``docs/performance.md`` explains the count. Event ids stay unique without AUTOINCREMENT, the
idle floor keeps sweep's idle marking exact, and a version-5 file upgrades keeping its data.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import threadkeep
from threadkeep.backends.sqlite._schema import MIGRATIONS
from threadkeep.backends.sqlite.backend import _statements

FRAME = 4096 + 24  # a WAL frame: its header and one page (SQLite's default page size)
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _frames(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return (wal.stat().st_size - 32) // FRAME if wal.exists() and wal.stat().st_size else 0


def _pages_per_append(path: Path, conversations: int, appends: int, state: bool = False) -> float:
    """WAL pages per append (``state``: per save_state of ~1 KiB) round-robin."""
    store = threadkeep.open(f"sqlite:///{path}")
    try:
        ids = [store.resume(f"c{i}", tenant="t").id for i in range(conversations)]
        for cid in ids:
            store.append(cid, "user", "warm " * 40)
        conn = store._backend._conn()  # type: ignore[attr-defined]
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the WAL only grows while counting
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = _frames(path)
        for k in range(appends):
            if state:
                store.save_state(ids[k % conversations], {"k": k, "doc": "y" * 1000})
            else:
                store.append(ids[k % conversations], "user", "x" * 200)
        return (_frames(path) - before) / appends
    finally:
        store.close()


def test_an_append_writes_few_pages(tmp_path):
    """Schema 5 wrote 12.7 pages per append to one conversation and 17.8 round-robin over 100
    (the conversation row, six moving index entries, sqlite_sequence, ...); schema 6 8.7 and
    11.6 (9.4 over 50); schema 7 (no conv_by_activity) 7.6 and 9.5 (8.3 over 50): the row,
    conv_by_status, conv_by_expiry, the message, the event and its two index entries
    (checked here over 1 and 50 conversations)."""
    one = _pages_per_append(tmp_path / "one.db", 1, 100)
    many = _pages_per_append(tmp_path / "many.db", 50, 200)
    assert one <= 8.1, one
    assert many <= 8.9, many


def test_a_state_save_writes_no_overflow_page(tmp_path):
    """A ~1 KiB state fits in its leaf (states is a rowid table since migration 6): schema 5
    wrote 15.3 pages per save round-robin over 50 conversations, schema 6 9.8, schema 7
    (a save moves no conv_by_activity entry) 8.8."""
    assert _pages_per_append(tmp_path / "s.db", 50, 200, state=True) <= 9.3


def _event_ids(store: threadkeep.Store) -> list[int]:
    return [int(e.id) for e in store.events(tenant="t")]


def test_an_event_id_is_never_given_twice_after_erasure(tmp_path):
    """Without AUTOINCREMENT, an erasure of the newest events leaves a hidden placeholder."""
    clock = threadkeep.ManualClock(START)
    store = threadkeep.open(f"sqlite:///{tmp_path}/ev.db", clock=clock)
    keep = store.start("a", tenant="t")
    gone = store.start("b", tenant="t")
    store.append(gone.id, "user", "hi")
    before = max(_event_ids(store))
    store.delete(gone.id, tenant="t")  # erases b's events, the newest ones, then logs its own
    after = _event_ids(store)
    assert min(i for i in after if i > 1) > before, after
    assert [int(e.id) for e in store.events()] == after  # the placeholder is read by no one
    # an expired conversation purged by sweep (no event of its own) holding the newest ids
    short = store.start("c", tenant="t", retention=threadkeep.Retention(ttl=timedelta(hours=1)))
    store.append(short.id, "user", "hi")
    newest = max(_event_ids(store))
    clock.advance(timedelta(hours=2))
    assert store.sweep().purged == 1
    store.append(keep.id, "user", "still here")
    assert max(_event_ids(store)) > newest
    store.close()


def test_sweep_idles_by_idle_time_though_appends_leave_the_idle_floor(tmp_path):
    """An append leaves conv_by_idle's floor where it was; sweep still idles a conversation
    exactly idle_after past its last activity, and moves the floors it passed up."""
    clock = threadkeep.ManualClock(START)
    path = tmp_path / "idle.db"
    store = threadkeep.open(f"sqlite:///{path}", clock=clock)
    conv = store.start("a", tenant="t")
    store.append(conv.id, "user", "one")
    clock.advance(timedelta(minutes=20))
    store.append(conv.id, "user", "two")  # idle at +50 min; its floor still says +30
    with sqlite3.connect(path) as db:
        floor, idle = db.execute(
            "SELECT idle_floor_us, idle_us FROM conversations WHERE id = ?", (conv.id,)
        ).fetchone()
    assert floor < idle
    clock.advance(timedelta(minutes=15))  # +35: past the floor, not idle
    assert store.sweep().idled == 0
    assert store.get(conv.id, tenant="t").status == "active"
    with sqlite3.connect(path) as db:
        floor, idle = db.execute(
            "SELECT idle_floor_us, idle_us FROM conversations WHERE id = ?", (conv.id,)
        ).fetchone()
    assert floor == idle  # refreshed, so the next sweeps do not read it again
    clock.advance(timedelta(minutes=16))  # +51
    assert store.sweep(dry_run=True).idled == 1
    assert store.sweep().idled == 1
    assert store.get(conv.id, tenant="t").status == "idle"
    store.close()


def test_a_clock_set_back_lowers_the_idle_floor(tmp_path):
    clock = threadkeep.ManualClock(START)
    store = threadkeep.open(f"sqlite:///{tmp_path}/back.db", clock=clock)
    conv = store.start("a", tenant="t")
    store.append(conv.id, "user", "one")
    clock.set(START - timedelta(hours=1))
    store.append(conv.id, "user", "earlier")  # idle_us now below the floor set at START
    store.save_state(conv.id, {"k": 1})
    clock.set(START - timedelta(hours=1) + timedelta(minutes=31))  # before START's floor
    assert store.sweep().idled == 1
    store.close()


def test_a_version_5_file_upgrades_keeping_its_data(tmp_path):
    """A file at schema 5 (written here by its migrations and SQL) opens, migrates to 6 and
    works: its events keep their ids and the next id stays above every one given."""
    path = tmp_path / "v5.db"
    db = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:5]:
        for statement in _statements(script):
            db.execute(statement)
    db.execute("PRAGMA user_version = 5")
    start_us = int(START.timestamp() * 1_000_000)
    for i, (contact, stage) in enumerate((("c1", None), ("c2", "Q2"))):
        cid = f"conv{i}"
        db.execute(
            "INSERT INTO conversations VALUES (?, 't', ?, NULL, 'web', 'active', ?, '{}', ?, ?, "
            "?, ?, 1, 1, 0, ?, ?, 20, NULL, 0, 0)",
            (cid, contact, stage, start_us, start_us, start_us + 7 * 86_400_000_000,
             start_us + 1_800_000_000, 7 * 86_400_000_000, 1_800_000_000),
        )  # fmt: skip
        db.execute(
            "INSERT INTO messages VALUES (?, 1, 'user', 'hello', ?, '{}', NULL, NULL, 0)",
            (cid, start_us),
        )
    for n in range(1, 6):  # ids 1..5 kept; 6..9 were given to a conversation since erased
        db.execute(
            "INSERT INTO events (id, tenant, conversation_id, kind, data, at_us) "
            "VALUES (?, 't', 'conv0', 'message.appended', '{}', ?)",
            (n, start_us),
        )
    db.execute("UPDATE sqlite_sequence SET seq = 9 WHERE name = 'events'")
    for version in (1, 2):
        value = f'{{"v": {version}}}'
        db.execute("INSERT INTO states VALUES ('conv0', ?, ?, ?)", (version, value, start_us))
    db.execute("UPDATE conversations SET state_version = 2 WHERE id = 'conv0'")
    db.close()

    clock = threadkeep.ManualClock(START + timedelta(minutes=1))
    store = threadkeep.open(f"sqlite:///{path}", clock=clock)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        sql = db.execute("SELECT sql FROM sqlite_schema WHERE name = 'events'").fetchone()[0]
        assert "AUTOINCREMENT" not in sql
        floors = db.execute("SELECT count(*) FROM conversations WHERE idle_floor_us = idle_us")
        assert floors.fetchone()[0] == 2
    assert [int(e.id) for e in store.events(tenant="t")] == [1, 2, 3, 4, 5]
    assert [int(e.id) for e in store.events()] == [1, 2, 3, 4, 5]  # not the placeholder at 9
    assert [m.content for m in store.messages("conv1", tenant="t")] == ["hello"]
    found = store.find_open("c2", tenant="t")
    assert found is not None and found.id == "conv1"
    assert [c.id for c in store.list(tenant="t", stage="Q2").items] == ["conv1"]
    assert [c.id for c in store.list(tenant="t", contact_id="c1").items] == ["conv0"]
    assert store.load_state("conv0", tenant="t").value == {"v": 2}
    assert store.load_state("conv0", tenant="t", version=1).value == {"v": 1}
    assert store.save_state("conv0", {"v": 3}, tenant="t", expected_version=2) == 3
    assert store.append("conv0", "assistant", "hi").seq == 2
    assert [int(e.id) for e in store.events(tenant="t")][-2:] == [10, 11]  # above the 9 given
    clock.advance(timedelta(minutes=29, seconds=30))  # +30.5 min: conv1 idle at +30, conv0 +31
    assert store.sweep().idled == 1
    assert store.get("conv1", tenant="t").status == "idle"
    store.close()


@pytest.mark.parametrize("contact", ["c1", "c2"])
def test_find_open_and_a_contact_list_read_the_contact_index(tmp_path, contact):
    """find_open and list(contact_id=) name conv_by_contact: the planner would otherwise walk
    the tenant's activity index, since that one also gives the order."""
    from threadkeep.backends.sqlite import _schema as schema

    path = tmp_path / "plan.db"
    threadkeep.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:
        find = schema.FIND_OPEN.format(marks="?, ?")
        listed = schema.LIST.format(
            indexed=schema.LIST_OF_CONTACT,
            where=f"tenant = :tenant AND {schema.LIVE} AND contact_id = :contact_id",
        )
        plans = [
            [r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {find}", ("t", contact, "a", "b", 1))],
            [
                r[3]
                for r in db.execute(
                    f"EXPLAIN QUERY PLAN {listed}",
                    {"tenant": "t", "now": 1, "limit": 5, "contact_id": contact},
                )
            ],
        ]
    for plan in plans:
        assert any("USING INDEX conv_by_contact" in step for step in plan), plan


def test_a_decoded_conversation_row_is_the_constructed_one():
    """decode_conversation sets the slots through their descriptors: the same object as the
    dataclass's own constructor makes (equal, same hash and repr, still frozen)."""
    import dataclasses

    from threadkeep._rules.retention import RetentionUs
    from threadkeep._rules.rows import ConversationRow
    from threadkeep.backends._common import decode_conversation

    r = ("id1", "t", "c", None, "web", "active", "Q2", "{}", 1, 2, None, 4, 5, 6, 7, None, 9,
         20, 100, 0, 0, 0)  # fmt: skip
    built = ConversationRow(
        id="id1", tenant="t", contact_id="c", agent_id=None, channel="web", status="active",
        stage="Q2", metadata_json="{}", created_us=1, activity_us=2, expires_us=None, idle_us=4,
        message_count=5, last_seq=6, state_version=7,
        retention=RetentionUs(ttl_us=None, idle_after_us=9, window=20, max_messages=100),
    )  # fmt: skip
    decoded = decode_conversation(r)
    assert decoded == built and hash(decoded) == hash(built) and repr(decoded) == repr(built)
    assert dataclasses.replace(decoded, status="idle").status == "idle"
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.status = "idle"  # type: ignore[misc]


def test_a_file_of_a_newer_schema_is_refused_untouched(tmp_path):
    """A newer threadkeep's file: refused with both versions named (never written the old
    way: migration 6's event ids, for one, need every writer to know the placeholder)."""
    path = tmp_path / "newer.db"
    threadkeep.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(threadkeep.BackendError) as caught:
        threadkeep.open(f"sqlite:///{path}")
    message = str(caught.value)
    assert f"schema version {len(MIGRATIONS) + 1}" in message
    assert f"schema version {len(MIGRATIONS)})" in message
    assert "upgrade threadkeep" in message
    assert "\n" not in message
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
    db.close()


def test_event_ids_go_on_when_the_log_keeps_none(tmp_path):
    """events_kept=0 trims every event as it is written; its id stays taken (a placeholder),
    so ids never restart at 1 and an old cursor expires."""
    limits = threadkeep.Limits(events_kept=0)
    store = threadkeep.open(f"sqlite:///{tmp_path}/none.db", limits=limits)
    conv = store.start("a", tenant="t")
    for text in ("one", "two", "three"):
        store.append(conv.id, "user", text)
    assert list(store.events(tenant="t")) == []
    assert list(store.events()) == []
    with pytest.raises(threadkeep.CursorExpired):
        list(store.events(after="1"))
    store.close()
    store = threadkeep.open(f"sqlite:///{tmp_path}/none.db", limits=threadkeep.Limits())
    store.append(conv.id, "user", "four")
    (newest,) = _event_ids(store)
    assert newest > 4  # a start and three appends gave ids 1-4 (at least) already
    store.close()


def _stale_page_steps(path: Path, due: int, stale: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """The most SQLite VM steps one statement of sweep's floor refresh took.

    ``due`` conversations are idle-due with the oldest floors (first in conv_by_idle),
    ``stale`` ones have newer floors passed by the sweep's now while activity moved their
    idle_us later. Each refresh statement is told apart from the others by its SQL (it reads
    the idle floor, and does not order by creation as DUE_IDLE does).
    """
    from threadkeep._rules import plans
    from threadkeep.backends.sqlite.backend import SQLiteBackend

    monkeypatch.setattr(plans, "SWEEP_BATCH", 10)
    clock = threadkeep.ManualClock(START)
    store = threadkeep.open(f"sqlite:///{path}", clock=clock)
    for i in range(due):
        store.append(store.start(f"due{i}", tenant="t").id, "user", "hi")
    clock.advance(timedelta(minutes=1))
    stale_ids = [store.start(f"stale{i}", tenant="t").id for i in range(stale)]
    for cid in stale_ids:
        store.append(cid, "user", "hi")
    clock.advance(timedelta(minutes=20))
    for cid in stale_ids:
        store.append(cid, "user", "later")  # idle at +51 min; the floor stays at +31
    clock.advance(timedelta(minutes=15))  # +36: due ones idle, stale ones only passed
    backend = store._backend
    assert isinstance(backend, SQLiteBackend)
    conn = backend._conn()
    running = [""]  # the statement the VM steps now count for
    counted = [0]
    most = [0]

    def started(sql: str) -> None:
        if _is_refresh(running[0]):
            most[0] = max(most[0], counted[0])
        running[0], counted[0] = sql, 0

    def step() -> int:
        counted[0] += 1
        return 0

    conn.set_trace_callback(started)
    conn.set_progress_handler(step, 1)
    try:
        report = store.sweep()
    finally:
        conn.set_progress_handler(None, 1)
        conn.set_trace_callback(None)
    started("")
    assert report.idled == due
    with sqlite3.connect(path) as db:
        refreshed = db.execute(
            "SELECT count(*) FROM conversations WHERE contact_id LIKE 'stale%' "
            "AND idle_floor_us = idle_us AND status = 'active'"
        ).fetchone()[0]
    db.close()
    assert refreshed == stale
    store.close()
    return most[0]


def _is_refresh(sql: str) -> bool:
    return sql.lstrip().startswith("SELECT") and "idle_floor_us" in sql and "created_us" not in sql


def test_sweep_refreshes_idle_floors_without_rereading_the_due_rows(tmp_path, monkeypatch):
    """Each batch of sweep's floor refresh reads a bounded page: the idle-due rows (the
    oldest floors, first in conv_by_idle) are passed once per sweep, not read again by every
    batch. 300 due rows before 35 stale ones, batches of 10: one statement of the refresh
    costs about the VM steps it does with no due rows (193 against 181 with SQLite 3.40;
    rereading them, as before this fix: 1,906 against 106)."""
    alone = _stale_page_steps(tmp_path / "alone.db", 0, 35, monkeypatch)
    behind = _stale_page_steps(tmp_path / "behind.db", 300, 35, monkeypatch)
    assert alone > 0
    assert behind <= 2 * alone, (alone, behind)


def _idle_sweep_steps(path: Path, due: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """SQLite VM steps of a sweep (batches of 10) that idles ``due`` conversations."""
    from threadkeep._rules import plans
    from threadkeep.backends.sqlite.backend import SQLiteBackend

    monkeypatch.setattr(plans, "SWEEP_BATCH", 10)
    clock = threadkeep.ManualClock(START)
    store = threadkeep.open(f"sqlite:///{path}", clock=clock)
    for i in range(due):
        store.append(store.start(f"due{i}", tenant="t").id, "user", "hi")
    clock.advance(timedelta(minutes=31))
    backend = store._backend
    assert isinstance(backend, SQLiteBackend)
    conn = backend._conn()
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(step, 10)
    try:
        assert store.sweep().idled == due
    finally:
        conn.set_progress_handler(None, 10)
        store.close()
    return steps[0] * 10


def test_sweep_idles_many_due_rows_in_steps_linear_in_their_number(tmp_path, monkeypatch):
    """The idle-due ids are listed once per sweep (a temporary table), not selected and
    sorted again from all the remaining due rows by every batch: twice the due rows cost
    about twice the VM steps (SQLite 3.40: 91k for 300, 183k for 600; selecting each batch
    by DUE_IDLE, as before: 154k and 452k, 2.9 times)."""
    few = _idle_sweep_steps(tmp_path / "few.db", 300, monkeypatch)
    many = _idle_sweep_steps(tmp_path / "many.db", 600, monkeypatch)
    assert many <= 2.4 * few, (few, many)


def test_sweep_idles_in_creation_order_whatever_the_idle_times(tmp_path):
    """Idle changes are logged in creation order (as on every backend), also when the
    conversations fell idle in another order; one made active again meanwhile is left."""
    clock = threadkeep.ManualClock(START)
    store = threadkeep.open(f"sqlite:///{tmp_path}/order.db", clock=clock)
    ids = []
    for i, minutes in enumerate((50, 40, 30, 45)):
        retention = threadkeep.Retention(idle_after=timedelta(minutes=minutes))
        ids.append(store.start(f"c{i}", tenant="t", retention=retention).id)
        store.append(ids[-1], "user", "hi")
        clock.advance(timedelta(seconds=1))
    clock.advance(timedelta(minutes=44))
    store.append(ids[3], "user", "still here")  # idle at +89 min now
    clock.advance(timedelta(minutes=10))  # +54 min: c0, c1, c2 are due, c2's floor first
    before = [int(e.id) for e in store.events(tenant="t")]
    assert store.sweep().idled == 3
    changed = [e.conversation_id for e in store.events(tenant="t") if int(e.id) > max(before)]
    assert changed == ids[:3]
    assert [store.get(i, tenant="t").status for i in ids] == ["idle"] * 3 + ["active"]
    store.close()
