"""PostgreSQL-only checks: equivalence with the memory backend, migrations, NOTIFY, outages.

Tests against the shared server use their own schema and drop it afterwards; the outage test
starts its own cluster with ``initdb``/``pg_ctl`` on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import threadkeep
from threadkeep import BackendUnavailable
from threadkeep._rules import ops
from threadkeep._rules.retention import RetentionUs
from threadkeep._url import StoreURL
from threadkeep.backends.memory import MemoryBackend

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

SHARED = "postgresql://postgres@127.0.0.1:5432/test"


def _require_shared() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return
    except OSError as exc:
        reason = f"postgresql not reachable at 127.0.0.1:5432 ({type(exc).__name__})"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _drop(schema: str) -> None:
    with psycopg.connect(SHARED, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def schema() -> Iterator[str]:
    _require_shared()
    name = f"tk_test_{uuid.uuid4().hex[:12]}"
    yield name
    _drop(name)


def _pg(schema: str) -> Any:
    from threadkeep.backends.postgres.sync import PostgresBackend

    return PostgresBackend(StoreURL.parse(f"{SHARED}?schema={schema}"))


# ---- same answers as the reference backend ----------------------------------------------

ON_MESSAGE = {"new": "active", "active": "active", "idle": "active"}
OPEN = ("new", "active", "idle")


def _row(i: int, rnd: random.Random, now: int) -> ops.ConvRow:
    ret = RetentionUs(
        ttl_us=rnd.choice([None, 5_000, 50_000]),
        idle_after_us=rnd.choice([1_000, 20_000]),
        window=rnd.choice([1, 2, 5]),
        max_messages=rnd.choice([None, 3]),
    )
    return ops.ConvRow(
        id=f"c{i:04d}",
        tenant=rnd.choice(["t1", "t2"]),
        contact_id=rnd.choice(["a", "b", "c"]),
        agent_id=rnd.choice([None, "bot"]),
        channel=None,
        status="new",
        stage=None,
        metadata_json="{}",
        created_us=now,
        activity_us=now,
        expires_us=ret.expires_at(now),
        idle_us=ret.idle_at(now),
        message_count=0,
        last_seq=0,
        state_version=0,
        retention=ret,
    )


def _random_op(rnd: random.Random, now: int, ids: list[str], n: int) -> tuple[str, Any]:
    cid = rnd.choice(ids) if ids and rnd.random() < 0.95 else "missing"
    tenant = rnd.choice([None, None, "t1", "t2"])
    kind = rnd.choice(
        [
            "create",
            "append",
            "append",
            "append",
            "read",
            "update",
            "state",
            "load",
            "list",
            "counts",
            "delete",
            "delete_contact",
            "sweep",
            "events",
            "lease",
            "release",
            "remember",
            "recall",
            "get",
            "find_open",
        ]
    )
    keep = 12
    if kind == "create" or not ids:
        return "create", ops.StartOp(_row(n, rnd, now), rnd.random() < 0.3, OPEN, keep)
    if kind == "append":
        return kind, ops.AppendOp(
            cid,
            tenant,
            now,
            rnd.choice(["user", "bot"]),
            f"m{rnd.randrange(99)}",
            "{}",
            rnd.choice([None, None, "k1", "k2"]),
            ON_MESSAGE,
            rnd.choice([None, None, 1, 2]),
            keep,
        )
    if kind == "read":
        return kind, ops.ReadOp(
            cid,
            tenant,
            now,
            rnd.random() < 0.3,
            rnd.choice([None, 1, 3]),
            rnd.choice([None, 1, 2]),
            rnd.choice([1, 10]),
        )
    if kind == "update":
        field = rnd.choice(["status", "stage"])
        value = (
            rnd.choice(["closed", "active", "idle"])
            if field == "status"
            else rnd.choice([None, "s1", "s2"])
        )
        return kind, ops.UpdateOp(cid, tenant, now, field, value, OPEN, keep)
    if kind == "state":
        return kind, ops.SaveStateOp(
            cid,
            tenant,
            now,
            f'{{"v":{rnd.randrange(9)}}}',
            rnd.choice([None, 0, 1, 2]),
            rnd.choice([None, None, 1, 2]),
            2,
            keep,
        )
    if kind == "load":
        return kind, ops.LoadStateOp(cid, tenant, now, rnd.choice([None, 1, 2, 3]))
    if kind == "list":
        return kind, ops.ListOp(
            rnd.choice(["t1", "t2"]),
            now,
            rnd.choice([None, "new", "active"]),
            rnd.choice([None, "s1"]),
            rnd.choice([None, "bot"]),
            rnd.choice([None, "a"]),
            rnd.choice([1, 3, 50]),
            rnd.choice([None, (now - 3_000, "c0005")]),
        )
    if kind == "counts":
        return kind, ops.CountsOp(rnd.choice(["t1", "t2"]), now)
    if kind == "delete":
        return kind, ops.DeleteOp(cid, tenant, now, keep)
    if kind == "delete_contact":
        return kind, ops.DeleteContactOp(rnd.choice(["t1", "t2"]), rnd.choice("abc"), now, keep)
    if kind == "sweep":
        return kind, ops.SweepOp(now, rnd.random() < 0.3, "idle", ("new", "active"), 2, keep)
    if kind == "events":
        return kind, ops.EventsOp(
            rnd.choice([None, "t1"]), rnd.choice([None, "0", "3", "20", "40"]), 5
        )
    if kind == "lease":
        return kind, ops.LeaseOp(cid, tenant, now, now + rnd.choice([500, 5_000]))
    if kind == "release":
        return kind, ops.ReleaseOp(cid, rnd.choice([1, 2]))
    if kind == "remember":
        return kind, ops.RememberOp(
            "t1",
            rnd.choice("ab"),
            rnd.choice(["x", "y"]),
            '"v"',
            "short",
            now,
            now + rnd.choice([1_000, 30_000]),
        )
    if kind == "recall":
        return kind, ops.RecallOp("t1", rnd.choice("ab"), rnd.choice([None, "x"]), now)
    if kind == "get":
        return kind, ops.GetOp(cid, tenant, now)
    return kind, ops.FindOpenOp(rnd.choice(["t1", "t2"]), rnd.choice("abc"), OPEN, now)


_METHOD = {
    "create": "create",
    "append": "append",
    "read": "read_messages",
    "update": "update",
    "state": "save_state",
    "load": "load_state",
    "list": "list",
    "counts": "counts",
    "delete": "delete",
    "delete_contact": "delete_contact",
    "sweep": "sweep",
    "lease": "acquire_lease",
    "release": "release_lease",
    "remember": "remember",
    "recall": "recall",
    "get": "get",
    "find_open": "find_open",
}


@pytest.mark.parametrize("seed", range(12))
def test_same_answers_as_memory(schema: str, seed: int) -> None:
    rnd = random.Random(seed)
    mem, pg = MemoryBackend(), _pg(schema)
    try:
        now = 1_700_000_000_000_000
        ids: list[str] = []
        for n in range(400):
            now += rnd.choice([0, 100, 1_000, 7_000])
            kind, op = _random_op(rnd, now, ids, n)
            if kind == "events":
                want, got = mem.read_events(op, 0), pg.read_events(op, 0)
                if op.after is None and want is None:
                    # after=None means "from the oldest retained event" (the Store's
                    # contract); the memory backend answers None once its log was trimmed.
                    want = mem.read_events(ops.EventsOp(op.tenant, str(mem._trimmed), 5), 0)
            else:
                want = getattr(mem, _METHOD[kind])(op)
                got = getattr(pg, _METHOD[kind])(op)
            assert got == want, (n, kind, op)
            if kind == "create":
                ids.append(op.row.id)
    finally:
        pg.close()


# ---- migrations -------------------------------------------------------------------------


def _open_and_close(url: str, barrier: Any) -> None:
    barrier.wait()
    threadkeep.open(url).close()


def test_concurrent_open_migrates_once(schema: str) -> None:
    url = f"{SHARED}?schema={schema}"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_open_and_close, args=(url, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    from threadkeep.backends.postgres._schema import MIGRATIONS

    with psycopg.connect(SHARED) as conn:
        rows = conn.execute(f'SELECT version FROM "{schema}".schema_version ORDER BY 1').fetchall()
    assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))


# ---- events wake on NOTIFY --------------------------------------------------------------


def test_events_wait_wakes_on_notify(schema: str) -> None:
    store = threadkeep.open(f"{SHARED}?schema={schema}")
    try:
        conv = store.start(contact_id="c1")
        last = [e.id for e in store.events(timeout=0)][-1]
        timer = threading.Timer(0.3, lambda: store.append(conv.id, "user", "hi"))
        timer.start()
        got = next(store.events(after=last, timeout=30))
        timer.join()
        assert got.kind == "message.appended"
    finally:
        store.close()


def test_async_store_round_trip(schema: str) -> None:
    async def main() -> None:
        store = await threadkeep.open_async(f"{SHARED}?schema={schema}")
        try:
            conv = await store.start(contact_id="c1")
            await store.append(conv.id, "user", "hello")
            msgs = await store.messages(conv.id)
            assert [m.content for m in msgs] == ["hello"]
            last = [e.id async for e in store.events(timeout=0)][-1]

            async def later() -> None:
                await asyncio.sleep(0.3)
                await store.append(conv.id, "user", "again")

            task = asyncio.create_task(later())
            kinds = []
            async for event in store.events(after=last, timeout=30):
                kinds.append(event.kind)
                break
            await task
            assert kinds == ["message.appended"]
        finally:
            await store.aclose()

    asyncio.run(main())


# ---- outage: our own cluster, stopped and started again ---------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.skip(f"{name} not found under /usr/lib/postgresql/*/bin")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Cluster:
    """A throwaway PostgreSQL cluster in a temp dir, run as ``postgres`` when we are root."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                pytest.skip("running as root without runuser; initdb refuses root")
            self.as_user = [runuser, "-u", "postgres", "--"]
            shutil.chown(root, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-w",
            "start",
            "-l",
            str(self.data / "log"),
        )

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


def test_outage_unavailable_then_recovers() -> None:
    with tempfile.TemporaryDirectory(prefix="tk-pg-") as tmp:
        os.chmod(tmp, 0o755)
        cluster = _Cluster(Path(tmp))
        cluster.start()
        try:
            url = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres?timeout=2&retries=2"
            store = threadkeep.open(url)
            conv = store.start(contact_id="c1")
            acked = []
            for i in range(20):
                acked.append(store.append(conv.id, "user", f"m{i}").seq)
            cluster.stop()
            began = time.monotonic()
            with pytest.raises(BackendUnavailable) as err:
                store.append(conv.id, "user", "during outage")
            elapsed = time.monotonic() - began
            assert f"127.0.0.1:{cluster.port}" in str(err.value)
            assert elapsed < 2 + 3  # the configured timeout plus connect slack
            cluster.start()
            for i in range(20, 30):  # the pool recovers by itself
                acked.append(store.append(conv.id, "user", f"m{i}").seq)
            kept = [m.seq for m in store.messages(conv.id, limit=1000)]
            assert set(acked) <= set(kept)
            store.close()
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                cluster.stop()
