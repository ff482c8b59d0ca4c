"""The HTTP service under load (issue 11, item 3): throughput, latency, memory, followers.

    python -m bench.load --backend redis [--sessions 200 --seconds 60 --followers 1000]

Loopback only, on a store of its own (``bench.soak``'s backends: a private Redis with AOF
``always``, a private PostgreSQL cluster, or a SQLite file, under a temporary directory that is
removed at the end), through ``threadkeep serve --workers N`` with the echo bot. Two API keys:
the sessions and the *watchers* use tenant ``load``, the idle followers tenant ``quiet``.

1. **Overhead**: one connection, one chat turn after another (and ``/healthz`` beside it).
2. **Load**: N sessions, each on a keep-alive connection of its own, alternate a chat turn
   (``POST /v1/chat`` with an ``Idempotency-Key``) and an append, pausing a random
   0..2×``--think`` seconds between requests. Throughput, p50/p99/p999, errors, and from the
   store afterwards every acknowledged message at its seq, once (``lost``, ``duplicated``, …).
   Beside the sessions, one connection probes ``GET /readyz`` every 0.25 s (its latency under
   load: an orchestrator's readiness check waits in the same queue as the requests). On
   PostgreSQL, ``pg_transactions``: the database's commits, rollbacks and deadlocks
   (``pg_stat_database``) over the phase, and commits per request: retried or re-run
   statements under the load would show there (in-process a session's request is 7.5).
3. **Followers**: F SSE streams of tenant ``quiet`` (dashboards of a quiet tenant) are opened;
   the workers' RSS growth per stream, their CPU time over an idle interval (beside the same
   interval without streams), and the store connections the server holds. Then the load again,
   with the streams open and W watchers of tenant ``load``, each of which must receive every
   message of the load.

It prints one JSON report (and a Markdown table on stderr); exit status 1 if an error or a
lost, duplicated or unseen message was counted, or a worker process was lost.

**A lost worker.** uvicorn's supervisor kills a worker that does not answer its health ping in
time (``threadkeep serve``: 30 s, uvicorn's default 5 s) and starts another, logging both only
at INFO (the bench serves at WARNING). The bench watches the workers' process ids all along: a
worker that is gone is reported (``workers_lost``: when, the load average then, what ``/proc``
last showed of it, its replacement), its memory and CPU are left out instead of failing the
run, and the server's log is kept (``server_log``) instead of going with the temporary
directory. ``--kill-worker`` kills one worker (SIGKILL) in the middle of the load phase, to see
that path on purpose.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import threadkeep
from bench.soak import (
    BACKENDS,
    Acked,
    Backend,
    PostgresBackend,
    RedisBackend,
    SqliteBackend,
    Tally,
    check,
    free_port,
    serving,
)

LOAD_KEY, QUIET_KEY = "load-key", "quiet-key"
API_KEYS = f"load:{LOAD_KEY},quiet:{QUIET_KEY}"
TICK = os.sysconf("SC_CLK_TCK")
WATCH = 0.5  # seconds between two looks at the workers (``Servers.watch``)
STARTED = time.monotonic()


# ---- a small HTTP/1.1 client: httpx costs more CPU per request than the server under test ----


class Conn:
    """One keep-alive connection to the server."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.auth = f"Authorization: Bearer {key}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, key: str | None = None
    ) -> tuple[int, bytes]:
        """Send one request; return the status and the body (reconnecting if needed)."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.auth}"
        if key is not None:
            head += f"Idempotency-Key: {key}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        try:
            self.writer.write(head.encode() + b"\r\n" + payload)
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("closed by the server")
            length = 0
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            return int(status_line.split()[1]), await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def open_stream(
    port: int, key: str, last_id: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open ``GET /v1/events`` (resuming after ``last_id``) and read up to ``retry:``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    resume = "" if last_id is None else f"Last-Event-ID: {last_id}\r\n"
    writer.write(
        f"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Accept: text/event-stream\r\n{resume}\r\n".encode()
    )
    status = await reader.readline()
    if b" 200 " not in status:
        writer.close()
        raise RuntimeError(f"events stream refused: {status!r}")
    while await reader.readline() not in (b"\r\n", b""):
        pass
    while not (await reader.readline()).startswith(b"retry:"):
        pass
    return reader, writer


@dataclass
class Watcher:
    """A stream of the load's tenant that must see every message; it resumes as a browser does."""

    seen: set[tuple[str, int]] = field(default_factory=set)
    last_id: str | None = None
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)

    async def watch(self, port: int) -> None:
        reader, writer = await open_stream(port, LOAD_KEY)
        while True:
            try:
                await self.follow(reader)
            finally:
                writer.close()
            self.reconnects += 1
            reader, writer = await open_stream(port, LOAD_KEY, self.last_id)

    async def follow(self, reader: asyncio.StreamReader) -> None:
        """Take what arrives until the stream ends, a whole SSE message at a time.

        (Read line by line, 5 watchers cost this process, which also times the sessions, more
        CPU per request than the server spent sending to them.)
        """
        rest = b""
        while chunk := await reader.read(1 << 16):
            *messages, rest = (rest + chunk).split(b"\n\n")
            for message in messages:
                self.take(message)

    def take(self, message: bytes) -> None:
        """One SSE message (its lines, without the blank line that ends it)."""
        error = False
        for line in message.split(b"\n"):
            if line.startswith(b"id: "):
                self.last_id = line[4:].strip().decode()
            elif line.startswith(b"event: error"):
                error = True
            elif line.startswith(b"data: "):
                if error:
                    self.errors.append(line.decode()[:200])
                    continue
                event = json.loads(line[6:])
                if event["kind"] == "message.appended":
                    self.seen.add((event["conversation_id"], event["data"]["seq"]))


