"""Core benchmark: memory and SQLite stores beside raw sqlite3 doing the same atomic work.

Run: `make bench` or `python -m bench.bench_core [--conversations N]`.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import threadkeep
from bench._util import compare, measure, say, table
from threadkeep.backends.sqlite._schema import MIGRATIONS

N = 3000  # timed calls per operation


def _history(store: threadkeep.Store, size: int) -> str:
    conv = store.start(f"bench-{size}-{time.perf_counter_ns()}", tenant="bench")
    for i in range(size):
        store.append(conv.id, "user", f"message number {i} with some realistic length text")
    return conv.id


TEXT = "hello, I would like to sell my house on Elm street"
STATE = {"stage": "Q2", "price": 450_000, "motivation": "relocating", "notes": "x" * 200}


class StoreOps:
    """The benchmarked operations through the threadkeep Store."""

    def __init__(self, url: str, label: str, conversations: int) -> None:
        self.label = label
        say(f"[{label}] preparing histories of 10 and 10,000 messages")
        self.store = store = threadkeep.open(url)
        self.short = _history(store, 10)
        self.long = _history(store, 10_000)
        self.version = 0
        say(f"[{label}] creating {conversations:,} conversations for the list page")
        for i in range(conversations):
            conv = store.start(f"lead-{i}", tenant="bench-list", stage=f"Q{i % 5}")
            if i % 3 == 0:
                store.append(conv.id, "user", "hi")
        self.cursor = store.list(tenant="bench-list", limit=50).next_cursor

    def append(self, cid: str) -> None:
        self.store.append(cid, "user", TEXT)

    def window(self, cid: str) -> list[dict[str, str]]:
        window: list[dict[str, str]] = self.store.context(cid)
        return window

    def save(self) -> None:
        self.version = self.store.save_state(self.short, STATE, expected_version=self.version)

    def load(self) -> object:
        return self.store.load_state(self.short).value

    def page(self, cursor: str | None) -> object:
        return self.store.list(tenant="bench-list", limit=50, cursor=cursor)


class RawOps:
    """The same work by raw sqlite3 on the same schema and pragmas: one transaction each."""

    def __init__(self, path: Path, conversations: int) -> None:
        say("[raw sqlite3] preparing")
        self.db = db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "secure_delete=ON"):
            db.execute(f"PRAGMA {pragma}")
        for statement in MIGRATIONS[0].split(";"):
            if statement.strip():
                db.execute(statement)
        self.version = 0
        self._conv("short", "bench", 0)
        self._conv("long", "bench", 0)
        for _ in range(10):
            self.append("short")
        for _ in range(10_000):
            self.append("long")
        db.execute("BEGIN")
        for i in range(conversations):
            self._conv(f"l{i}", "bench-list", i)
        db.execute("COMMIT")

    @staticmethod
    def _now() -> int:
        return time.time_ns() // 1000

    def _conv(self, cid: str, tenant: str, offset: int) -> None:
        t = self._now()
        self.db.execute(
            "INSERT INTO conversations VALUES (?, ?, ?, NULL, NULL, 'active', NULL, '{}', ?, ?, "
            "?, ?, 0, 0, 0, 604800000000, 1800000000, 20, NULL, 0, 0)",
            (cid, tenant, cid, t, t + offset, t + 10**12, t + 10**9),
        )

    def append(self, cid: str) -> None:
        db, t = self.db, self._now()
        db.execute("BEGIN IMMEDIATE")
        (seq,) = db.execute("SELECT last_seq FROM conversations WHERE id = ?", (cid,)).fetchone()
        db.execute(
            "INSERT INTO messages VALUES (?, ?, 'user', ?, ?, '{}', NULL)", (cid, seq + 1, TEXT, t)
        )
        db.execute(
            "UPDATE conversations SET last_seq = ?, message_count = message_count + 1, "
            "activity_us = ?, expires_us = ?, idle_us = ? WHERE id = ?",
            (seq + 1, t, t + 10**12, t + 10**9, cid),
        )
        db.execute(
            "INSERT INTO events (tenant, conversation_id, kind, data, at_us) "
            "VALUES ('bench', ?, 'message.appended', ?, ?)",
            (cid, json.dumps({"seq": seq + 1, "role": "user"}), t),
        )
        db.execute("COMMIT")

    def window(self, cid: str) -> list[dict[str, str]]:
        # The same work as Store.context(): check the conversation is live, read its window.
        db = self.db
        db.execute("BEGIN")
        expires, size = db.execute(
            "SELECT expires_us, window_size FROM conversations WHERE id = ?", (cid,)
        ).fetchone()
        assert expires > self._now()
        rows = db.execute(
            "SELECT role, content FROM messages WHERE conversation_id = ? "
            "ORDER BY seq DESC LIMIT ?",
            (cid, size),
        ).fetchall()
        db.execute("COMMIT")
        return [{"role": r, "content": c} for r, c in reversed(rows)]

    def save(self) -> None:
        db, t = self.db, self._now()
        self.version += 1
        value = json.dumps(STATE)
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO states VALUES ('short', ?, ?, ?)", (self.version, value, t))
        db.execute(
            "DELETE FROM states WHERE conversation_id = 'short' AND version <= ?",
            (self.version - 10,),
        )
        db.execute(
            "UPDATE conversations SET state_version = ?, activity_us = ? WHERE id = 'short'",
            (self.version, t),
        )
        db.execute(
            "INSERT INTO events (tenant, conversation_id, kind, data, at_us) "
            "VALUES ('bench', 'short', 'state.saved', '{}', ?)",
            (t,),
        )
        db.execute("COMMIT")

    def load(self) -> object:
        db = self.db
        db.execute("BEGIN")
        (version,) = db.execute(
            "SELECT state_version FROM conversations WHERE id = 'short'"
        ).fetchone()
        (value,) = db.execute(
            "SELECT value FROM states WHERE conversation_id = 'short' AND version = ?", (version,)
        ).fetchone()
        db.execute("COMMIT")
        return json.loads(value)

    def page(self) -> object:
        return self.db.execute(
            "SELECT * FROM conversations WHERE tenant = 'bench-list' "
            "AND (expires_us IS NULL OR expires_us > ?) "
            "ORDER BY activity_us DESC, id DESC LIMIT 51",
            (self._now(),),
        ).fetchall()


def run(conversations: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ops = StoreOps(f"sqlite:///{tmp}/store.db", "sqlite", conversations)
        raw = RawOps(Path(tmp) / "raw.db", conversations)
        say("[sqlite] measuring (store and raw calls alternate)")
        pairs = [
            (("sqlite append", lambda i: ops.append(ops.short)),
             ("raw append", lambda i: raw.append("short")), N, "target ≤ 2×"),
            (("sqlite append @10k", lambda i: ops.append(ops.long)),
             ("raw append @10k", lambda i: raw.append("long")), N, ""),
            (("sqlite window read (20)", lambda i: ops.window(ops.short)),
             ("raw window read", lambda i: raw.window("short")), N, "target ≤ 2×"),
            (("sqlite window read @10k", lambda i: ops.window(ops.long)),
             ("raw window read @10k", lambda i: raw.window("long")), N, ""),
            (("sqlite state save", lambda i: ops.save()),
             ("raw state save", lambda i: raw.save()), N, ""),
            (("sqlite state load", lambda i: ops.load()),
             ("raw state load", lambda i: raw.load()), N, ""),
            ((f"sqlite list page 50 of {conversations:,}", lambda i: ops.page(None)),
             ("raw list page", lambda i: raw.page()), 1000, "p50 target < 5000 µs"),
            (("sqlite list page via cursor", lambda i: ops.page(ops.cursor)),
             ("raw list page", lambda i: raw.page()), 1000, "p50 target < 5000 µs"),
        ]  # fmt: skip
        rows = []
        for a, b, n, note in pairs:
            res, base = compare(a, b, n)
            rows.append((res, base, note))
        table("SQLite store vs raw sqlite3 (same schema and rows, one transaction each)", rows)
        long, short = compare(
            ("sqlite append @10k", lambda i: ops.append(ops.long)),
            ("sqlite append @10", lambda i: ops.append(ops.short)),
            N,
        )
        table("History growth: append at 10,000 vs 10 messages", [(long, short, "target ≤ 1.2×")])
        ops.store.close()
        mem = StoreOps("memory://", "memory", conversations)
        table(
            f"memory:// (reference backend; list page among {conversations:,} conversations)",
            [
                (measure("memory append", lambda i: mem.append(mem.short), N), None, ""),
                (measure("memory window read", lambda i: mem.window(mem.short), N), None, ""),
                (measure("memory state save", lambda i: mem.save(), N), None, ""),
                (measure("memory state load", lambda i: mem.load(), N), None, ""),
                (measure("memory list page", lambda i: mem.page(None), 100), None, ""),
            ],
        )
        long, short = compare(
            ("memory append @10k", lambda i: mem.append(mem.long)),
            ("memory append @10", lambda i: mem.append(mem.short)),
            N,
        )
        table("History growth (memory)", [(long, short, "target ≤ 1.2×")])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=100_000)
    args = parser.parse_args(argv)
    run(args.conversations)


if __name__ == "__main__":
    main()
