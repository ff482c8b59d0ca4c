"""HTTP benchmark: the service (4 uvicorn workers, echo bot) beside the same work done as
direct AsyncStore calls in this process, in the same run.

Operations: a chat turn (`POST /v1/chat`: lease, user message, bot, reply, status reads) and
an append (`POST /v1/conversations/{id}/messages`), each at concurrency 1 and 50, sent by a
minimal keep-alive HTTP/1.1 client (one connection per concurrent caller, so the client's own
CPU stays small). Latencies are per call as the client sees them; throughput is calls per
wall-clock second. The ratio is HTTP p50 over library p50. The server's peak RSS (VmHWM) is
read per worker from /proc.

Run: `make bench` or `python -m bench.bench_http [--store URL] [-n 500] [--workers 4]`.
The default store is a SQLite file in a temporary directory; a Redis or PostgreSQL URL gets a
key prefix or schema of the run's own, deleted at the end. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import threadkeep
from bench._util import Result, say, summarize, table
from threadkeep.bot import EchoBot

TEXT = "hello, I would like to sell my house on Elm street"
CONCURRENCY = (1, 50)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def _role(pid: int) -> str:
    with contextlib.suppress(OSError):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if "resource_tracker" in cmd:
            return "multiprocessing resource tracker"
        if "multiprocessing" in cmd:
            return "worker"
    return "child"


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def serve(store: str, workers: int, log: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Run `threadkeep serve` with the echo bot; yield its port and process."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADKEEP_")}
    env.update(THREADKEEP_BOT="echo", THREADKEEP_LOG_LEVEL="WARNING", THREADKEEP_TURN_WAIT="60")
    args = [sys.executable, "-m", "threadkeep.cli.main", "serve", "--store", store]
    args += ["--port", str(port), "--workers", str(workers)]
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def _timed(
    name: str, op: Callable[[int, int], Awaitable[object]], n: int, concurrency: int
) -> Result:
    """Run op(worker, i) n times in all from `concurrency` tasks; time every call."""
    samples: list[float] = []
    per = n // concurrency

    async def worker(w: int) -> None:
        for i in range(per):
            t0 = time.perf_counter()
            await op(w, i)
            samples.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))  # warm-up
    samples.clear()
    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return summarize(name, samples, time.perf_counter() - start)


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough HTTP for these JSON calls.

    A general client (httpx) spends ~2-3 ms of CPU per request, which on a small machine would
    measure the client rather than the service; this one spends a few microseconds.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        self.writer.write(head.encode() + data)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, json.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        self.writer.close()


async def _http(port: int, n: int) -> dict[tuple[str, int], Result]:
    out: dict[tuple[str, int], Result] = {}
    for c in CONCURRENCY:
        conns = [await Connection.open(port) for _ in range(c)]
        ids = []
        for w, conn in enumerate(conns):
            status, conv = await conn.post("/v1/conversations", {"contact_id": f"h-{c}-{w}"})
            assert status == 201, conv
            ids.append(conv["id"])

        async def chat(
            w: int, i: int, ids: list[str] = ids, conns: list[Connection] = conns
        ) -> None:
            status, body = await conns[w].post(
                "/v1/chat", {"message": TEXT, "conversation_id": ids[w]}
            )
            assert status == 200, body

        async def append(
            w: int, i: int, ids: list[str] = ids, conns: list[Connection] = conns
        ) -> None:
            status, body = await conns[w].post(
                f"/v1/conversations/{ids[w]}/messages", {"role": "user", "content": TEXT}
            )
            assert status == 201, body

        say(f"[http] chat and append at concurrency {c}")
        out["chat", c] = await _timed(f"HTTP chat turn, c={c}", chat, n, c)
        out["append", c] = await _timed(f"HTTP append, c={c}", append, n, c)
        for conn in conns:
            conn.close()
    return out


async def _library(url: str, n: int) -> dict[tuple[str, int], Result]:
    """The same work as the service's turn, as AsyncStore calls in this process."""
    out: dict[tuple[str, int], Result] = {}
    bot = EchoBot()
    async with await threadkeep.open_async(url) as store:
        for c in CONCURRENCY:
            ids = [(await store.start(f"l-{c}-{w}")).id for w in range(c)]

            async def chat(w: int, i: int, ids: list[str] = ids) -> None:
                async with store.turn(ids[w], lease=30, timeout=60) as turn:
                    message = await turn.append("user", TEXT)
                    conv = await store.get(ids[w])
                    reply = await bot.respond(store, conv, message)
                    assert reply is not None
                    await turn.append("assistant", reply)
                    await store.get(ids[w])

            async def append(w: int, i: int, ids: list[str] = ids) -> None:
                await store.append(ids[w], "user", TEXT)

            say(f"[library] chat and append at concurrency {c}")
            out["chat", c] = await _timed(f"library turn, c={c}", chat, n, c)
            out["append", c] = await _timed(f"library append, c={c}", append, n, c)
    return out