# ---- measures ---------------------------------------------------------------------------------


def percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def latency(samples: list[float]) -> dict[str, float]:
    """p50/p99/p999 in ms."""
    ordered = sorted(samples)
    return {
        f"p{name}_ms": round(percentile(ordered, p) * 1e3, 2)
        for name, p in (("50", 0.5), ("99", 0.99), ("999", 0.999))
    }


def workers_of(server: subprocess.Popen[bytes]) -> list[int]:
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(server.pid)],
                         capture_output=True, text=True).stdout  # fmt: skip
    pids = [int(line.split()[0]) for line in out.splitlines() if "spawn_main" in line]
    return pids or [server.pid]


def status_kib(pid: int, field_name: str) -> int | None:
    """A ``/proc/<pid>/status`` field in KiB; None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def proc_state(pid: int) -> dict[str, Any] | None:
    """What ``/proc`` shows of a process now (None: gone): state, CPU s, threads, switches."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "state": stat[0],
        "cpu_s": round((int(stat[11]) + int(stat[12])) / TICK, 2),
        "threads": int(stat[17]),
        "rss_mib": round(int(fields.get("VmRSS", "0 kB").split()[0]) / 1024, 1),
        "ctxt_switches": [
            int(fields.get("voluntary_ctxt_switches", "0")),
            int(fields.get("nonvoluntary_ctxt_switches", "0")),
        ],
    }


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):  # a PostgreSQL backend that just ended
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def store_connections(backend: Backend) -> dict[str, int] | None:
    """The connections the store's server holds (every client but this one)."""
    if hasattr(backend, "port") and "redis" in backend.url:
        import redis

        with redis.Redis(port=backend.port) as client:
            clients = [c for c in client.client_list() if c.get("cmd") != "client|list"]
            return {
                "total": len(clients),
                "in_xread": sum(c.get("cmd") == "xread" for c in clients),
            }
    if hasattr(backend, "port"):
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=backend.port, user="postgres") as conn:
            rows = conn.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                " GROUP BY 1"
            ).fetchall()
            return {"total": sum(n for _, n in rows), **{name or "?": n for name, n in rows}}
    return None


PG_COUNTERS = ("xact_commit", "xact_rollback", "deadlocks")
#: a session reports its transactions to pg_stat_database when it goes idle, at most once a
#: second: the counters are read this long after the load stops
PG_REPORT_DELAY = 1.5


