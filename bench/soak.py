"""A bounded fault soak of `threadkeep serve` (issue 15, item 1): faults under load lose nothing.

    python -m bench.soak --backend redis --seconds 60 --sessions 200 --workers 4

Loopback only, on servers of its own: a private Redis (AOF ``always``) or PostgreSQL cluster
on free ports, or a SQLite file, all under a temporary directory that is removed at the end.
It runs ``threadkeep serve --workers N`` (echo bot) and N sessions; each alternates a chat turn
(``POST /v1/chat`` with its contact and an ``Idempotency-Key``) and an idempotent append, and
retries a failed request with the same key until it is acknowledged. Meanwhile it SIGKILLs a
worker (twice), and takes the backend away and back: Redis SIGKILLed and started again,
PostgreSQL stopped with ``-m immediate`` and started again, the SQLite file locked for 5 s.

Then it checks the store itself (not the answers): every acknowledged message is there once,
at the seq it was acknowledged with (lost, duplicated), in the order it was acknowledged (out of
order), every conversation is gap-free, and once the turn lease has lapsed no lease is still
held. It prints one JSON report; the exit status is 1 if any count that must be 0 is not.
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
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import threadkeep

LEASE = 5.0  # the soak's turn lease: a killed worker's lease lapses this fast
WORKER_MARK = "spawn_main"  # how uvicorn's worker processes show in ps


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"gave up waiting for {what}")


class Backend:
    """A store of the soak's own; ``take_away()`` and ``bring_back()`` make the outage."""

    url: str

    def start(self) -> None: ...

    def take_away(self) -> None: ...

    def bring_back(self) -> None: ...

    def stop(self) -> None: ...


class SqliteBackend(Backend):
    """A file; the outage is another connection holding it exclusively."""

    def __init__(self, work: Path) -> None:
        self.path = work / "soak.db"
        self.url = f"sqlite:///{self.path}?timeout=2"
        self._lock: sqlite3.Connection | None = None

    def take_away(self) -> None:
        self._lock = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock.execute("BEGIN EXCLUSIVE")

    def bring_back(self) -> None:
        if self._lock is not None:
            self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None

    stop = bring_back