def _isolated(store: str, name: str) -> str:
    """Give a shared server's URL a key prefix (Redis) or schema (PostgreSQL) of its own."""
    sep = "&" if "?" in store else "?"
    suffix = uuid.uuid4().hex[:8]
    if store.startswith("redis"):
        return f"{store}{sep}prefix=bench-{name}-{suffix}"
    if store.startswith("postgres"):
        return f"{store}{sep}schema=bench_{name}_{suffix}"
    return store


def _cleanup(url: str) -> None:
    """Delete what the run made on a shared server (never anything else)."""
    base, _, query = url.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    if url.startswith("redis") and "prefix" in params:
        import redis

        client = redis.Redis.from_url(base)
        keys = list(client.scan_iter(match=params["prefix"] + "*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()
    elif url.startswith("postgres") and "schema" in params:
        import psycopg
        from psycopg import sql

        with psycopg.connect(base, autocommit=True) as conn:
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
            conn.execute(drop.format(sql.Identifier(params["schema"])))


def run(store: str | None, n: int, workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="tk-bench-http-") as tmp:
        base_store = _isolated(store, "http") if store else f"sqlite:///{Path(tmp) / 'http.db'}"
        lib_store = _isolated(store, "lib") if store else f"sqlite:///{Path(tmp) / 'lib.db'}"
        log = Path(tmp) / "server.log"
        say(f"[http] {workers} workers on {base_store}")
        try:
            with serve(base_store, workers, log) as (port, proc):
                http = asyncio.run(_http(port, n))
                rss = [("supervisor", proc.pid, _peak_rss_mib(proc.pid))]
                rss += [(_role(pid), pid, _peak_rss_mib(pid)) for pid in _children(proc.pid)]
            lib = asyncio.run(_library(lib_store, n))
        finally:
            _cleanup(base_store)
            _cleanup(lib_store)
    rows = [(http[key], lib[key], "") for key in sorted(http, key=lambda k: (k[1], k[0]))]
    table(f"HTTP service ({workers} workers, echo bot) vs direct AsyncStore calls", rows)
    load = Path("/proc/loadavg").read_text().split()[:3]
    sys.stdout.write(
        f"\nStore {base_store.split('?')[0]}; {n} timed calls per row; client, server and store "
        f"share {os.cpu_count()} CPUs (load average {' '.join(load)} at the end).\n"
    )
    sys.stdout.write("\nServer peak RSS (VmHWM):\n\n")
    sys.stdout.write("| server process | pid | peak RSS MiB |\n|---|---:|---:|\n")
    for role, pid, mib in sorted(rss, key=lambda r: (r[0] != "supervisor", r[0], r[1])):
        sys.stdout.write(f"| {role} | {pid} | {mib:.1f} |\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default=None, help="store URL (default: a temporary SQLite)")
    parser.add_argument("-n", type=int, default=500, help="timed calls per operation and level")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    run(args.store, args.n, args.workers)


if __name__ == "__main__":
    main()