def pg_counters(url: str) -> dict[str, int]:
    """The transaction counters of ``url``'s database (``pg_stat_database``)."""
    import psycopg

    with psycopg.connect(url.split("?", 1)[0], autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, deadlocks FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return dict(zip(PG_COUNTERS, (int(n) for n in row), strict=True))


async def event_reads(port: int, workers: list[int]) -> int | None:
    """The workers' reads of the event log so far (``threadkeep_store_operations_total``,
    ``op="read_events"``: each worker's reader of the log and any stream that read the store).

    Each worker answers ``/metrics`` for itself, so this asks on new connections until every
    worker answered (None: one never did, e.g. a lost worker).
    """
    wanted = {str(pid) for pid in workers}
    seen: dict[str, int] = {}
    for _ in range(50 * len(wanted)):
        conn = Conn(port, LOAD_KEY)
        try:
            status, body = await conn.request("GET", "/metrics")
        finally:
            conn.close()
        counts: dict[str, int] = {}
        for line in body.decode().splitlines():
            if line.startswith("threadkeep_store_operations_total{") and 'op="read_events"' in line:
                worker = line.split('worker="', 1)[1].split('"', 1)[0]
                counts[worker] = counts.get(worker, 0) + int(float(line.rsplit(" ", 1)[1]))
        seen.update(counts)
        if status == 200 and wanted <= set(seen):
            return sum(seen[w] for w in wanted)
    return None


async def last_event_number(port: int) -> int | None:
    """The number of the load tenant's last event (``GET /v1/events?follow=false``; ids are
    ``n`` on PostgreSQL and SQLite, ``n-0`` on Redis), None when it has none.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            "GET /v1/events?follow=false HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {LOAD_KEY}\r\nConnection: close\r\n\r\n".encode()
        )
        raw = await asyncio.wait_for(reader.read(), 30)  # chunked, to the end: read to EOF
    finally:
        writer.close()
    ids = [line[4:] for line in raw.decode().splitlines() if line.startswith("id: ")]
    return int(ids[-1].split("-")[0]) if raw.startswith(b"HTTP/1.1 200") and ids else None


# ---- the phases -------------------------------------------------------------------------------


@dataclass
class Servers:
    """The processes whose CPU time a phase counts: the workers, the store's server, this one.

    ``watch()`` looks at the workers every ``WATCH`` seconds and records any that is gone
    (``lost``): a lost worker's CPU and memory are no longer counted, and the run says so.
    """

    workers: list[int]
    backend: Backend
    server: subprocess.Popen[bytes] | None = None
    lost: list[dict[str, Any]] = field(default_factory=list)
    _last: dict[int, dict[str, Any] | None] = field(default_factory=dict)

    def look(self) -> None:
        """Note what each worker shows now; record a worker that is gone (once)."""
        gone = {entry["pid"] for entry in self.lost}
        for pid in self.workers:
            if pid in gone:
                continue
            state = proc_state(pid)
            if state is not None:
                self._last[pid] = state
                continue
            now = set(workers_of(self.server)) if self.server is not None else set()
            self.lost.append(
                {
                    "pid": pid,
                    "noticed_at_s": round(time.monotonic() - STARTED, 1),
                    "loadavg": [round(x, 2) for x in os.getloadavg()],
                    "last_seen": self._last.get(pid),
                    "replaced_by": sorted(now - set(self.workers)),
                }
            )

    async def watch(self) -> None:
        """``look()`` every ``WATCH`` seconds until cancelled."""
        while True:
            self.look()
            await asyncio.sleep(WATCH)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far, by process group (the store's: its processes of this moment)."""
        return {
            "workers": cpu_seconds(self.workers),
            "store": cpu_seconds(store_pids(self.backend)),
            "client": time.process_time(),
        }


def store_pids(backend: Backend) -> list[int]:
    """The store server's processes (none for SQLite: it runs inside the workers)."""
    if isinstance(backend, RedisBackend):
        return [backend.proc.pid] if backend.proc is not None else []
    pidfile = getattr(backend, "dir", Path("/nonexistent")) / "postmaster.pid"
    if not pidfile.exists():
        return []
    master = int(pidfile.read_text().split()[0])
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)],
                         capture_output=True, text=True).stdout  # fmt: skip
    return [master, *(int(p) for p in out.split())]


