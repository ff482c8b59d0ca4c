"""The SQLite backend, the embedded default (WAL mode, one connection per thread).

Every write is one ``BEGIN IMMEDIATE`` transaction, so it is atomic and serialized across the
threads and processes sharing the file; a write acknowledged to the caller has been committed
to the WAL and survives a process crash (and, with ``synchronous=full``, a power loss).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from threadkeep._exceptions import BackendError, BackendUnavailable, InvalidInput
from threadkeep._rules import events as ev, ops
from threadkeep._rules.retention import is_expired
from threadkeep._url import StoreURL
from threadkeep.backends.memory import parse_event_cursor
from threadkeep.backends.sqlite._schema import (
    CONV_COLUMNS,
    EVENT_COLUMNS,
    FACT_COLUMNS,
    INSERT_CONV,
    INSERT_EVENT,
    INSERT_MSG,
    LIVE,
    MIGRATIONS,
    MSG_COLUMNS,
    conv_row,
    conv_values,
    event_row,
    fact_row,
    msg_row,
    state_row,
)

__all__ = ["SQLiteBackend"]

_SELECT_CONV = f"SELECT {CONV_COLUMNS} FROM conversations WHERE id = :id"
_HEAD = "SELECT tenant, expires_us, window_size, state_version FROM conversations WHERE id = ?"
_READ = (
    "SELECT c.tenant, c.expires_us, "
    + ", ".join(f"m.{c.strip()}" for c in MSG_COLUMNS.split(","))
    + " FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id AND {} "
    "WHERE c.id = ? ORDER BY m.seq{}"
)
_CONTEXT = (
    "SELECT c.tenant, c.expires_us, m.role, m.content FROM conversations c LEFT JOIN messages m "
    "ON m.conversation_id = c.id AND m.seq > c.last_seq - c.window_size WHERE c.id = ? "
    "ORDER BY m.seq"
)
_LEASE = "SELECT lease_token, lease_until_us FROM conversations WHERE id = ?"
_POLL = (0.02, 0.2)  # first and longest pause between polls for new events, seconds


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
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with self._errors():
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            self._migrate(self._conn())

    # ---- connections --------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Map sqlite3 errors to threadkeep's: unreachable file → BackendUnavailable."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable("sqlite", self._path, str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            raise BackendError(f"sqlite database {self._path} failed: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self, write: bool) -> Iterator[sqlite3.Connection]:
        """Run a transaction: IMMEDIATE (takes the write lock at once) for writes."""
        with self._errors():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply missing migrations; the write lock makes concurrent openers migrate once."""
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version >= len(MIGRATIONS):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def ping(self) -> None:
        """Raise BackendUnavailable unless the file can be read."""
        with self._errors():
            self._conn().execute("SELECT count(*) FROM meta").fetchone()
            if not Path(self._path).exists():
                raise BackendUnavailable("sqlite", self._path, "the database file is gone")

    def close(self) -> None:
        """Close every connection this backend opened."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # ---- helpers ------------------------------------------------------------------------

    @staticmethod
    def _live(
        db: sqlite3.Connection, conversation_id: str, tenant: str | None, now_us: int
    ) -> ops.ConvRow | None:
        found = db.execute(_SELECT_CONV, {"id": conversation_id}).fetchone()
        if found is None:
            return None
        row = conv_row(found)
        if is_expired(row.expires_us, now_us) or (tenant is not None and row.tenant != tenant):
            return None
        return row

    @staticmethod
    def _head(
        db: sqlite3.Connection, conversation_id: str, tenant: str | None, now_us: int
    ) -> tuple[int, int] | None:
        """Return (window, state_version) of a live conversation, or None: a cheap _live."""
        found = db.execute(_HEAD, (conversation_id,)).fetchone()
        if found is None or is_expired(found[1], now_us) or tenant not in (None, found[0]):
            return None
        return found[2], found[3]

    @staticmethod
    def _emit(
        db: sqlite3.Connection,
        tenant: str,
        conversation_id: str,
        event: tuple[str, dict[str, Any]],
        at_us: int,
        keep: int,
    ) -> None:
        kind, data = event
        cur = db.execute(
            INSERT_EVENT,
            (tenant, conversation_id, kind, json.dumps(data, separators=(",", ":")), at_us),
        )
        last = cur.lastrowid or 0
        # Trim in steps of a tenth of the bound, so the log stays between keep and 1.1 × keep.
        step = max(1, keep // 10)
        if last > keep and last % step == 0:
            floor = last - keep
            db.execute("DELETE FROM events WHERE id <= ?", (floor,))
            db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'events_floor'", (floor,))

    @staticmethod
    def _touch(
        db: sqlite3.Connection, row: ops.ConvRow, now_us: int, sets: str, args: tuple[Any, ...]
    ) -> None:
        db.execute(
            f"UPDATE conversations SET {sets}activity_us = ?, expires_us = ?, idle_us = ? "
            "WHERE id = ?",
            (
                *args,
                now_us,
                row.retention.expires_at(now_us),
                row.retention.idle_at(now_us),
                row.id,
            ),
        )

    @staticmethod
    def _erase(db: sqlite3.Connection, conversation_id: str) -> None:
        for table in ("messages", "states", "events", "conversations"):
            column = "id" if table == "conversations" else "conversation_id"
            db.execute(f"DELETE FROM {table} WHERE {column} = ?", (conversation_id,))

    def _checkpoint(self) -> None:
        """Copy the WAL into the file and truncate it, so erased content leaves the WAL too."""
        with self._errors():
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ---- Backend ------------------------------------------------------------------------

    def create(self, op: ops.StartOp) -> tuple[ops.Outcome, ops.ConvRow]:
        """See Backend.create."""
        row = op.row
        with self._tx(write=True) as db:
            if op.resume:
                found = self._find_open(
                    db, ops.FindOpenOp(row.tenant, row.contact_id, op.open_statuses, row.created_us)
                )
                if found is not None:
                    return ops.Outcome.EXISTING, found
            db.execute(INSERT_CONV, conv_values(row))
            self._emit(
                db, row.tenant, row.id, ev.started(row.contact_id, row.status, row.stage),
                row.created_us, op.events_kept,
            )  # fmt: skip
        return ops.Outcome.CREATED, row

    def get(self, op: ops.GetOp) -> ops.ConvRow | None:
        """See Backend.get."""
        with self._errors():
            return self._live(self._conn(), op.conversation_id, op.tenant, op.now_us)

    @staticmethod
    def _find_open(db: sqlite3.Connection, op: ops.FindOpenOp) -> ops.ConvRow | None:
        marks = ", ".join("?" * len(op.open_statuses))
        found = db.execute(
            f"SELECT {CONV_COLUMNS} FROM conversations WHERE tenant = ? AND contact_id = ? "
            f"AND status IN ({marks}) AND (expires_us IS NULL OR expires_us > ?) "
            "ORDER BY activity_us DESC, id DESC LIMIT 1",
            (op.tenant, op.contact_id, *op.open_statuses, op.now_us),
        ).fetchone()
        return None if found is None else conv_row(found)

    def find_open(self, op: ops.FindOpenOp) -> ops.ConvRow | None:
        """See Backend.find_open."""
        with self._errors():
            return self._find_open(self._conn(), op)

    def append(self, op: ops.AppendOp) -> ops.AppendResult:
        """See Backend.append."""
        with self._tx(write=True) as db:
            row = self._live(db, op.conversation_id, op.tenant, op.now_us)
            if row is None:
                return ops.AppendResult(ops.Outcome.NOT_FOUND)
            if op.idempotency_key is not None:
                stored = db.execute(
                    f"SELECT {MSG_COLUMNS} FROM messages "
                    "WHERE conversation_id = ? AND idempotency_key = ?",
                    (row.id, op.idempotency_key),
                ).fetchone()
                if stored is not None:
                    return ops.AppendResult(ops.Outcome.DUPLICATE, msg_row(stored))
            if row.status not in op.on_message:
                return ops.AppendResult(ops.Outcome.CLOSED)
            if op.fence is not None:
                token, until = db.execute(_LEASE, (row.id,)).fetchone()
                if token != op.fence or until <= op.now_us:
                    return ops.AppendResult(ops.Outcome.FENCED)
            seq = row.last_seq + 1
            msg = ops.MsgRow(row.id, seq, op.role, op.content, op.now_us, op.metadata_json,
                         op.idempotency_key)  # fmt: skip
            db.execute(INSERT_MSG, (row.id, seq, op.role, op.content, op.now_us,
                                    op.metadata_json, op.idempotency_key))  # fmt: skip
            count = row.message_count + 1
            limit = row.retention.max_messages
            if limit is not None and count > limit:
                db.execute(
                    "DELETE FROM messages WHERE conversation_id = ? AND seq <= ?",
                    (row.id, seq - limit),
                )
                count = limit
            status = op.on_message[row.status]
            self._touch(
                db, row, op.now_us, "status = ?, last_seq = ?, message_count = ?, ",
                (status, seq, count),
            )  # fmt: skip
            self._emit(db, row.tenant, row.id, ev.message_appended(seq, op.role), op.now_us,
                       op.events_kept)  # fmt: skip
            if status != row.status:
                self._emit(db, row.tenant, row.id, ev.status_changed(row.status, status),
                           op.now_us, op.events_kept)  # fmt: skip
        return ops.AppendResult(ops.Outcome.OK, msg)

    def read_messages(self, op: ops.ReadOp) -> builtins.list[ops.MsgRow] | None:
        """See Backend.read_messages: one statement, so one consistent snapshot.

        seq is gap-free and trimming removes the oldest first, so the last N messages are
        exactly those with seq > last_seq - N: an index range, whatever the history's length.
        """
        if op.window or op.last is not None:
            bound, args = ("c.window_size", ()) if op.window else ("?", (op.last,))
            sql = _READ.format(f"m.seq > c.last_seq - {bound}", "")
            params: tuple[Any, ...] = (*args, op.conversation_id)
        else:
            sql = _READ.format("m.seq > ?", " LIMIT ?")
            params = (op.after or 0, op.conversation_id, op.limit)
        with self._errors():
            found = self._conn().execute(sql, params).fetchall()
        if not found:
            return None
        tenant, expires = found[0][0], found[0][1]
        if is_expired(expires, op.now_us) or op.tenant not in (None, tenant):
            return None
        return [ops.MsgRow(*r[2:]) for r in found if r[3] is not None]

    def read_context(self, op: ops.ReadOp) -> builtins.list[tuple[str, str]] | None:
        """See Backend.read_context: read_messages' window, only (role, content)."""
        with self._errors():
            found = self._conn().execute(_CONTEXT, (op.conversation_id,)).fetchall()
        if not found or is_expired(found[0][1], op.now_us) or op.tenant not in (None, found[0][0]):
            return None
        return [(r[2], r[3]) for r in found if r[2] is not None]

    def update(self, op: ops.UpdateOp) -> ops.UpdateResult:
        """See Backend.update."""
        with self._tx(write=True) as db:
            row = self._live(db, op.conversation_id, op.tenant, op.now_us)
            if row is None:
                return ops.UpdateResult(ops.Outcome.NOT_FOUND)
            event = ops.decide_update(row, op)
            if isinstance(event, ops.UpdateResult):
                return event
            column = "status" if op.field == "status" else "stage"
            self._touch(db, row, op.now_us, f"{column} = ?, ", (op.value,))
            self._emit(db, row.tenant, row.id, event, op.now_us, op.events_kept)
            new = self._live(db, row.id, None, op.now_us)
        return ops.UpdateResult(ops.Outcome.OK, new, row.status)

    def save_state(self, op: ops.SaveStateOp) -> ops.StateResult:
        """See Backend.save_state."""
        with self._tx(write=True) as db:
            row = self._live(db, op.conversation_id, op.tenant, op.now_us)
            if row is None:
                return ops.StateResult(ops.Outcome.NOT_FOUND)
            current = row.state_version
            if op.expected_version is not None and op.expected_version != current:
                return ops.StateResult(ops.Outcome.CONFLICT, current=current)
            value = op.value_json
            if op.rollback_to is not None:
                old = db.execute(
                    "SELECT value FROM states WHERE conversation_id = ? AND version = ?",
                    (row.id, op.rollback_to),
                ).fetchone()
                if old is None:
                    return ops.StateResult(ops.Outcome.NO_VERSION, current=current)
                value = old[0]
            version = current + 1
            db.execute(
                "INSERT INTO states (conversation_id, version, value, saved_us) "
                "VALUES (?, ?, ?, ?)",
                (row.id, version, value, op.now_us),
            )
            db.execute(
                "DELETE FROM states WHERE conversation_id = ? AND version <= ?",
                (row.id, version - op.keep),
            )
            self._touch(db, row, op.now_us, "state_version = ?, ", (version,))
            self._emit(db, row.tenant, row.id, ev.state_saved(version), op.now_us, op.events_kept)
        return ops.StateResult(ops.Outcome.OK, version=version, saved_us=op.now_us, current=version)

    def load_state(self, op: ops.LoadStateOp) -> tuple[ops.Outcome, ops.StateRow | None]:
        """See Backend.load_state."""
        with self._tx(write=False) as db:
            head = self._head(db, op.conversation_id, op.tenant, op.now_us)
            if head is None:
                return ops.Outcome.NOT_FOUND, None
            version = head[1] if op.version is None else op.version
            found = db.execute(
                "SELECT version, value, saved_us FROM states "
                "WHERE conversation_id = ? AND version = ?",
                (op.conversation_id, version),
            ).fetchone()
        if found is None:
            return (ops.Outcome.OK, None) if op.version is None else (ops.Outcome.NO_VERSION, None)
        return ops.Outcome.OK, state_row(found)

    def list(self, op: ops.ListOp) -> builtins.list[ops.ConvRow]:
        """See Backend.list."""
        where = ["tenant = :tenant", LIVE]
        args: dict[str, Any] = {"tenant": op.tenant, "now": op.now_us, "limit": op.limit + 1}
        for column in ("status", "stage", "agent_id", "contact_id"):
            value = getattr(op, column)
            if value is not None:
                where.append(f"{column} = :{column}")
                args[column] = value
        if op.cursor is not None:
            where.append("(activity_us, id) < (:c_activity, :c_id)")
            args["c_activity"], args["c_id"] = op.cursor
        sql = (
            f"SELECT {CONV_COLUMNS} FROM conversations WHERE {' AND '.join(where)} "
            "ORDER BY activity_us DESC, id DESC LIMIT :limit"
        )
        with self._errors():
            return [conv_row(r) for r in self._conn().execute(sql, args).fetchall()]

    def counts(self, op: ops.CountsOp) -> ops.CountsRow:
        """See Backend.counts."""
        with self._tx(write=False) as db:
            args = {"tenant": op.tenant, "now": op.now_us}
            by_status = db.execute(
                f"SELECT status, count(*) FROM conversations WHERE tenant = :tenant AND {LIVE} "
                "GROUP BY status",
                args,
            ).fetchall()
            by_stage = db.execute(
                f"SELECT stage, count(*) FROM conversations WHERE tenant = :tenant AND {LIVE} "
                "AND stage IS NOT NULL GROUP BY stage",
                args,
            ).fetchall()
        return ops.CountsRow(dict(by_status), dict(by_stage))

    def delete(self, op: ops.DeleteOp) -> bool:
        """See Backend.delete."""
        with self._tx(write=True) as db:
            found = db.execute(_SELECT_CONV, {"id": op.conversation_id}).fetchone()
            if found is None:
                return False
            row = conv_row(found)
            if op.tenant is not None and row.tenant != op.tenant:
                return False
            self._erase(db, row.id)
            self._emit(db, row.tenant, row.id, ev.deleted(), op.now_us, op.events_kept)
        self._checkpoint()
        return not is_expired(row.expires_us, op.now_us)

    def delete_contact(self, op: ops.DeleteContactOp) -> int:
        """See Backend.delete_contact."""
        with self._tx(write=True) as db:
            rows = [
                conv_row(r)
                for r in db.execute(
                    f"SELECT {CONV_COLUMNS} FROM conversations WHERE tenant = ? AND contact_id = ?",
                    (op.tenant, op.contact_id),
                ).fetchall()
            ]
            for row in rows:
                self._erase(db, row.id)
                self._emit(db, row.tenant, row.id, ev.deleted(), op.now_us, op.events_kept)
            db.execute(
                "DELETE FROM facts WHERE tenant = ? AND contact_id = ?", (op.tenant, op.contact_id)
            )
        self._checkpoint()
        return sum(not is_expired(r.expires_us, op.now_us) for r in rows)

    def sweep(self, op: ops.SweepOp) -> ops.SweepRow:
        """See Backend.sweep: bounded batches, each its own short transaction."""
        purged = self._sweep_batches(
            "SELECT id FROM conversations WHERE expires_us <= ? LIMIT ?", op, self._purge
        )
        marks = ", ".join("?" * len(op.idle_from))
        idled = self._sweep_batches(
            f"SELECT id FROM conversations WHERE status IN ({marks}) AND idle_us <= ? "
            "AND (expires_us IS NULL OR expires_us > ?) LIMIT ?",
            op,
            self._idle,
            (*op.idle_from, op.now_us),
        )
        facts = self._sweep_batches(
            "SELECT tenant || char(0) || contact_id || char(0) || key FROM facts "
            "WHERE expires_us <= ? LIMIT ?",
            op,
            self._forget,
        )
        return ops.SweepRow(idled=idled, purged=purged, facts_purged=facts)

    def _sweep_batches(
        self,
        select: str,
        op: ops.SweepOp,
        apply: Any,
        prefix: tuple[Any, ...] = (),
    ) -> int:
        total = 0
        while True:
            with self._tx(write=not op.dry_run) as db:
                limit = -1 if op.dry_run else op.batch
                keys = [k for (k,) in db.execute(select, (*prefix, op.now_us, limit)).fetchall()]
                if not op.dry_run:
                    for key in keys:
                        apply(db, key, op)
            total += len(keys)
            if op.dry_run or len(keys) < op.batch:
                return total

    def _purge(self, db: sqlite3.Connection, conversation_id: str, op: ops.SweepOp) -> None:
        self._erase(db, conversation_id)

    def _idle(self, db: sqlite3.Connection, conversation_id: str, op: ops.SweepOp) -> None:
        tenant, status = db.execute(
            "SELECT tenant, status FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        db.execute(
            "UPDATE conversations SET status = ? WHERE id = ?", (op.idle_to, conversation_id)
        )
        self._emit(db, tenant, conversation_id, ev.status_changed(status, op.idle_to), op.now_us,
                   op.events_kept)  # fmt: skip

    @staticmethod
    def _forget(db: sqlite3.Connection, key: str, op: ops.SweepOp) -> None:
        tenant, contact_id, name = key.split("\0")
        db.execute(
            "DELETE FROM facts WHERE tenant = ? AND contact_id = ? AND key = ?",
            (tenant, contact_id, name),
        )

    def read_events(self, op: ops.EventsOp, wait: float) -> builtins.list[ops.EventRow] | None:
        """See Backend.read_events: polls the file, so it sees other processes' writes."""
        after = parse_event_cursor(op.after)
        where = "id > ?" if op.tenant is None else "tenant = ? AND id > ?"
        args: tuple[Any, ...] = (after,) if op.tenant is None else (op.tenant, after)
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY id LIMIT ?"
        deadline = time.monotonic() + wait
        pause = _POLL[0]
        while True:
            with self._tx(write=False) as db:
                (floor,) = db.execute(
                    "SELECT value FROM meta WHERE key = 'events_floor'"
                ).fetchone()
                if op.after is not None and after < floor:
                    return None  # None reads from the oldest retained event
                rows = [event_row(r) for r in db.execute(sql, (*args, op.limit)).fetchall()]
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return rows
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _POLL[1])

    def acquire_lease(self, op: ops.LeaseOp) -> ops.LeaseResult:
        """See Backend.acquire_lease."""
        with self._tx(write=True) as db:
            if self._live(db, op.conversation_id, op.tenant, op.now_us) is None:
                return ops.LeaseResult(ops.Outcome.NOT_FOUND)
            token, until = db.execute(_LEASE, (op.conversation_id,)).fetchone()
            if until > op.now_us:
                return ops.LeaseResult(ops.Outcome.BUSY)
            db.execute(
                "UPDATE conversations SET lease_token = ?, lease_until_us = ? WHERE id = ?",
                (token + 1, op.until_us, op.conversation_id),
            )
        return ops.LeaseResult(ops.Outcome.OK, token + 1)

    def release_lease(self, op: ops.ReleaseOp) -> None:
        """See Backend.release_lease."""
        with self._tx(write=True) as db:
            db.execute(
                "UPDATE conversations SET lease_until_us = 0 WHERE id = ? AND lease_token = ?",
                (op.conversation_id, op.token),
            )

    def remember(self, op: ops.RememberOp) -> ops.FactRow:
        """See Backend.remember."""
        with self._tx(write=True) as db:
            db.execute(
                f"INSERT OR REPLACE INTO facts (tenant, contact_id, {FACT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    op.tenant,
                    op.contact_id,
                    op.key,
                    op.value_json,
                    op.tier,
                    op.now_us,
                    op.expires_us,
                ),
            )
        return ops.FactRow(op.key, op.value_json, op.tier, op.now_us, op.expires_us)

    def recall(self, op: ops.RecallOp) -> builtins.list[ops.FactRow]:
        """See Backend.recall."""
        sql = (
            f"SELECT {FACT_COLUMNS} FROM facts WHERE tenant = ? AND contact_id = ? "
            "AND expires_us > ?"
        )
        args: tuple[Any, ...] = (op.tenant, op.contact_id, op.now_us)
        if op.key is not None:
            sql += " AND key = ?"
            args += (op.key,)
        with self._errors():
            return [fact_row(r) for r in self._conn().execute(sql + " ORDER BY key", args)]
