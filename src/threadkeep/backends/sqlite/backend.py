"""The SQLite backend, the embedded default (WAL mode, one connection per thread).

Every write is one ``BEGIN IMMEDIATE`` transaction, so it is atomic and serialized across the
threads and processes sharing the file; a write acknowledged to the caller has been committed
to the WAL and survives a process crash (``synchronous=NORMAL``: a power cut may lose the last
writes). The SQL is in ``_schema``; the verdicts come from ``threadkeep._rules.decide``.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

from threadkeep._exceptions import BackendError, BackendUnavailable, InvalidInput, StoreClosed
from threadkeep._rules import decide, events as ev, lifecycle, ops
from threadkeep._rules.events import NewEvent
from threadkeep._rules.flows import pauses
from threadkeep._rules.ops import Outcome, Result
from threadkeep._rules.rows import (
    ConversationRow,
    ErasureCounts,
    EventRow,
    FactRow,
    MessageRow,
    StateRow,
    SweepCounts,
    TenantCounts,
    WindowLike,
    WindowRow,
)
from threadkeep._url import StoreURL
from threadkeep.backends import _common
from threadkeep.backends._common import handlers, handles
from threadkeep.backends.sqlite import _schema as schema

__all__ = ["SQLiteBackend"]

R = TypeVar("R")
_OK = Outcome.OK
_NO_LEASE = (0, 0)
#: A sweep deletes at most this many messages per expired conversation of a batch in one
#: transaction (as the PostgreSQL backend does), then commits and goes on.
MESSAGES_PER_PURGE = 20
_NEW_TUPLE = tuple.__new__
_BEGIN_WRITE = "BEGIN IMMEDIATE"
_BEGIN_READ = "BEGIN"
#: Below every idle floor: where a sweep's keyset cursor over conv_by_idle starts.
_LOWEST = -(2**63)


def _path(url: StoreURL) -> str:
    """Return the database path of ``sqlite:///rel.db`` (relative) or ``sqlite:////abs.db``."""
    path = url.path[1:] if url.path.startswith("/") else url.path
    if not path:
        raise InvalidInput(
            "sqlite:// URLs need a file: sqlite:///relative/path.db or sqlite:////absolute/path.db",
            field="url",
        )
    return path