@dataclass
class Phase:
    samples: dict[str, list[float]] = field(
        default_factory=lambda: {"chat": [], "append": [], "readyz": []}
    )
    errors: dict[str, int] = field(default_factory=dict)
    tally: Tally = field(default_factory=Tally)
    cpu: dict[str, float | None] = field(default_factory=dict)
    #: PostgreSQL: pg_stat_database's counters over the phase (see ``pg_counters``)
    store_counts: dict[str, int] = field(default_factory=dict)
    #: the workers' reads of the event log and the events written over the phase
    event_reads: dict[str, int] = field(default_factory=dict)

    examples: dict[str, str] = field(default_factory=dict)

    def error(self, what: str, body: bytes = b"") -> None:
        self.errors[what] = self.errors.get(what, 0) + 1
        self.examples.setdefault(what, body[:300].decode(errors="replace"))


async def overhead(port: int, turns: int) -> dict[str, Any]:
    """Chat turns one after another on one connection (echo bot), beside ``/healthz``."""
    conn = Conn(port, LOAD_KEY)
    chat: list[float] = []
    health: list[float] = []
    status, body = await conn.request("POST", "/v1/chat", {"message": "hi", "contact_id": "one"})
    conversation = json.loads(body)["conversation_id"]
    for i in range(turns):
        t0 = time.perf_counter()
        status, body = await conn.request(
            "POST", "/v1/chat", {"message": f"m{i}", "conversation_id": conversation}
        )
        chat.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"chat turn failed: {status} {body[:200]!r}")
        t0 = time.perf_counter()
        await conn.request("GET", "/healthz")
        health.append(time.perf_counter() - t0)
    conn.close()
    return {"turns": turns, "chat_turn": latency(chat), "healthz": latency(health)}


async def session(
    port: int, n: int, prefix: str, stop_at: float, think: float, phase: Phase
) -> None:
    conn = Conn(port, LOAD_KEY)
    contact = f"{prefix}-{n}"
    conversation: str | None = None
    k = 0
    await asyncio.sleep(random.uniform(0, 2 * think))
    while time.monotonic() < stop_at:
        key = f"{prefix}-{n}-{k}"
        chat = conversation is None or k % 2 == 0
        if chat:
            path, body = "/v1/chat", {"message": key, "contact_id": contact}
        else:
            path = f"/v1/conversations/{conversation}/messages"
            body = {"role": "user", "content": key}
        t0 = time.perf_counter()
        try:
            status, raw = await conn.request("POST", path, body, key)
        except (OSError, asyncio.IncompleteReadError) as exc:
            phase.error(type(exc).__name__)
        else:
            took = time.perf_counter() - t0
            data = json.loads(raw) if status in (200, 201) else {}
            if data.get("persisted") is False:
                phase.error("persisted false")
            elif data:
                phase.samples["chat" if chat else "append"].append(took)
                if chat:
                    conversation = str(data["conversation_id"])
                acked = Acked(key, str(conversation), data["message_seq" if chat else "seq"])
                phase.tally.acked[n].append(acked)
            else:
                phase.error(f"HTTP {status}", raw)
        k += 1
        await asyncio.sleep(random.uniform(0, 2 * think))
    conn.close()


async def probe(port: int, stop_at: float, phase: Phase) -> None:
    """``GET /readyz`` every 0.25 s during the load, as an orchestrator would: its latency."""
    conn = Conn(port, LOAD_KEY)
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        try:
            status, raw = await conn.request("GET", "/readyz")
        except (OSError, asyncio.IncompleteReadError) as exc:
            phase.error(f"readyz {type(exc).__name__}")
        else:
            phase.samples["readyz"].append(time.perf_counter() - t0)
            if status != 200:
                phase.error(f"readyz HTTP {status}", raw)
        await asyncio.sleep(0.25)
    conn.close()