class RedisBackend(Backend):
    """A private redis-server, AOF fsync always; the outage is SIGKILL, then a restart."""

    appendfsync = "always"  # every acknowledged write is on disk: a SIGKILL loses nothing

    def __init__(self, work: Path) -> None:
        self.dir = work / "redis"
        self.dir.mkdir()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0?prefix=soak"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir"]
        args += [
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_for(self._answers, 30, "redis")

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), 1):
            return True

    def take_away(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    bring_back = start
    stop = take_away


class PostgresBackend(Backend):
    """A private PostgreSQL cluster; the outage is ``pg_ctl stop -m immediate``, then a start."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "pg"
        self.dir.mkdir()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: its own user owns the cluster
            work.chmod(0o711)
            shutil.chown(self.dir, "postgres")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres?schema=soak"

    def _as_owner(self, *args: str) -> None:
        run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        # No pipes: the server pg_ctl starts would hold them open.
        out = subprocess.DEVNULL
        subprocess.run([*run_as, *args], check=True, stdout=out, stderr=out)

    def start(self) -> None:
        if not (self.dir / "PG_VERSION").exists():
            self._as_owner("initdb", "-D", str(self.dir), "-U", "postgres", "-A", "trust")
        self.bring_back()

    def bring_back(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        log = str(self.dir / "server.log")
        self._as_owner("pg_ctl", "-D", str(self.dir), "-o", options, "-l", log, "-w", "start")

    def take_away(self) -> None:
        self._as_owner("pg_ctl", "-D", str(self.dir), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._as_owner("pg_ctl", "-D", str(self.dir), "-m", "fast", "-w", "stop")


BACKENDS = {"sqlite": SqliteBackend, "redis": RedisBackend, "postgres": PostgresBackend}


@dataclass
class Acked:
    """One acknowledged message of a session."""

    key: str
    conversation_id: str
    seq: int


@dataclass
class Tally:
    requests: int = 0
    failed_attempts: int = 0
    unpersisted: int = 0
    given_up: int = 0
    acked: dict[int, list[Acked]] = field(default_factory=lambda: defaultdict(list))
    timeline: list[tuple[float, str]] = field(default_factory=list)


class Soak:
    def __init__(self, args: argparse.Namespace, backend: Backend, base: str) -> None:
        self.args = args
        self.backend = backend
        self.base = base
        self.tally = Tally()
        self.t0 = time.monotonic()
        self.stop_at = self.t0 + args.seconds
        self.server: subprocess.Popen[bytes] | None = None

    def mark(self, what: str) -> None:
        self.tally.timeline.append((round(time.monotonic() - self.t0, 2), what))

    async def send(
        self, client: httpx.AsyncClient, key: str, path: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Send until acknowledged, always with the same key (give up after ``give_up`` s)."""
        began = time.monotonic()
        attempt = 0
        while time.monotonic() - began < self.args.give_up:
            attempt += 1
            self.tally.requests += 1
            try:
                resp = await client.post(path, json=body, headers={"Idempotency-Key": key})
                if resp.status_code in (200, 201):
                    data: dict[str, Any] = resp.json()
                    if data.get("persisted", True):
                        return data
                    self.tally.unpersisted += 1
            except httpx.HTTPError:
                pass
            self.tally.failed_attempts += 1
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
        self.tally.given_up += 1
        return None

    async def session(self, client: httpx.AsyncClient, n: int) -> None:
        contact = f"soak-contact-{n}"
        conversation: str | None = None
        k = 0
        await asyncio.sleep(random.uniform(0, 0.5))
        while time.monotonic() < self.stop_at:
            key = f"soak-{n}-{k}"
            if conversation is None or k % 2 == 0:
                body = {"message": key, "contact_id": contact}
                data = await self.send(client, key, "/v1/chat", body)
                if data is not None:
                    conversation = str(data["conversation_id"])
                    self.tally.acked[n].append(Acked(key, conversation, data["message_seq"]))
            else:
                path = f"/v1/conversations/{conversation}/messages"
                data = await self.send(client, key, path, {"role": "user", "content": key})
                if data is not None:
                    self.tally.acked[n].append(Acked(key, conversation, data["seq"]))
            k += 1
            await asyncio.sleep(random.uniform(0, 0.2))

    async def readiness(self, client: httpx.AsyncClient, until: float) -> None:
        last: object = None
        while time.monotonic() < until:
            try:
                status: object = (await client.get("/readyz", timeout=5)).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            if status != last:
                self.mark(f"readyz {status}")
                last = status
            await asyncio.sleep(0.25)

    def kill_worker(self) -> None:
        assert self.server is not None
        out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(self.server.pid)],
                             capture_output=True, text=True).stdout  # fmt: skip
        workers = [int(line.split()[0]) for line in out.splitlines() if WORKER_MARK in line]
        if workers:
            os.kill(random.choice(workers), signal.SIGKILL)
            self.mark(f"SIGKILL a worker of {len(workers)}")

    async def faults(self) -> None:
        s = self.args.seconds
        plan = [(0.2 * s, "kill"), (0.4 * s, "away"), (0.4 * s + self.args.outage, "back"),
                (0.7 * s, "kill")]  # fmt: skip
        for at, what in plan:
            await asyncio.sleep(max(0.0, self.t0 + at - time.monotonic()))
            if what == "kill":
                self.kill_worker()
            elif what == "away":
                await asyncio.to_thread(self.backend.take_away)
                self.mark("backend taken away")
            else:
                self.mark("backend back")  # from the start of its restart
                await asyncio.to_thread(self.backend.bring_back)

    async def load(self) -> None:
        limits = httpx.Limits(max_connections=self.args.sessions + 10)
        timeout = httpx.Timeout(15.0)
        async with httpx.AsyncClient(base_url=self.base, limits=limits, timeout=timeout) as client:
            ready = asyncio.create_task(
                self.readiness(client, self.stop_at + self.args.give_up + 5)
            )
            faults = asyncio.create_task(self.faults())
            await asyncio.gather(*(self.session(client, n) for n in range(self.args.sessions)))
            self.mark("load done")
            await faults
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready


def check(url: str, tally: Tally) -> dict[str, Any]:
    """Count lost, duplicated, out-of-order messages, gaps and held leases, from the store."""
    lost = duplicated = out_of_order = gaps = held = 0
    with threadkeep.open(url) as store:
        histories: dict[str, list[Any]] = {}
        for acked in tally.acked.values():
            for a in acked:
                if a.conversation_id not in histories:
                    histories[a.conversation_id] = list(store.messages(a.conversation_id))
        for acked in tally.acked.values():
            last: tuple[str | None, int] = (None, 0)
            for a in acked:
                history = histories[a.conversation_id]
                copies = [m for m in history if m.role == "user" and m.content == a.key]
                if not any(m.seq == a.seq for m in copies):
                    lost += 1
                duplicated += max(0, len(copies) - 1)
                if last[0] == a.conversation_id and a.seq <= last[1]:
                    out_of_order += 1
                last = (a.conversation_id, a.seq)
        for cid, history in histories.items():
            seqs = [m.seq for m in history]
            if seqs != list(range(1, len(seqs) + 1)) or store.get(cid).message_count != len(seqs):
                gaps += 1
            try:
                with store.turn(cid, timeout=0):
                    pass
            except threadkeep.TurnInProgress:
                held += 1
    return {
        "acknowledged": sum(len(a) for a in tally.acked.values()),
        "conversations": len(histories),
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "not_gap_free": gaps,
        "leases_held": held,
    }


def recovery(timeline: list[tuple[float, str]]) -> float | None:
    """Seconds from the backend's restart to /readyz answering 200 again (0: it never failed).

    Only the probes of the outage count: from the backend taken away to the next fault after it
    came back (a worker SIGKILLed later is another story). None: no 200 again in that span.
    """
    away = next((t for t, what in timeline if what == "backend taken away"), None)
    back = next((t for t, what in timeline if what == "backend back"), None)
    if away is None or back is None:
        return None
    after = [t for t, what in timeline if t > back and not what.startswith("readyz")]
    end = after[0] if after else float("inf")
    probes = [(t, what) for t, what in timeline if what.startswith("readyz") and away <= t < end]
    failing = [t for t, what in probes if what != "readyz 200"]
    if not failing:
        return 0.0
    ready = [t for t, what in probes if what == "readyz 200" and t > failing[-1]]
    return round(max(0.0, ready[0] - back), 2) if ready else None


@contextlib.contextmanager
def serving(
    url: str, port: int, workers: int, log: Path, **settings: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``threadkeep serve`` (echo bot, no rate limit) with more ``THREADKEEP_*`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADKEEP_")}
    env.update(
        THREADKEEP_BOT="echo",
        THREADKEEP_TURN_LEASE=str(LEASE),
        THREADKEEP_RATE_LIMIT="0",
        THREADKEEP_LOG_LEVEL="WARNING",
    )
    env.update(settings)
    args = [sys.executable, "-m", "threadkeep.cli.main", "serve", "--store", url]
    args += ["--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:
        server = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200,
                     60, "threadkeep serve")  # fmt: skip
            yield server
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run one soak; return its report."""
    work = Path(tempfile.mkdtemp(prefix="threadkeep-soak-"))
    backend = BACKENDS[args.backend](work)
    try:
        backend.start()
        port = free_port()
        with serving(backend.url, port, args.workers, work / "server.log") as server:
            soak = Soak(args, backend, f"http://127.0.0.1:{port}")
            soak.server = server
            began = time.monotonic()
            asyncio.run(soak.load())
            took = time.monotonic() - began
        time.sleep(LEASE + 0.5)  # a killed worker's lease lapses by its TTL
        report: dict[str, Any] = {
            "backend": args.backend,
            "workers": args.workers,
            "sessions": args.sessions,
            "seconds": round(took, 1),
            "requests": soak.tally.requests,
            "failed_attempts": soak.tally.failed_attempts,
            "persisted_false_answers": soak.tally.unpersisted,
            "given_up": soak.tally.given_up,
            **check(backend.url, soak.tally),
            "readyz_recovery_s": recovery(soak.tally.timeline),
            "timeline": soak.tally.timeline,
        }
        return report
    finally:
        backend.stop()
        shutil.rmtree(work, ignore_errors=True)


MUST_BE_ZERO = ("lost", "duplicated", "out_of_order", "not_gap_free", "leases_held", "given_up")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="sqlite")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--outage", type=float, default=5.0, help="seconds the backend is away")
    parser.add_argument("--give-up", type=float, default=60.0, help="seconds a write is retried")
    args = parser.parse_args(argv)
    report = run(args)
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    bad = [name for name in MUST_BE_ZERO if report[name]]
    if bad:
        sys.stderr.write(f"soak failed: {', '.join(f'{n}={report[n]}' for n in bad)}\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