class SQLiteBackend:
    """SQLite store on one file, shared safely by threads and processes."""

    def __init__(self, url: StoreURL) -> None:
        self._path = _path(url)
        self._timeout = float(url.options.get("timeout", 10.0))
        #: ``?cache_size=``: each connection's page cache, as SQLite's PRAGMA (pages, or KiB
        #: when negative); None leaves SQLite's default (2 MB).
        self._cache_size: int | None = url.options.get("cache_size")
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # calls inside a transaction right now: close() waits for them (closing a connection
        # another thread is stepping on can crash the interpreter)
        self._quiet = threading.Condition(self._lock)
        self._busy = 0
        self._closed = False
        self._routes = handlers(self)
        try:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            with self._errors() as db:
                self._migrate(db)
        except BaseException:
            self.close()  # a refused or unreachable file leaves no connection open
            raise

    # ---- connections --------------------------------------------------------------------

    def _errors(self) -> _Call:
        """Map sqlite3 errors to threadkeep's: unreachable file → BackendUnavailable.

        ``with self._errors() as db:`` runs a use of this thread's connection ``db`` outside a
        transaction (one statement reads one snapshot), counted for close().
        """
        return _Call(self, None)

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """``with self._errors() as db: return db.execute(sql, params).fetchall()``, inlined.

        The same counting for close() and the same error mapping, without the ``_Call`` and
        its two methods' frames: the reads of one statement (messages, context, state) run
        through here.
        """
        self._enter()
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._mapped(exc) from exc
        finally:
            self._leave()

    def _mapped(self, exc: sqlite3.DatabaseError) -> BackendError:
        if isinstance(exc, sqlite3.OperationalError):
            return BackendUnavailable("sqlite", self._path, str(exc))
        return BackendError(f"sqlite database {self._path} failed: {exc}")

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
            self._wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA secure_delete=ON")
            if self._cache_size is not None:
                conn.execute(f"PRAGMA cache_size={int(self._cache_size)}")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL, waiting out other openers for up to the timeout.

        SQLite answers a journal-mode switch with "database is locked" at once, without its
        busy handler, while another connection of a new (rollback-mode) file holds its write
        lock: the moment several processes open a new file together.
        """
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    def _tx(self, write: bool) -> _Call:
        """Run a transaction: IMMEDIATE (takes the write lock at once) for writes.

        sqlite3 errors are mapped as by ``_errors``, and the call is counted for close().
        """
        return _Call(self, _BEGIN_WRITE if write else _BEGIN_READ)

    def _enter(self) -> None:
        """Count a call using a connection; refuse it once close() began (``_leave`` ends it)."""
        with self._lock:
            if self._closed:
                raise StoreClosed()
            self._busy += 1

    def _leave(self) -> None:
        with self._lock:
            self._busy -= 1
            if self._closed and not self._busy:  # only close() waits for the count to reach 0
                self._quiet.notify_all()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply missing migrations; the write lock makes concurrent openers migrate once.

        Raises:
            BackendError: the file's schema is newer than this version knows (a newer
                threadkeep migrated it): writing it the old way would break what the newer
                schema guarantees (migration 6: event ids are never given twice).
        """
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > len(schema.MIGRATIONS):
            raise _newer(self._path, version)
        if version == len(schema.MIGRATIONS):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > len(schema.MIGRATIONS):
                raise _newer(self._path, version)
            for number, script in enumerate(schema.MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # ---- Backend ------------------------------------------------------------------------

    def execute(self, op: ops.Op[R]) -> Result[R]:
        """Carry out ``op`` in one transaction (sweep: a series of bounded ones)."""
        return cast("Result[R]", self._routes[type(op)](op))

    def ping(self) -> None:
        """Raise BackendUnavailable unless the file can be read."""
        with self._errors() as db:
            db.execute("SELECT count(*) FROM meta").fetchone()
            if not Path(self._path).exists():
                raise BackendUnavailable("sqlite", self._path, "the database file is gone")

    def close(self) -> None:
        """Close every connection this backend opened, once no call is using one.

        Calls in progress may finish (up to the busy timeout); then they are interrupted
        (they fail with BackendUnavailable). A connection still in use after that is left to
        the garbage collector rather than closed under a running statement.
        """
        with self._lock:
            self._closed = True
            if not self._quiet.wait_for(lambda: not self._busy, self._timeout):
                for conn in self._all:
                    conn.interrupt()
                self._quiet.wait_for(lambda: not self._busy, self._timeout)
            conns, self._all = ([], self._all) if self._busy else (self._all, [])
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # ---- helpers ------------------------------------------------------------------------

    @staticmethod
    def _row(db: sqlite3.Connection, conversation_id: str) -> ConversationRow | None:
        found = db.execute(schema.SELECT_CONVERSATION, (conversation_id,)).fetchone()
        return None if found is None else _common.decode_conversation(found)

    @staticmethod
    def _locked(
        db: sqlite3.Connection, conversation_id: str
    ) -> tuple[ConversationRow | None, tuple[int, int], int]:
        """The conversation, its lease (token, until µs) and idle floor, in the transaction."""
        found = db.execute(schema.LOCK_CONVERSATION, (conversation_id,)).fetchone()
        if found is None:
            return None, _NO_LEASE, 0
        return _common.decode_conversation(found), (found[19], found[20]), found[21]

    @staticmethod
    def _emit(
        db: sqlite3.Connection,
        tenant: str,
        conversation_id: str,
        event: NewEvent,
        at_us: int,
        keep: int,
    ) -> None:
        kind, data = event
        cur = db.execute(
            schema.INSERT_EVENT,
            (tenant, conversation_id, kind, ev.data_json(data), at_us),
        )
        last = cur.lastrowid or 0
        # Trim in steps of a tenth of the bound, so the log stays between keep and 1.1 × keep.
        step = max(1, keep // 10)
        if last > keep and last % step == 0:
            floor = last - keep
            db.execute(schema.TRIM_EVENTS, (floor,))
            db.execute(schema.RAISE_FLOOR, (floor,))
            if floor >= last:  # keep=0 trimmed the event just written: its id stays taken
                db.execute(schema.KEEP_HIGH, (last,))

    @staticmethod
    def _erase(db: sqlite3.Connection, conversation_id: str) -> Counter[str]:
        """Remove a conversation's rows; return how many went, by ``schema.ERASED`` name."""
        (high,) = db.execute(schema.HIGHEST_EVENT).fetchone()
        removed = Counter(
            {
                name: db.execute(sql, (conversation_id,)).rowcount
                for name, sql in zip(schema.ERASED, schema.ERASE, strict=True)
            }
        )
        if removed["events"] and high is not None:  # the newest id stays taken
            db.execute(schema.KEEP_HIGH, (high,))
        return removed

    def _checkpoint(self) -> None:
        """Copy the WAL into the file and truncate it, so erased content leaves the WAL too."""
        with self._errors() as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @staticmethod
    def _open_one(
        db: sqlite3.Connection, tenant: str, contact_id: str, statuses: tuple[str, ...], now: int
    ) -> ConversationRow | None:
        found = db.execute(
            _find_open(len(statuses)), (tenant, contact_id, *statuses, now)
        ).fetchone()
        return None if found is None else _common.decode_conversation(found)

    # ---- conversations ------------------------------------------------------------------

    @handles(ops.StartOp)
    def _create(self, op: ops.StartOp) -> Result[ConversationRow]:
        row = op.row
        with self._tx(write=True) as db:
            open_one = None
            if op.resume:
                open_one = self._open_one(
                    db, row.tenant, row.contact_id, op.open_statuses, row.created_us
                )
            verdict = decide.create(op, open_one)
            if isinstance(verdict, Result):
                return verdict
            db.execute(schema.INSERT_CONVERSATION, schema.encode_conversation(row))
            self._emit(db, row.tenant, row.id, verdict.event, row.created_us, op.events_kept)
        return verdict.result()

    @handles(ops.GetOp)
    def _get(self, op: ops.GetOp) -> Result[ConversationRow | None]:
        with self._errors() as db:
            row = decide.visible(self._row(db, op.conversation_id), op.tenant, op.now_us)
        return Result(_OK if row is not None else Outcome.NOT_FOUND, row)

    @handles(ops.FindOpenOp)
    def _find_open(self, op: ops.FindOpenOp) -> Result[ConversationRow | None]:
        with self._errors() as db:
            found = self._open_one(db, op.tenant, op.contact_id, op.open_statuses, op.now_us)
        return Result(_OK, found)

    @handles(ops.UpdateOp)
    def _update(self, op: ops.UpdateOp) -> Result[ConversationRow | None]:
        return self._change(op, lambda row: decide.update(row, op))

    @handles(ops.RetainOp)
    def _retain(self, op: ops.RetainOp) -> Result[ConversationRow | None]:
        return self._change(op, lambda row: decide.retain(row, op))

    def _change(
        self, op: ops.UpdateOp | ops.RetainOp, judge: decide.Judge
    ) -> Result[ConversationRow | None]:
        with self._tx(write=True) as db:
            verdict = judge(self._row(db, op.conversation_id))
            if isinstance(verdict, Result):
                return verdict
            row = verdict.row
            db.execute(schema.UPDATE_CONVERSATION, schema.encode_changes(row))
            self._emit(db, row.tenant, row.id, verdict.event, op.now_us, op.events_kept)
        return verdict.result()

    @handles(ops.ListOp)
    def _list(self, op: ops.ListOp) -> Result[list[ConversationRow]]:
        where, params = _common.list_filters(op, lambda name: f":{name}")
        where = ["tenant = :tenant", schema.LIVE, *where]
        params.update(tenant=op.tenant, now=op.now_us, limit=op.limit + 1)
        if op.status is None and op.stage is None and op.contact_id is None:
            sql = _list_merged(" AND ".join(where))
        else:
            indexed = schema.LIST_OF_CONTACT if op.contact_id is not None else ""
            sql = schema.LIST.format(indexed=indexed, where=" AND ".join(where))
        with self._errors() as db:
            rows = db.execute(sql, params).fetchall()
        return Result(_OK, [_common.decode_conversation(r) for r in rows])

    @handles(ops.CountsOp)
    def _counts(self, op: ops.CountsOp) -> Result[TenantCounts]:
        with self._tx(write=False) as db:
            rows = db.execute(schema.COUNTS, {"tenant": op.tenant, "now": op.now_us}).fetchall()
        return Result(_OK, _common.tenant_counts(rows))

    @handles(ops.DeleteOp)
    def _delete(self, op: ops.DeleteOp) -> Result[None]:
        with self._tx(write=True) as db:
            row = self._row(db, op.conversation_id)
            if row is None or not decide.erasable(row, op.tenant):
                return Result(Outcome.NOT_FOUND, None)
            self._erase(db, row.id)
            self._emit(db, row.tenant, row.id, ev.deleted(), op.now_us, op.events_kept)
        self._checkpoint()
        return decide.erased(row, op.now_us)

    @handles(ops.DeleteContactOp)
    def _delete_contact(self, op: ops.DeleteContactOp) -> Result[ErasureCounts]:
        with self._tx(write=True) as db:
            found = db.execute(schema.OF_CONTACT, (op.tenant, op.contact_id)).fetchall()
            rows = [_common.decode_conversation(r) for r in found]
            removed: Counter[str] = Counter()
            for row in rows:
                removed += self._erase(db, row.id)
                self._emit(db, row.tenant, row.id, ev.deleted(), op.now_us, op.events_kept)
            facts = db.execute(schema.FORGET_CONTACT, (op.tenant, op.contact_id)).rowcount
        self._checkpoint()
        live = sum(decide.erased(r, op.now_us).outcome is _OK for r in rows)
        return Result(
            _OK,
            ErasureCounts(
                tuple(r.id for r in rows),
                live,
                removed["messages"],
                removed["states"],
                facts,
                removed["events"],
            ),
        )

    # ---- sweep --------------------------------------------------------------------------

    @handles(ops.SweepOp)
    def _sweep(self, op: ops.SweepOp) -> Result[SweepCounts]:
        """Sweep in bounded batches, each its own short transaction."""
        purged = self._batches(schema.DUE_PURGE, op) if op.dry_run else self._purge_all(op)
        if op.dry_run:
            marks = ", ".join("?" * len(op.idle_from))
            select = schema.DUE_IDLE.format(marks=marks)
            idled = self._batches(select, op, prefix=(*op.idle_from, op.now_us, op.now_us))
        else:
            for status in op.idle_from:  # floors passed by activity since: up to idle_us
                self._refresh_floors(status, op)
            idled = self._idle_all(op)
        facts = self._batches(schema.DUE_FACTS, op, self._forget)
        return Result(_OK, SweepCounts(idled=idled, purged=purged, facts_purged=facts))

    def _batches(
        self,
        select: str,
        op: ops.SweepOp,
        apply: Callable[[sqlite3.Connection, str, ops.SweepOp], None] | None = None,
        prefix: tuple[Any, ...] = (),
    ) -> int:
        if op.dry_run:  # counted by SQLite, never loaded: a million due ids cost no memory
            with self._tx(write=False) as db:
                counted = f"SELECT count(*) FROM ({select})"
                (due,) = db.execute(counted, (*prefix, op.now_us, -1)).fetchone()
            return int(due)
        total = 0
        while True:
            with self._tx(write=True) as db:
                keys = [k for (k,) in db.execute(select, (*prefix, op.now_us, op.batch)).fetchall()]
                if apply is not None:
                    for key in keys:
                        apply(db, key, op)
            total += len(keys)
            if len(keys) < op.batch:
                return total

    def _purge_all(self, op: ops.SweepOp) -> int:
        """Erase expired conversations in bounded write transactions.

        Each holds at most ``op.batch`` conversations and ``op.batch * MESSAGES_PER_PURGE``
        messages, so a long history is deleted over several short transactions (each holds
        the file's one write lock), never in one.
        """
        purged = 0
        bite = max(1, op.batch) * MESSAGES_PER_PURGE
        while True:
            with self._tx(write=True) as db:
                due = db.execute(schema.DUE_PURGE, (op.now_us, max(1, op.batch))).fetchall()
                left = bite
                for (cid,) in due:
                    left -= db.execute(schema.PURGE_MESSAGES, (cid, left)).rowcount
                    if left <= 0:
                        break  # this one may have more: the next transaction goes on
                    self._erase(db, cid)
                    purged += 1
            if not due:
                return purged

    def _idle_all(self, op: ops.SweepOp) -> int:
        """Mark the idle-due conversations idle, in creation order, a batch per transaction.

        The due ids are listed once (``IDLE_LIST``, a temporary table of this connection)
        and each is judged again in its batch's write transaction: a row made active since
        is left alone (as memory's sweep does).
        """
        marks = ", ".join("?" * len(op.idle_from))
        now = op.now_us
        with self._errors() as db:
            db.execute(schema.IDLE_TABLE)
            db.execute(schema.IDLE_CLEAR)
            db.execute(schema.IDLE_LIST.format(marks=marks), (*op.idle_from, now, now, now, -1))
        due_one = schema.IDLE_DUE_ONE.format(marks=marks)
        batch = max(1, op.batch)
        idled, after = 0, 0
        try:
            while True:
                with self._tx(write=True) as db:
                    page = db.execute(schema.IDLE_PAGE, (after, batch)).fetchall()
                    for _, cid in page:
                        found = db.execute(due_one, (cid, *op.idle_from, now, now)).fetchone()
                        if found is None:
                            continue
                        tenant, status = found
                        db.execute(schema.SET_STATUS, (op.idle_to, cid))
                        event = lifecycle.status_changed(status, op.idle_to)
                        self._emit(db, tenant, cid, event, now, op.events_kept)
                        idled += 1
                if len(page) < batch:
                    return idled
                after = page[-1][0]
        finally:  # the list is this sweep's only: not kept past it, whatever happened
            with contextlib.suppress(BackendError, StoreClosed), self._errors() as db:
                db.execute(schema.IDLE_CLEAR)

    def _refresh_floors(self, status: str, op: ops.SweepOp) -> None:
        """Move up the idle floors of a status's rows whose floor passed but not idle_us.

        Pages through the passed floors once by a keyset cursor (``STALE_IDLE``), so each
        page reads at most ``op.batch`` entries; a page is read in one statement (one
        snapshot) and only its stale rows are written, in a short write transaction. A row
        changed in between is still refreshed right: the floor becomes its idle_us then.
        """
        batch = max(1, op.batch)
        after: tuple[int, str] = (_LOWEST, "")
        while True:
            rows = self._floor_page(status, after, op.now_us, batch)
            stale = [(cid,) for cid, _, idle_us in rows if idle_us > op.now_us]
            if stale:
                with self._tx(write=True) as db:
                    db.executemany(schema.REFRESH_IDLE, stale)
            if len(rows) < batch:
                return
            after = (rows[-1][1], rows[-1][0])

    def _floor_page(
        self, status: str, after: tuple[int, str], now_us: int, batch: int
    ) -> list[tuple[str, int, int]]:
        """One ``STALE_IDLE`` page: (id, idle_floor_us, idle_us) rows."""
        with self._errors() as db:
            found = db.execute(schema.STALE_IDLE, (status, *after, now_us, batch))
            return found.fetchall()

    @staticmethod
    def _forget(db: sqlite3.Connection, key: str, op: ops.SweepOp) -> None:
        db.execute(schema.FORGET, key.split("\0"))

    # ---- messages -----------------------------------------------------------------------

    @staticmethod
    def _stored(db: sqlite3.Connection, conversation_id: str, key: str) -> MessageRow | None:
        found = db.execute(schema.FIND_KEY, {"id": conversation_id, "key": key}).fetchone()
        return None if found is None else schema.decode_message(found)

    @staticmethod
    def _trim(db: sqlite3.Connection, conversation_id: str, trim_from: int | None) -> int | None:
        """Trim to whole exchanges from seq ``trim_from`` (see decide.Appended); the cut seq."""
        if trim_from is None:
            return None
        (cut,) = db.execute(schema.CUT, (conversation_id, trim_from)).fetchone()
        if cut is not None:
            db.execute(schema.ARCHIVE, (conversation_id, cut - 1))
            db.execute(schema.TRIM_MESSAGES, (conversation_id, cut - 1))
        return cast(int | None, cut)

    def _write(
        self,
        db: sqlite3.Connection,
        row: ConversationRow,
        floor: int,
        verdict: decide.Appended,
        keep: int,
    ) -> int | None:
        """Write an append's verdict; return the seq trimming cut at (see ``_trim``)."""
        if len(verdict.messages) == 1:  # append(): execute() costs less than executemany()
            db.execute(schema.INSERT_MESSAGE, verdict.messages[0])
        else:
            db.executemany(schema.INSERT_MESSAGE, verdict.messages)
        cut = self._trim(db, row.id, verdict.trim_from)
        changes = (
            verdict.message.seq, verdict.kept(cut), verdict.activity_us, verdict.expires_us,
            verdict.idle_us, row.id,
        )  # fmt: skip
        if verdict.status == row.status and verdict.idle_us >= floor:
            db.execute(schema.UPDATE_APPENDED_SAME, changes)
        else:
            db.execute(schema.UPDATE_APPENDED, (verdict.status, *changes))
        for event in verdict.events:
            self._emit(db, row.tenant, row.id, event, verdict.activity_us, keep)
        return cut

    def _appended(self, op: ops.AppendOp) -> tuple[
        Result[MessageRow | None], ConversationRow | None, decide.Appended | None, int | None
    ]:  # fmt: skip
        """Carry out an append in its write transaction (both appends' one step).

        Returns append()'s answer, the row it read and, once written, the verdict and the seq
        trimming cut at (``_write``); it builds the answer ``Appended.result`` would, so
        append() pays no call for the step.
        """
        key = op.idempotency_key
        with self._tx(write=True) as db:
            row, lease, floor = self._locked(db, op.conversation_id)
            stored = None if key is None or row is None else self._stored(db, row.id, key)
            verdict = decide.append(row, op, stored, lease)
            if isinstance(verdict, Result):
                return verdict, row, None, None
            cut = self._write(db, cast(ConversationRow, row), floor, verdict, op.events_kept)
        return Result(_OK, verdict.message), row, verdict, cut

    @handles(ops.AppendOp)
    def _append(self, op: ops.AppendOp) -> Result[MessageRow | None]:
        return self._appended(op)[0]

    @handles(ops.AppendReadOp)
    def _append_read(
        self, op: ops.AppendReadOp
    ) -> Result[tuple[MessageRow, ConversationRow | None] | None]:
        """``_append``'s step, answering also the row as it left it."""
        answer, row, written, cut = self._appended(op.append)
        if written is None or row is None:  # not written: a duplicate's row is as stored
            message = answer.value
            return Result(answer.outcome, None if message is None else (message, row))
        return Result(_OK, (written.message, written.row_after(row, cut)))

    @handles(ops.AppendManyOp)
    def _append_many(self, op: ops.AppendManyOp) -> Result[list[tuple[MessageRow, bool]]]:
        with self._tx(write=True) as db:
            row, lease, floor = self._locked(db, op.conversation_id)
            stored: dict[str, MessageRow] = {}
            for key in {i.idempotency_key for i in op.items} - {None}:
                found = None if row is None else self._stored(db, row.id, cast(str, key))
                if found is not None:
                    stored[found.idempotency_key or ""] = found
            verdict = decide.append_many(row, op, stored, lease)
            if isinstance(verdict, Result):
                return verdict
            self._write(db, cast(ConversationRow, row), floor, verdict, op.events_kept)
        return verdict.batch_result()

    def _rewrite(self, db: sqlite3.Connection, verdict: decide.Rewritten, keep: int) -> None:
        row = verdict.row
        db.execute(schema.DELETE_FROM, (row.id, verdict.delete_from))
        db.executemany(schema.INSERT_MESSAGE, verdict.messages)
        cut = self._trim(db, row.id, verdict.trim_from)
        db.execute(schema.UPDATE_CONVERSATION, schema.encode_changes(verdict.row_after(cut)))
        self._emit(db, row.tenant, row.id, verdict.event, row.activity_us, keep)

    @handles(ops.PopOp)
    def _pop(self, op: ops.PopOp) -> Result[MessageRow | None]:
        with self._tx(write=True) as db:
            found = db.execute(schema.NEWEST, (op.conversation_id,)).fetchone()
            newest = None if found is None else schema.decode_message(found)
            verdict = decide.pop(self._row(db, op.conversation_id), op, newest)
            if isinstance(verdict, Result):
                return verdict
            self._rewrite(db, verdict, op.events_kept)
        return Result(_OK, newest)

    @handles(ops.ClearOp)
    def _clear(self, op: ops.ClearOp) -> Result[int]:
        with self._tx(write=True) as db:
            row = self._row(db, op.conversation_id)
            verdict = decide.clear(row, op)
            if isinstance(verdict, Result):
                return verdict
            self._rewrite(db, verdict, op.events_kept)
        return Result(_OK, cast(ConversationRow, row).message_count)

    @handles(ops.ReplaceOp)
    def _replace(self, op: ops.ReplaceOp) -> Result[tuple[list[MessageRow], int]]:
        with self._tx(write=True) as db:
            verdict = decide.replace_history(self._row(db, op.conversation_id), op)
            if isinstance(verdict, Result):
                return verdict
            self._rewrite(db, verdict, op.events_kept)
            # the kept messages, whoever asks (no time is below _LOWEST, any tenant)
            everyone = (verdict.row.last_seq, op.conversation_id, _LOWEST)
            kept = db.execute(schema.READ_LAST[True], everyone).fetchall()
            messages = _messages(op.conversation_id, kept)
        return Result(_OK, (messages, verdict.row.last_seq))

    def _select(
        self, op: ops.ReadOp | ops.KeyOp, sql: tuple[str, str], on: object, *limit: int
    ) -> Any:
        """Read in one statement, so from one consistent snapshot; None when not visible.

        ``sql``: a ``schema._read`` pair; ``on``: the message condition's parameter;
        ``limit``: the LIMIT's, if any.
        """
        tenant = op.tenant
        if tenant is None:  # no NULL bound (schema._VISIBLE)
            params: tuple[Any, ...] = (on, op.conversation_id, op.now_us, *limit)
        else:
            params = (on, op.conversation_id, op.now_us, tenant, *limit)
        found = self._fetch(sql[tenant is None], params)
        return None if not found else _messages(op.conversation_id, found)

    @handles(ops.ReadOp)
    def _read(self, op: ops.ReadOp) -> Result[list[MessageRow]]:
        if op.last is not None:
            rows = self._select(op, schema.READ_LAST, op.last)
        elif op.before is not None:
            rows = self._select(op, schema.READ_BEFORE, op.before, op.limit)
        else:
            rows = self._select(op, schema.READ_AFTER, op.after, op.limit)
        if rows is None:
            return Result(Outcome.NOT_FOUND, [])
        return Result(_OK, rows[::-1] if op.before is not None else rows)

    @handles(ops.KeyOp)
    def _key(self, op: ops.KeyOp) -> Result[MessageRow | None]:
        rows = self._select(op, schema.READ_KEY, op.key)
        if rows is None:
            return Result(Outcome.NOT_FOUND, None)
        return Result(_OK, rows[0] if rows else None)

    @handles(ops.DeliveryOp)
    def _delivery(self, op: ops.DeliveryOp) -> Result[MessageRow | None]:
        with self._tx(write=True) as db:
            row = decide.visible(self._row(db, op.conversation_id), op.tenant, op.now_us)
            if row is None:
                return Result(Outcome.NOT_FOUND, None)
            found = db.execute(schema.SELECT_MESSAGE, (row.id, op.seq)).fetchone()
            message = None if found is None else schema.decode_message(found)
            verdict = decide.delivery(message, op)
            if isinstance(verdict, Result):
                return verdict
            assert message is not None
            db.execute(schema.UPDATE_METADATA, (verdict.metadata_json, row.id, op.seq))
            self._emit(db, row.tenant, row.id, verdict.event, op.now_us, op.events_kept)
        return Result(_OK, message._replace(metadata_json=verdict.metadata_json))

    @handles(ops.WindowOp)
    def _window(self, op: ops.WindowOp) -> Result[tuple[Sequence[WindowLike], int]]:
        tenant = op.tenant
        if tenant is None:  # no NULL bound (schema._VISIBLE)
            params: tuple[Any, ...] = (op.extra, op.conversation_id, op.now_us)
        else:
            params = (op.extra, op.conversation_id, op.now_us, tenant)
        found = self._fetch(schema.WINDOW[tenant is None], params)
        if not found:  # not visible
            return Result(Outcome.NOT_FOUND, ([], 0))
        new = _NEW_TUPLE  # as in _messages: no window row when the first is NULLs
        rows = [] if found[0][0] is None else [new(WindowRow, r[:4]) for r in found]
        return Result(_OK, (rows, found[0][4]))

    # ---- state --------------------------------------------------------------------------

    @handles(ops.SaveStateOp)
    def _save_state(self, op: ops.SaveStateOp) -> Result[int]:
        with self._tx(write=True) as db:
            row, _, floor = self._locked(db, op.conversation_id)
            old = None
            if op.rollback_to is not None and row is not None:
                found = db.execute(schema.SELECT_STATE, (row.id, op.rollback_to)).fetchone()
                old = None if found is None else str(found[1])
            verdict = decide.save_state(row, op, old)
            if isinstance(verdict, Result):
                return verdict
            assert row is not None
            db.execute(
                schema.INSERT_STATE, (row.id, verdict.version, verdict.value_json, op.now_us)
            )
            if verdict.trim_to > 0:  # versions start at 1: none to trim before then
                db.execute(schema.TRIM_STATES, (row.id, verdict.trim_to))
            db.execute(
                schema.UPDATE_SAVED if verdict.idle_us >= floor else schema.UPDATE_SAVED_FLOOR,
                (verdict.version, verdict.activity_us, verdict.expires_us, verdict.idle_us, row.id),
            )
            self._emit(db, row.tenant, row.id, verdict.event, op.now_us, op.events_kept)
        return verdict.result()

    @handles(ops.LoadStateOp)
    def _load_state(self, op: ops.LoadStateOp) -> Result[StateRow | None]:
        # no NULL bound (schema.LOAD_STATE, _VISIBLE): the statement of what is asked for
        version, tenant = op.version, op.tenant
        params: tuple[Any, ...] = (op.conversation_id, op.now_us)
        if version is not None:
            params = (version, *params)
        if tenant is not None:
            params = (*params, tenant)
        rows = self._fetch(schema.LOAD_STATE[version is None][tenant is None], params)
        if not rows:  # not visible (the id is the key: one row at most)
            return Result(Outcome.NOT_FOUND, None)
        found = rows[0]
        if found[0] is None:
            return Result(_OK if op.version is None else Outcome.NO_VERSION, None)
        # the row is (version, value, saved_us): the StateRow's fields; both tuples made by
        # tuple.__new__, as _messages does, without the NamedTuple __new__ frames
        return _NEW_TUPLE(Result, (_OK, _NEW_TUPLE(StateRow, found)))

    # ---- events, leases, facts ----------------------------------------------------------

    @handles(ops.EventsOp)
    def _read_events(self, op: ops.EventsOp) -> Result[list[EventRow]]:
        """Poll the file, so it sees other processes' writes."""
        deadline = time.monotonic() + op.wait
        for pause in pauses(*_common.POLL):
            with self._tx(write=False) as db:
                (floor,) = db.execute(schema.FLOOR).fetchone()
                if decide.cursor_expired(op.after, floor):
                    return Result(Outcome.EXPIRED, [])
                after = floor if op.after is None else op.after
                if op.tenant is None:
                    found = db.execute(schema.READ_EVENTS, (after, op.limit))
                else:
                    found = db.execute(schema.READ_TENANT_EVENTS, (op.tenant, after, op.limit))
                rows = [_common.decode_event(r) for r in found.fetchall()]
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return Result(_OK, rows)
            time.sleep(min(pause, remaining))
        raise AssertionError("unreachable: pauses() never ends")

    @handles(ops.LeaseOp)
    def _lease(self, op: ops.LeaseOp) -> Result[int]:
        with self._tx(write=True) as db:
            row, held, _ = self._locked(db, op.conversation_id)
            verdict = decide.lease(row, op, held)
            if verdict.outcome is _OK:
                db.execute(schema.TAKE_LEASE, (verdict.value, op.until_us, op.conversation_id))
        return verdict

    @handles(ops.ReleaseOp)
    def _release(self, op: ops.ReleaseOp) -> Result[None]:
        with self._tx(write=True) as db:
            db.execute(schema.RELEASE_LEASE, (op.conversation_id, op.token))
        return Result(_OK, None)

    @handles(ops.RememberOp)
    def _remember(self, op: ops.RememberOp) -> Result[FactRow]:
        with self._tx(write=True) as db:
            old = db.execute(schema.FACT, (op.tenant, op.contact_id, op.key)).fetchone()
            fact = decide.supersede(_common.decode_fact(old) if old else None, op)
            db.execute(schema.REMEMBER, (op.tenant, op.contact_id, *fact))
        return Result(_OK, fact)

    @handles(ops.RecallOp)
    def _recall(self, op: ops.RecallOp) -> Result[list[FactRow]]:
        params: tuple[object, ...]
        if op.key is None:
            sql, params = schema.RECALL, (op.tenant, op.contact_id, op.now_us)
        else:
            sql, params = schema.RECALL_KEY, (op.tenant, op.contact_id, op.now_us, op.key)
        with self._errors() as db:
            return Result(_OK, [_common.decode_fact(r) for r in db.execute(sql, params)])

    # ---- key rotation -------------------------------------------------------------------

    @handles(ops.RewriteOp)
    def _rewrite_values(self, op: ops.RewriteOp) -> Result[int]:
        done = 0
        with self._tx(write=True) as db:
            for old, new in op.messages:
                done += db.execute(
                    schema.REWRITE_MESSAGE,
                    (new.content, new.payload_json, old.conversation_id, old.seq, old.content,
                     old.payload_json),
                ).rowcount  # fmt: skip
            for old_state, new_state in op.states:
                done += db.execute(
                    schema.REWRITE_STATE,
                    (new_state.value_json, op.conversation_id, old_state.version,
                     old_state.value_json),
                ).rowcount  # fmt: skip
            for old, new in op.archived:
                done += db.execute(
                    schema.REWRITE_ARCHIVED,
                    (new.content, new.payload_json, old.conversation_id, old.idempotency_key,
                     old.content, old.payload_json),
                ).rowcount  # fmt: skip
            for old_fact, new_fact in op.facts:
                done += db.execute(
                    schema.REWRITE_FACT,
                    (new_fact.value_json, new_fact.history_json, op.tenant, op.contact_id,
                     old_fact.key, old_fact.value_json, old_fact.history_json),
                ).rowcount  # fmt: skip
        return Result(_OK, done)

    @handles(ops.FactContactsOp)
    def _fact_contacts(self, op: ops.FactContactsOp) -> Result[tuple[list[str], str]]:
        with self._errors() as db:
            rows = db.execute(schema.FACT_CONTACTS, (op.tenant, op.cursor, op.limit + 1)).fetchall()
        page = [r[0] for r in rows[: op.limit]]
        return Result(_OK, (page, page[-1] if len(rows) > op.limit else ""))

    @handles(ops.ArchivedOp)
    def _archived(self, op: ops.ArchivedOp) -> Result[tuple[list[MessageRow], str]]:
        with self._errors() as db:
            rows = db.execute(
                schema.ARCHIVED, (op.conversation_id, op.cursor, op.limit + 1)
            ).fetchall()
        page = [schema.decode_message(r) for r in rows[: op.limit]]
        last = page[-1].idempotency_key or "" if len(rows) > op.limit else ""
        return Result(_OK, (page, last))


class _Call:
    """One use of the calling thread's connection (``SQLiteBackend._tx``, ``_errors``).

    ``with`` it: counted for close() (``_enter``, ``_leave``), inside a transaction begun by
    ``begin`` (None: none), which commits on success and rolls back on an exception;
    sqlite3 errors leave it mapped (``SQLiteBackend._mapped``). A plain class, not a
    ``contextmanager`` generator: every call runs through one, and this costs half as many
    Python frames.
    """

    __slots__ = ("_backend", "_begin", "_conn")

    def __init__(self, backend: SQLiteBackend, begin: str | None) -> None:
        self._backend = backend
        self._begin = begin

    def __enter__(self) -> sqlite3.Connection:
        backend = self._backend
        backend._enter()
        try:
            conn = self._conn = backend._conn()
            if self._begin is not None:
                conn.execute(self._begin)
        except BaseException as exc:
            backend._leave()
            if isinstance(exc, sqlite3.DatabaseError):
                raise backend._mapped(exc) from exc
            raise
        return conn

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        backend = self._backend
        conn = self._conn
        try:
            if self._begin is not None:
                conn.execute("COMMIT" if exc is None else "ROLLBACK")
        except sqlite3.DatabaseError as error:
            if conn.in_transaction:  # a failed COMMIT leaves the transaction open: end it
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise backend._mapped(error) from error
        finally:
            backend._leave()
        if isinstance(exc, sqlite3.DatabaseError):
            raise backend._mapped(exc) from exc


def _newer(path: str, version: int) -> BackendError:
    """The error of a file whose schema a newer threadkeep migrated."""
    return BackendError(
        f"sqlite database {path} has schema version {version}, newer than this threadkeep "
        f"knows (schema version {len(schema.MIGRATIONS)}): upgrade threadkeep to open it"
    )


@functools.cache
def _find_open(statuses: int) -> str:
    """``FIND_OPEN`` for that many open statuses (formatted once, not per call)."""
    return schema.FIND_OPEN.format(marks=", ".join("?" * statuses))


@functools.cache
def _list_merged(where: str) -> str:
    """``LIST_MERGED`` with one arm per status (formatted once per set of filters)."""
    arms = " UNION ALL ".join(
        schema.LIST_ARM.format(status=status.value, where=where) for status in lifecycle.Status
    )
    return schema.LIST_MERGED.format(arms=arms)


def _messages(conversation_id: str, found: list[tuple[Any, ...]]) -> list[MessageRow]:
    """The MessageRows of a ``READ_*`` result (each row: a message less its conversation id).

    The LEFT JOIN gives one row of NULLs when no message matches, else no NULL seq. The rows
    are made by ``tuple.__new__``, as ``NamedTuple._make`` does, without its Python frame and
    length check per row (the SQL fixes the columns).
    """
    if not found or found[0][0] is None:
        return []
    new, head = _NEW_TUPLE, (conversation_id,)
    return [new(MessageRow, head + r) for r in found]


def _statements(script: str) -> Iterator[str]:
    """Split a migration into its statements (a trigger's body holds semicolons of its own)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