async def load(
    port: int, args: argparse.Namespace, prefix: str, servers: Servers
) -> tuple[Phase, float]:
    phase = Phase()
    postgres = isinstance(servers.backend, PostgresBackend)
    counted = pg_counters(servers.backend.url) if postgres else {}
    reads_before = await event_reads(port, servers.workers)
    number_before = await last_event_number(port)
    before = servers.cpu()
    lost_before = len(servers.lost)
    began = time.monotonic()
    stop_at = began + args.seconds
    pausing = []
    if getattr(args, "kill_worker", False) and prefix == "calm":
        pausing.append(kill_worker(servers.workers[0], args.seconds / 2))
    await asyncio.gather(
        probe(port, stop_at, phase),
        *(session(port, n, prefix, stop_at, args.think, phase) for n in range(args.sessions)),
        *pausing,
    )
    servers.look()
    phase.cpu = {k: v - before[k] for k, v in servers.cpu().items()}
    if len(servers.lost) > lost_before:  # its CPU left the sum, its replacement's never joined
        phase.cpu["workers"] = None
    took = time.monotonic() - began
    await asyncio.sleep(0.5)  # the readers take the last events
    reads_after = await event_reads(port, servers.workers)
    number_after = await last_event_number(port)
    if None not in (reads_before, reads_after, number_before, number_after):
        phase.event_reads = {
            "reads": reads_after - reads_before,  # type: ignore[operator]
            "events_written": number_after - number_before,  # type: ignore[operator]
        }
    if postgres:
        await asyncio.sleep(PG_REPORT_DELAY)
        now = pg_counters(servers.backend.url)
        phase.store_counts = {k: now[k] - counted[k] for k in PG_COUNTERS}
    return phase, took


async def kill_worker(pid: int, after: float) -> None:
    """Kill worker ``pid`` (SIGKILL) ``after`` seconds from now."""
    await asyncio.sleep(after)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def summary(phase: Phase, took: float, url: str) -> dict[str, Any]:
    every = phase.samples["chat"] + phase.samples["append"]
    checked = check(url, phase.tally)
    return {
        "seconds": round(took, 1),
        "requests_ok": len(every),
        "throughput_rps": round(len(every) / took, 1),
        "cpu_ms_per_request": {
            k: None if v is None else round(v * 1e3 / max(1, len(every)), 2)
            for k, v in phase.cpu.items()
        },
        "all": latency(every),
        "chat_turn": latency(phase.samples["chat"]),
        "append": latency(phase.samples["append"]),
        "readyz_probes": len(phase.samples["readyz"]),
        "readyz_probe": latency(phase.samples["readyz"]),
        "errors": sum(phase.errors.values()),
        "error_kinds": phase.errors,
        "error_examples": phase.examples,
        **{k: checked[k] for k in ("acknowledged", "lost", "duplicated", "out_of_order")},
        "not_gap_free": checked["not_gap_free"],
        **({"event_reads": {
            **phase.event_reads,
            "per_request": round(phase.event_reads["reads"] / max(1, len(every)), 3),
            "per_event_written": round(
                phase.event_reads["reads"] / max(1, phase.event_reads["events_written"]), 3
            ),
        }} if phase.event_reads else {}),
        **({"pg_transactions": {
            **phase.store_counts,
            "commits_per_request": round(phase.store_counts["xact_commit"] / max(1, len(every)), 2),
        }} if phase.store_counts else {}),
    }  # fmt: skip


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def memory(pids: list[int]) -> dict[str, Any]:
    """Each worker's RSS and peak RSS (MiB); None for a worker that is gone (``workers_lost``)."""
    return {
        "rss_mib": [_mib(status_kib(p, "VmRSS")) for p in pids],
        "peak_rss_mib": [_mib(status_kib(p, "VmHWM")) for p in pids],
    }


