"""Flat at scale: each operation's cost at 10,000 conversations and at N (issue 11, item 4).

    python -m bench.scale --backend sqlite|redis|postgres --conversations 1000000 \\
        [--messages-per 10] [--small 10000] [--samples 300] [--pg-url postgresql://...:5432]
        [--sqlite-cache-size -65536]

For the small size and then N, the script makes a private store (a temp SQLite file; a private
redis-server on a free loopback port; a schema in the PostgreSQL database ``tk_scale``, which
it creates and drops, on the server ``--pg-url`` names: 127.0.0.1:5432 unless told), fills it
fast with exactly the rows the store writes, checks a sample through the public API, times
every operation, and prints p50/p99 of both sizes with the ratio, then the space: bytes on
disk per message (SQLite file, PostgreSQL ``pg_total_relation_size``) or Redis memory per
conversation and message beside a raw hash + list layout of the same data. Everything it
made is removed at the end.

How the data is made (one tenant, ``scale``, so ``list``/``counts`` see all of it):

- SQLite: ``executemany`` in one transaction, rows as the store's statements write them.
- PostgreSQL: ``INSERT … SELECT … generate_series``, 10,000 conversations per transaction
  (each message carries the internal idempotency key the store gives a keyless append, so
  the unique index is as big; the count triggers run as for any insert).
- Redis: the store's own Lua scripts (create, append_many, update), pipelined 500 at a time,
  with the arguments the store's flows build: the layout is the scripts' by construction.

Conversation ``i`` has ``--messages-per`` messages. One in 50 is ``active`` with activity in
the last ten minutes (these are the ones appended to, read and resumed); the rest are
``idle`` or ``closed``, last active between six hours and five days ago. Independently of N,
``WAVES`` × ``DUE`` conversations are ``active`` and fall idle-due, and as many expire, one
wave an hour over the last five hours: a sweep as of the moment each wave is due (the
backend's sweep op with that ``now``) does the same work at both sizes, timed once per wave;
and ``counts()`` has the same expired backlog to correct for. Before timing, a sweep as of
before the first wave (nothing due yet) leaves the indexes as a periodic sweep does (on Redis
it drops the idle-time entries of conversations closed or idled). A timed call picks a
different conversation each time (a seeded random walk over the active ones), so the big
size is not measured from cache.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import threadkeep
from bench._util import say, summarize

TENANT = "scale"
DUE = 100  # per wave: idle-due conversations, and as many expired ones
WAVES = 5  # sweep is timed once per wave
DUE_ALL = DUE * WAVES
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
TTL_US = 7 * DAY_US
IDLE_US = 30 * 60_000_000
WINDOW = 20
SPREAD_US = 5 * DAY_US  # the old conversations' activity spans this much


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Layout:
    """Which conversation is what: see the module docstring."""

    n: int
    per: int
    now: int

    def cid(self, i: int) -> str:
        return f"tks{i:023d}"

    def contact(self, i: int) -> str:
        return f"contact-{i}"

    def kind(self, i: int) -> str:
        if i <= DUE_ALL:
            return "due"
        if i <= 2 * DUE_ALL:
            return "expired"
        return "active" if i % 50 == 0 else "old"

    def status(self, i: int) -> str:
        kind = self.kind(i)
        if kind in ("due", "active"):
            return "active"
        return "idle" if i % 2 else "closed"

    def activity(self, i: int) -> int:
        kind = self.kind(i)
        if kind == "active":
            return self.now - (i % 600) * 1_000_000
        if kind == "due":  # idle from now - 0.5 h - wave h
            return self.now - HOUR_US - (i % WAVES) * HOUR_US
        if kind == "expired":  # expired since now - 1 h - wave h
            return self.now - TTL_US - HOUR_US - (i % WAVES) * HOUR_US
        return self.now - 6 * HOUR_US - (i * 7919 % SPREAD_US)

    def stage(self, i: int) -> str:
        return f"Q{i % 5}"

    def agent(self, i: int) -> str:
        return f"agent-{i % 50}"

    def content(self, i: int, s: int) -> str:
        return f"message {s} of conversation {i}: I would like to sell my house"

    def active_ids(self) -> list[int]:
        return [i for i in range(50, self.n + 1, 50) if self.kind(i) == "active"]

    @property
    def live(self) -> int:
        return self.n - DUE_ALL


# ---- the timed operations ------------------------------------------------------------------


@dataclass
class Row:
    op: str
    p50: float
    p99: float


def _timed(name: str, fn: Callable[[int], object], samples: int) -> Row:
    for i in range(min(20, samples)):  # warm the connection and the prepared statements
        fn(i)
    times = []
    start = time.perf_counter()
    for i in range(samples):
        t0 = time.perf_counter()
        fn(20 + i)
        times.append(time.perf_counter() - t0)
    res = summarize(name, times, time.perf_counter() - start)
    return Row(name, res.p50_us, res.p99_us)


def measure(
    store: Any, layout: Layout, samples: int, seed: int, space: dict[str, float]
) -> list[Row]:
    """Time each operation of the issue on a filled store."""
    rng = random.Random(seed)
    active = layout.active_ids()
    picks = [rng.choice(active) for _ in range(samples + 40)]
    rows = [
        _timed("append", lambda k: store.append(layout.cid(picks[k]), "user", "hello"), samples),
        _timed("window read (last 20)", lambda k: store.messages(layout.cid(picks[k]), last=20),
               samples),
        _timed("list page of 50", lambda k: store.list(tenant=TENANT, limit=50), samples),
        _timed("list page of 50, status=active",
               lambda k: store.list(tenant=TENANT, status="active", limit=50), samples),
        _timed("counts()", lambda k: store.counts(tenant=TENANT), samples),
        _timed("find_open", lambda k: store.find_open(layout.contact(picks[k]), tenant=TENANT),
               samples),
        _timed("resume (open one)", lambda k: store.resume(layout.contact(picks[k]),
                                                            tenant=TENANT), samples),
    ]  # fmt: skip
    rows.append(sweep_waves(store, layout, space))
    rows.append(_timed("sweep() with nothing due", lambda k: store.sweep(), max(20, samples // 5)))
    return rows


def _io(field: str) -> int:
    """A counter of this process's I/O (``/proc/self/io``; SQLite's reads and writes happen in
    it): ``write_bytes`` to storage; ``rchar`` read by system calls, SQLite's page cache
    misses (from the OS's cache or the disk)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith(field + ":"))


def sweep_waves(store: Any, layout: Layout, space: dict[str, float]) -> Row:
    """Sweep as of the moment each wave falls due (oldest first): DUE purged + DUE idled."""
    from threadkeep._rules import plans

    times, cpu, written, read = [], [], 0, 0
    for wave in reversed(range(WAVES)):
        at = layout.now - wave * HOUR_US - HOUR_US // 4
        before, before_read = _io("write_bytes"), _io("rchar")
        c0 = time.thread_time()
        t0 = time.perf_counter()
        result = store._backend.execute(plans.sweep(at, store.limits, False))
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        written += _io("write_bytes") - before
        read += _io("rchar") - before_read
        done = (result.value.purged, result.value.idled)
        if done != (DUE, DUE):
            raise SystemExit(f"sweep of wave {wave} did {done}, expected {DUE} and {DUE}")
    if written:  # SQLite: the WAL and the checkpoint into the file
        space["bytes written per sweep wave (this process: SQLite)"] = written / WAVES
        space["bytes read per sweep wave (this process: SQLite's cache misses)"] = read / WAVES
        # the CPU this thread spent in each wave (SQLite works in it): unlike the wall time,
        # not lengthened by the neighbours' load while it waited for a core
        space["sweep CPU per wave, median µs (this thread: SQLite's work)"] = (
            sorted(cpu)[WAVES // 2] * 1e6
        )
    res = summarize("sweep", times, sum(times))
    return Row(f"sweep() of {DUE} expired + {DUE} idle-due ({WAVES} waves)", res.p50_us,
               max(times) * 1e6)  # fmt: skip


def prime(store: Any, layout: Layout) -> None:
    """Sweep as of before any wave is due: the indexes end as a periodic sweep leaves them."""
    from threadkeep._rules import plans

    store._backend.execute(plans.sweep(layout.now - WAVES * HOUR_US - HOUR_US // 2,
                                       store.limits, False))  # fmt: skip


def verify(store: Any, layout: Layout) -> None:
    """Read a sample back through the public API: the generated rows are the store's rows."""
    for i in (2 * DUE_ALL + 1, layout.active_ids()[0], layout.n):
        conv = store.get(layout.cid(i))
        assert conv.status == layout.status(i), (conv, layout.status(i))
        assert (conv.contact_id, conv.stage, conv.tenant) == (
            layout.contact(i), layout.stage(i), TENANT,
        ), conv  # fmt: skip
        messages = store.messages(conv.id, last=layout.per)
        assert [m.content for m in messages] == [
            layout.content(i, s) for s in range(1, layout.per + 1)
        ], messages
        assert [m.seq for m in messages] == list(range(1, layout.per + 1))
    counts = store.counts(tenant=TENANT)
    assert counts.total == layout.live, (counts.total, layout.live)
    page = store.list(tenant=TENANT, limit=50)
    assert len(page.items) == 50 and page.items[0].status == "active", page.items[0]
    assert store.find_open(layout.contact(layout.active_ids()[0]), tenant=TENANT) is not None


# ---- SQLite ----------------------------------------------------------------------------------


def sqlite_fill(path: str, layout: Layout) -> None:
    import sqlite3

    from threadkeep.backends.sqlite import _schema as schema

    threadkeep.open(f"sqlite:///{path}").close()  # migrated
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")

    def conversations() -> Iterator[tuple[object, ...]]:
        for i in range(1, layout.n + 1):
            at = layout.activity(i)
            yield (
                layout.cid(i), TENANT, layout.contact(i), layout.agent(i), "sms",
                layout.status(i), layout.stage(i), "{}", at - layout.per * 1_000_000, at,
                at + TTL_US, at + IDLE_US, layout.per, layout.per, 0, TTL_US, IDLE_US,
                WINDOW, None,
            )  # fmt: skip

    def messages() -> Iterator[tuple[object, ...]]:
        for i in range(1, layout.n + 1):
            at = layout.activity(i)
            for s in range(1, layout.per + 1):
                role = "user" if s % 2 else "assistant"
                created = at - (layout.per - s) * 1_000_000
                yield layout.cid(i), s, role, layout.content(i, s), created, "{}", None, None, 0

    db.executemany(schema.INSERT_CONVERSATION, conversations())
    db.executemany(schema.INSERT_MESSAGE, messages())
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


#: The timed store's ``cache_size`` URL option (``--sqlite-cache-size``; None: SQLite's default).
sqlite_cache_size: int | None = None


@contextmanager
def sqlite_store(layout: Layout, space: dict[str, float]) -> Iterator[Any]:
    folder = tempfile.mkdtemp(prefix="tk-scale-")
    path = os.path.join(folder, "scale.db")
    try:
        t0 = time.perf_counter()
        sqlite_fill(path, layout)
        say(f"sqlite: {layout.n:,} conversations, {layout.n * layout.per:,} messages in "
            f"{time.perf_counter() - t0:.0f}s")  # fmt: skip
        size = os.path.getsize(path)
        space["file bytes per message"] = size / (layout.n * layout.per)
        space["file bytes per conversation (with its messages)"] = size / layout.n
        query = "" if sqlite_cache_size is None else f"?cache_size={sqlite_cache_size}"
        with threadkeep.open(f"sqlite:///{path}{query}") as store:
            yield store
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---- PostgreSQL --------------------------------------------------------------------------

PG_BASE = "postgresql://postgres@127.0.0.1:5432"
PG_DB = "tk_scale"
#: The server the PostgreSQL runs use (``--pg-url``; ``PG_BASE`` unless told otherwise).
pg_base = PG_BASE

PG_CONVERSATIONS = """
INSERT INTO conversations (id, tenant, contact_id, agent_id, channel, status, stage,
    metadata_json, created_us, activity_us, expires_us, idle_us, message_count, last_seq,
    state_version, ttl_us, idle_after_us, window_n, max_messages)
SELECT 'tks' || lpad(g::text, 23, '0'), %(tenant)s, 'contact-' || g, 'agent-' || (g %% 50),
    'sms', CASE WHEN g <= %(due)s OR (g > 2 * %(due)s AND g %% 50 = 0) THEN 'active'
        WHEN g %% 2 = 1 THEN 'idle' ELSE 'closed' END,
    'Q' || (g %% 5), '{}', a - %(per)s * 1000000, a, a + %(ttl)s, a + %(idle)s, %(per)s,
    %(per)s, 0, %(ttl)s, %(idle)s, %(window)s, NULL
FROM (SELECT g, CASE WHEN g <= %(due)s THEN %(now)s - %(hour)s - (g %% %(waves)s) * %(hour)s
        WHEN g <= 2 * %(due)s THEN %(now)s - %(ttl)s - %(hour)s - (g %% %(waves)s) * %(hour)s
        WHEN g %% 50 = 0 THEN %(now)s - (g %% 600) * 1000000
        ELSE %(now)s - 6 * %(hour)s - (g * 7919 %% %(spread)s) END AS a
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g) x
"""
PG_MESSAGES = """
INSERT INTO messages (tenant, conversation_id, seq, role, content, created_us, metadata_json,
    idem_key, payload, link)
SELECT c.tenant, c.id, s, CASE WHEN s %% 2 = 1 THEN 'user' ELSE 'assistant' END,
    convert_to('message ' || s || ' of conversation ' || ltrim(substr(c.id, 4), '0')
        || ': I would like to sell my house', 'UTF8'),
    c.activity_us - (%(per)s - s) * 1000000, '{}', E'\\x1f' || md5(c.id || s), NULL, 0
FROM conversations c CROSS JOIN generate_series(1, %(per)s) s
WHERE c.id BETWEEN 'tks' || lpad(%(lo)s::text, 23, '0') AND 'tks' || lpad(%(hi)s::text, 23, '0')
"""


def pg_fill(url: str, schema_name: str, layout: Layout) -> None:
    import psycopg

    threadkeep.open(url).close()  # migrated
    args = {"tenant": TENANT, "due": DUE_ALL, "waves": WAVES, "per": layout.per, "ttl": TTL_US,
            "idle": IDLE_US, "window": WINDOW, "now": layout.now, "hour": HOUR_US,
            "spread": SPREAD_US}  # fmt: skip
    # 10,000 conversations per transaction: the count triggers update a few counter rows once
    # per row, and one transaction's own dead versions of a row cannot be pruned before it
    # commits, so a much bigger one walks ever longer version chains (quadratic)
    chunk = 10_000
    t0 = time.perf_counter()
    with psycopg.connect(f"{pg_base}/{PG_DB}", autocommit=True,
                         options=f"-c search_path={schema_name}") as conn:  # fmt: skip
        for lo in range(1, layout.n + 1, chunk):
            hi = min(layout.n, lo + chunk - 1)
            with conn.transaction():
                conn.execute(PG_CONVERSATIONS, {**args, "lo": lo, "hi": hi})
                conn.execute(PG_MESSAGES, {**args, "lo": lo, "hi": hi})
            if hi % 100_000 == 0 or hi == layout.n:
                say(f"  postgres: conversations ..{hi:,} after {time.perf_counter() - t0:.0f}s")
        conn.execute("VACUUM (ANALYZE) conversations")
        conn.execute("VACUUM (ANALYZE) messages")
        conn.execute("VACUUM (ANALYZE) conversation_counts")


#: counts() before migration 6: grouping the tenant's live rows (for the comparison).
PG_OLD_COUNTS = (
    "SELECT status, stage, count(*) FROM conversations WHERE tenant = %(tenant)s "
    "AND (expires_us IS NULL OR expires_us > %(now)s) GROUP BY status, stage"
)


def pg_counts_cost(schema_name: str, layout: Layout, space: dict[str, float]) -> None:
    """The COUNTS statement's shared buffers (deterministic), and the old statement's time."""
    import psycopg

    from threadkeep.backends.postgres import _schema as schema

    params = {"tenant": TENANT, "now": _now_us()}
    with psycopg.connect(f"{pg_base}/{PG_DB}", options=f"-c search_path={schema_name}") as conn:
        plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {schema.COUNTS}", params)
        top = plan.fetchone()[0][0]["Plan"]  # type: ignore[index]
        space["COUNTS shared buffers touched"] = top.get("Shared Hit Blocks", 0) + top.get(
            "Shared Read Blocks", 0
        )
        cid = layout.cid(layout.active_ids()[-1])
        reads = (
            ("window read", schema.WINDOW.one, {"id": cid, "n": 20, "extra": 0,
                                                "now": params["now"], "tenant": TENANT}),
            ("list page", schema.LIST.format(where=f"tenant = %(tenant)s AND {schema.LIVE}"),
             {**params, "n": 51}),
            ("find_open", schema.FIND_OPEN, {**params, "contact_id": layout.contact(1000),
                                             "statuses": ["new", "active"]}),
        )  # fmt: skip
        for name, sql, args in reads:
            doc = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", args).fetchone()
            top = doc[0][0]["Plan"]  # type: ignore[index]
            hit, read = top.get("Shared Hit Blocks", 0), top.get("Shared Read Blocks", 0)
            space[f"{name}: buffers hit + read from the OS (first run)"] = hit + read
            space[f"{name}: of which read from the OS"] = read
        for name, sql in (("COUNTS (now)", schema.COUNTS), ("old GROUP BY counts", PG_OLD_COUNTS)):
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                conn.execute(sql, params).fetchall()
                times.append(time.perf_counter() - t0)
            space[f"{name} statement, best of 5, µs"] = min(times) * 1e6


@contextmanager
def pg_store(layout: Layout, space: dict[str, float]) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(f"{pg_base}/postgres", autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,)).fetchone()
        if not exists:
            admin.execute(f"CREATE DATABASE {PG_DB}")
    schema_name = f"scale_{uuid.uuid4().hex[:8]}"
    url = f"{pg_base}/{PG_DB}?schema={schema_name}"
    try:
        t0 = time.perf_counter()
        pg_fill(url, schema_name, layout)
        say(f"postgres: {layout.n:,} conversations, {layout.n * layout.per:,} messages in "
            f"{time.perf_counter() - t0:.0f}s")  # fmt: skip
        with psycopg.connect(f"{pg_base}/{PG_DB}",
                             options=f"-c search_path={schema_name}") as conn:  # fmt: skip
            msgs, convs, total = conn.execute(  # type: ignore[misc]
                "SELECT pg_total_relation_size('messages'), "
                "pg_total_relation_size('conversations'), "
                "(SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r')",
                (schema_name,),
            ).fetchone()
        space["messages table + indexes, bytes per message"] = msgs / (layout.n * layout.per)
        space["conversations table + indexes, bytes per conversation"] = convs / layout.n
        space["whole schema, bytes per message"] = float(total) / (layout.n * layout.per)
        pg_counts_cost(schema_name, layout, space)
        with threadkeep.open(url) as store:
            yield store
    finally:
        with psycopg.connect(f"{pg_base}/{PG_DB}", autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE')


# ---- Redis --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    """A private redis-server (nothing persisted) on a free loopback port."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = _free_port()
    folder = tempfile.mkdtemp(prefix="tk-scale-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", folder],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


def _used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def redis_fill(store: Any, layout: Layout) -> None:
    """Run the store's own scripts for every conversation, pipelined (flows pumped in step)."""
    from threadkeep import Retention
    from threadkeep._rules import plans
    from threadkeep.backends.redis._flows import Eval

    backend = store._backend
    backend._check_cluster()
    flows, scripts, client = backend._flows, backend._scripts, backend._client
    key = backend._options.keys.events
    limits, retention = store.limits, Retention()

    def ops_of(i: int) -> Iterator[Any]:
        at = layout.activity(i)
        start = at - layout.per * 1_000_000
        yield plans.start(start, limits, retention, layout.contact(i), tenant=TENANT,
                          agent_id=layout.agent(i), channel="sms", stage=layout.stage(i),
                          metadata=None, resume=False, conversation_id=layout.cid(i))  # fmt: skip
        items = [("user" if s % 2 else "assistant", layout.content(i, s)) for s in
                 range(1, layout.per + 1)]  # fmt: skip
        yield plans.append_many(at, limits, layout.cid(i), items, tenant=None)
        if layout.status(i) != "active":
            yield plans.status(at, limits, layout.cid(i), layout.status(i), None)

    batch = 500
    for lo in range(1, layout.n + 1, batch):
        pending = [ops_of(i) for i in range(lo, min(layout.n, lo + batch - 1) + 1)]
        while pending:
            running = []
            for source in pending:
                op = next(source, None)
                if op is not None:
                    running.append((source, flows.flow(op)))
            if not running:
                break
            steps = [(source, flow, next(flow)) for source, flow in running]
            while steps:
                pipe = client.pipeline(transaction=False)
                for _, _, request in steps:
                    assert isinstance(request, Eval), request
                    scripts[request.name](keys=[key], args=list(request.args), client=pipe)
                replies = pipe.execute()
                following = []
                for (source, flow, _), reply in zip(steps, replies, strict=True):
                    try:
                        following.append((source, flow, flow.send(reply)))
                    except StopIteration as stop:
                        if stop.value.outcome.name not in ("OK", "CREATED"):
                            raise SystemExit(f"generation failed: {stop.value}") from None
                steps = following
            pending = [source for source, _ in running]
        if lo % 50_000 == 1:
            say(f"  redis: conversations ..{lo + batch - 1:,}")


def redis_baseline(client: Any, layout: Layout, n: int) -> int:
    """Memory of the same data as plain keys: one hash of fields + one list of messages each."""
    before = _used_memory(client)
    pipe = client.pipeline(transaction=False)
    for i in range(1, n + 1):
        at = layout.activity(i)
        pipe.hset(f"raw:c:{i}", mapping={
            "tenant": TENANT, "contact_id": layout.contact(i), "agent_id": layout.agent(i),
            "channel": "sms", "status": layout.status(i), "stage": layout.stage(i),
            "created_us": at, "activity_us": at,
        })  # fmt: skip
        pipe.rpush(f"raw:m:{i}", *[f"{layout.content(i, s)}" for s in range(1, layout.per + 1)])
        if i % 1000 == 0:
            pipe.execute()
    pipe.execute()
    used = _used_memory(client) - before
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, match="raw:*", count=5000)
        if keys:
            client.unlink(*keys)
        if not cursor:
            return used


@contextmanager
def redis_store(layout: Layout, space: dict[str, float]) -> Iterator[Any]:
    import redis

    with redis_server() as server:
        client = redis.Redis.from_url(server)
        url = f"{server}?prefix=scale"
        with threadkeep.open(url) as store:
            before = _used_memory(client)
            t0 = time.perf_counter()
            redis_fill(store, layout)
            say(f"redis: {layout.n:,} conversations, {layout.n * layout.per:,} messages in "
                f"{time.perf_counter() - t0:.0f}s")  # fmt: skip
            used = _used_memory(client) - before
            space["used_memory per conversation (with its messages), bytes"] = used / layout.n
            space["used_memory per message, bytes"] = used / (layout.n * layout.per)
            sample = min(layout.n, 20_000)
            raw = redis_baseline(client, layout, sample)
            space["raw hash + list per conversation (with its messages), bytes"] = raw / sample
            space["raw per message, bytes"] = raw / (sample * layout.per)
            space["ratio to raw"] = (used / layout.n) / (raw / sample)
            i = layout.active_ids()[0]
            backend: Any = store._backend
            keys = backend._options.keys
            for name in ("conversation", "messages", "idempotency", "retry_order", "event_ids"):
                found = client.memory_usage(getattr(keys, name)(layout.cid(i)))
                space[f"MEMORY USAGE {name} key of one conversation"] = float(found or 0)
            yield store
        client.close()


STORES = {"sqlite": sqlite_store, "postgres": pg_store, "redis": redis_store}


# ---- concurrent writers of one tenant (PostgreSQL): the counters' hot rows -----------------


def _writer(url: str, calls: int, out: Any) -> None:
    times = []
    with threadkeep.open(url) as store:
        for k in range(calls):
            t0 = time.perf_counter()
            conv = store.start(f"w{os.getpid()}-{k}", tenant="hot", stage="Q1")
            store.append(conv.id, "user", "hello")  # new → active: two counter rows change
            times.append(time.perf_counter() - t0)
    out.put(times)


def contention(writers: int, calls: int) -> None:
    """``writers`` processes × ``calls`` (start + first append) in one tenant, at once."""
    import multiprocessing

    import psycopg

    with psycopg.connect(f"{pg_base}/postgres", autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,)).fetchone():
            admin.execute(f"CREATE DATABASE {PG_DB}")
    schema_name = f"scale_hot_{uuid.uuid4().hex[:8]}"
    url = f"{pg_base}/{PG_DB}?schema={schema_name}"
    try:
        threadkeep.open(url).close()
        out: Any = multiprocessing.Queue()
        procs = [multiprocessing.Process(target=_writer, args=(url, calls, out))
                 for _ in range(writers)]  # fmt: skip
        t0 = time.perf_counter()
        for proc in procs:
            proc.start()
        samples = [t for _ in procs for t in out.get()]
        for proc in procs:
            proc.join()
        wall = time.perf_counter() - t0
        with threadkeep.open(url) as store:
            counts = store.counts(tenant="hot")
        res = summarize("start+append", samples, wall)
        sys.stdout.write(
            f"{writers} processes × {calls} (start + first append), one tenant: "
            f"p50 {res.p50_us:,.0f} µs, p99 {res.p99_us:,.0f} µs, {len(samples) / wall:,.0f}/s; "
            f"counts: {counts.total} ({counts.by_status}), expected {writers * calls}\n"
        )
    finally:
        with psycopg.connect(f"{pg_base}/{PG_DB}", autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE')


def run(backend: str, n: int, per: int, samples: int) -> tuple[list[Row], dict[str, float]]:
    layout = Layout(n, per, _now_us())
    space: dict[str, float] = {}
    with STORES[backend](layout, space) as store:
        prime(store, layout)
        verify(store, layout)
        say(f"{backend}: sample verified through the public API; timing")
        rows = measure(store, layout, samples, seed=n, space=space)
    return rows, space


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=sorted(STORES), required=True)
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--messages-per", type=int, default=10)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument(
        "--writers",
        type=int,
        default=0,
        help="postgres only: instead, N processes start + append in one tenant",
    )
    parser.add_argument("--calls", type=int, default=300, help="per writer (--writers)")
    parser.add_argument(
        "--pg-url",
        default=PG_BASE,
        help=f"postgres only: the server, without a database (default {PG_BASE}); "
        f"the runs use its database {PG_DB}",
    )
    parser.add_argument(
        "--sqlite-cache-size",
        type=int,
        default=None,
        help="sqlite only: the store's ?cache_size= (pages, or KiB when negative; "
        "default SQLite's 2 MB)",
    )
    args = parser.parse_args(argv)
    global pg_base, sqlite_cache_size
    sqlite_cache_size = args.sqlite_cache_size
    pg_base = args.pg_url.rstrip("/")
    if not pg_base.startswith(("postgresql://", "postgres://")) or "/" in pg_base.split("://")[1]:
        parser.error("--pg-url is postgresql://user@host:port, without a database")
    if args.writers:
        if args.backend != "postgres" or not 1 <= args.writers <= 16:
            parser.error("--writers is 1..16 and for --backend postgres")
        contention(args.writers, args.calls)
        return 0
    if args.conversations < 3 * DUE_ALL or args.small < 3 * DUE_ALL or args.messages_per < 1:
        parser.error(f"--conversations and --small must be >= {3 * DUE_ALL}, --messages-per >= 1")
    if not 20 <= args.samples <= 100_000:
        parser.error("--samples must be 20..100000")
    results = []
    for n in (args.small, args.conversations):
        results.append(run(args.backend, n, args.messages_per, args.samples))
    (small, small_space), (big, big_space) = results
    out = sys.stdout
    out.write(
        f"\n## {args.backend}: {args.small:,} vs {args.conversations:,} conversations, "
        f"{args.messages_per} messages each (p50 / p99 µs, {args.samples} samples)\n\n"
    )
    out.write(f"| operation | {args.small:,} p50 | p99 | {args.conversations:,} p50 | p99 "
              "| ratio p50 | ratio p99 |\n|---|---:|---:|---:|---:|---:|---:|\n")  # fmt: skip
    for a, b in zip(small, big, strict=True):
        out.write(f"| {a.op} | {a.p50:,.0f} | {a.p99:,.0f} | {b.p50:,.0f} | {b.p99:,.0f} "
                  f"| {b.p50 / a.p50:.2f}× | {b.p99 / a.p99:.2f}× |\n")  # fmt: skip
    out.write(f"\n| measure | {args.small:,} | {args.conversations:,} |\n|---|---:|---:|\n")
    for name, value in big_space.items():
        out.write(f"| {name} | {small_space.get(name, 0):,.1f} | {value:,.1f} |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