def rss_kib(pids: list[int]) -> int:
    """The workers' RSS in KiB, those still there."""
    return sum(status_kib(p, "VmRSS") or 0 for p in pids)


async def idle_cpu(servers: Servers, seconds: float) -> dict[str, float]:
    """CPU seconds the workers and the store's server spend over an idle interval."""
    before = servers.cpu()
    await asyncio.sleep(seconds)
    after = servers.cpu()
    return {k: round(after[k] - before[k], 3) for k in ("workers", "store")}


async def followers_phase(
    port: int, args: argparse.Namespace, backend: Backend, servers: Servers
) -> dict[str, Any]:
    pids = servers.workers
    idle = args.idle
    report: dict[str, Any] = {"followers": args.followers, "idle_interval_s": idle}
    await asyncio.sleep(1.0)
    report["cpu_s_idle_without_followers"] = await idle_cpu(servers, idle)
    report["store_connections_without_followers"] = store_connections(backend)
    rss0 = rss_kib(pids)
    opening = asyncio.Semaphore(50)

    refused: list[str] = []

    async def one() -> asyncio.StreamWriter | None:
        async with opening:
            try:
                return (await open_stream(port, QUIET_KEY))[1]
            except (OSError, RuntimeError, asyncio.IncompleteReadError) as exc:
                refused.append(str(exc))
                return None

    t0 = time.monotonic()
    opened = await asyncio.gather(*(one() for _ in range(args.followers)))
    streams = [s for s in opened if s is not None]
    report["open_all_s"] = round(time.monotonic() - t0, 2)
    report["followers_refused"] = len(refused)
    report["refusals"] = sorted(set(refused))[:3]
    await asyncio.sleep(2.0)  # let the workers settle
    rss1 = rss_kib(pids)
    report["rss_per_follower_kib"] = round((rss1 - rss0) / max(1, args.followers), 1)
    report["cpu_s_idle_with_followers"] = await idle_cpu(servers, idle)
    report["store_connections_with_followers"] = store_connections(backend)
    report["loadavg"] = [round(x, 2) for x in os.getloadavg()]

    # the load again, the streams open, and watchers that must see every message
    watchers = [Watcher() for _ in range(args.watchers)]
    tasks = [asyncio.create_task(w.watch(port)) for w in watchers]
    await asyncio.sleep(1.0)
    phase, took = await load(port, args, "busy", servers)
    report["store_connections_under_load"] = store_connections(backend)
    await asyncio.sleep(2.0)  # the last events reach the watchers
    report["load"] = summary(phase, took, backend.url)
    expected = expected_messages(backend.url, phase.tally)
    report["watchers"] = args.watchers
    report["messages_of_the_load"] = len(expected)
    report["unseen_by_a_watcher"] = sum(len(expected - w.seen) for w in watchers)
    report["watcher_reconnects"] = sum(w.reconnects for w in watchers)
    report["watcher_errors"] = sorted({e for w in watchers for e in w.errors})[:3]
    for task in tasks:
        task.cancel()
    for writer in streams:
        writer.close()
    return report


def expected_messages(url: str, tally: Tally) -> set[tuple[str, int]]:
    """Every message of the conversations the load touched: (conversation, seq)."""
    conversations = {a.conversation_id for acked in tally.acked.values() for a in acked}
    with threadkeep.open(url) as store:
        return {(cid, m.seq) for cid in conversations for m in store.messages(cid)}


async def main_async(port: int, args: argparse.Namespace, backend: Backend,
                     servers: Servers) -> dict[str, Any]:  # fmt: skip
    pids = servers.workers
    report: dict[str, Any] = {"loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    watching = asyncio.create_task(servers.watch())
    try:
        report["overhead"] = await overhead(port, args.turns)
        phase, took = await load(port, args, "calm", servers)
        report["load"] = summary(phase, took, backend.url)
        report["load"]["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        report["memory_after_load"] = memory(pids)
        if args.followers or args.watchers:
            report["with_followers"] = await followers_phase(port, args, backend, servers)
            report["memory_after_followers"] = memory(pids)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        servers.look()
        report["workers_lost"] = servers.lost
    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="threadkeep-load-"))
    backend = BACKENDS[args.backend](work)
    if isinstance(backend, RedisBackend):
        backend.appendfsync = args.redis_fsync
    if isinstance(backend, SqliteBackend):
        backend.url = f"sqlite:///{backend.path}"  # the default busy timeout, not the soak's 2 s
    try:
        backend.start()
        port = free_port()
        env = {  # the service's defaults for the lease and the heartbeat (not the soak's)
            "THREADKEEP_API_KEYS": API_KEYS,
            "THREADKEEP_TURN_LEASE": "30",
            "THREADKEEP_SSE_HEARTBEAT": "15",
        }
        log = work / "server.log"
        with serving(backend.url, port, args.workers, log, **env) as server:
            servers = Servers(workers_of(server), backend, server)
            report = asyncio.run(main_async(port, args, backend, servers))
        if report["workers_lost"]:  # keep the server's log: the temporary directory goes
            kept = Path(tempfile.gettempdir()) / f"threadkeep-load-{os.getpid()}-server.log"
            shutil.copyfile(log, kept)
            report["server_log"] = str(kept)
            report["server_log_tail"] = log.read_text(errors="replace").splitlines()[-20:]
        return {
            "backend": args.backend,
            "workers": args.workers,
            "sessions": args.sessions,
            "think_s": args.think,
            **({"redis_appendfsync": args.redis_fsync} if args.backend == "redis" else {}),
            "cpus": os.cpu_count(),
            **report,
        }
    finally:
        backend.stop()
        shutil.rmtree(work, ignore_errors=True)


def markdown(r: dict[str, Any]) -> str:
    """The report's headline numbers as Markdown table rows."""
    rows = []

    def row(what: str, load: dict[str, Any]) -> None:
        a = load["all"]
        rows.append(
            f"| {r['backend']} | {what} | {load['throughput_rps']} | {a['p50_ms']} | "
            f"{a['p99_ms']} | {a['p999_ms']} | {load['errors']} | {load['lost']} |"
        )

    row(f"{r['sessions']} sessions", r["load"])
    if "with_followers" in r:
        row(f"+ {r['with_followers']['followers']} followers", r["with_followers"]["load"])
    return "\n".join(rows)


MUST_BE_ZERO = ("errors", "lost", "duplicated", "out_of_order", "not_gap_free")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="sqlite")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="of each load phase")
    parser.add_argument("--think", type=float, default=0.25, help="mean pause of a session, s")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--turns", type=int, default=500, help="chat turns at concurrency 1")
    parser.add_argument("--followers", type=int, default=1000, help="idle SSE streams (0: none)")
    parser.add_argument("--watchers", type=int, default=5, help="SSE streams of the load's tenant")
    parser.add_argument("--idle", type=float, default=10.0, help="idle interval for CPU, s")
    parser.add_argument(
        "--redis-fsync", choices=("always", "everysec"), default="everysec",
        help="the private Redis's appendfsync (Redis's default: everysec)",
    )  # fmt: skip
    parser.add_argument(
        "--kill-worker", action="store_true",
        help="kill one worker mid-load (its supervisor replaces it): a lost worker's report",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.kill_worker and args.workers < 2:
        parser.error("--kill-worker needs --workers 2 or more (one worker is the server itself)")
    report = run(args)
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    sys.stderr.write(markdown(report) + "\n")
    loads = [report["load"]] + (
        [report["with_followers"]["load"]] if "with_followers" in report else []
    )
    bad = [f"{k}={ld[k]}" for ld in loads for k in MUST_BE_ZERO if ld[k]]
    for name in ("unseen_by_a_watcher", "followers_refused"):
        if report.get("with_followers", {}).get(name):
            bad.append(name)
    if report["workers_lost"]:
        bad.append(f"workers_lost={len(report['workers_lost'])} (server log: "
                   f"{report.get('server_log')})")  # fmt: skip
    if bad:
        sys.stderr.write(f"load failed: {', '.join(bad)}\n")
    return 1 if bad else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
