"""What a service worker's reader of the log costs PostgreSQL per write (deterministic counts).

A ``service.followers.Followers`` reader (one per worker process; it follows every tenant) on
an async store, while another process appends ``--writes`` messages from ``--threads``
threads, each to a conversation of its own. Reports the reader's event reads (one statement
each, ``Flows.follow_events``) per write, the empty and the held-back ones among them, and the
reader process's CPU per write (its LISTEN thread's apart). A private database (created if
missing) on 127.0.0.1:5432; loopback only.

    .venv/bin/python -m bench.follow_reads [--writes 800] [--threads 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid
from typing import Any

import psycopg

import threadkeep
from threadkeep.service.followers import Followers

BASE = "postgresql://postgres@127.0.0.1:5432"


def _counting(reads: dict[str, int]) -> Any:
    def instrument(backend: Any) -> Any:
        flows = backend._flows
        follow = flows.follow_events

        def counted(op: Any) -> Any:
            reads["reads"] += 1
            result, held = yield from follow(op)
            reads["held"] += held
            reads["empty"] += not result.value
            return result, held

        flows.follow_events = counted
        return backend

    return instrument


def _thread_cpu(thread: threading.Thread | None) -> float:
    """CPU seconds of ``thread`` so far (Linux; 0 without it)."""
    if thread is None or thread.native_id is None:
        return 0.0
    with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write(url: str, writes: int, threads: int) -> None:
    """The writer process: ``writes`` appends from ``threads`` threads."""
    with threadkeep.open(url) as store:
        convs = [store.resume(f"c{i}", tenant="load") for i in range(threads)]

        def appends(cid: str) -> None:
            for i in range(writes // threads):
                store.append(cid, "user", f"m{i}", tenant="load")

        running = [threading.Thread(target=appends, args=(c.id,)) for c in convs]
        for t in running:
            t.start()
        for t in running:
            t.join()


def run(writes: int, threads: int, database: str) -> dict[str, Any]:
    with psycopg.connect(f"{BASE}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            conn.execute(f'CREATE DATABASE "{database}"')
    url = f"{BASE}/{database}?schema=tk_{uuid.uuid4().hex[:10]}"
    threadkeep.open(url).close()  # migrated
    reads = {"reads": 0, "held": 0, "empty": 0}
    report: dict[str, Any] = {"writes": writes, "threads": threads}

    async def follow() -> None:
        store = await threadkeep.open_async(url, instrument=_counting(reads))
        followers = Followers()
        try:
            followers.start(store)
            await asyncio.sleep(2.0)  # the reader waits
            start, cpu = dict(reads), time.process_time()
            listener = store._backend._listener._thread  # type: ignore[attr-defined]
            thread_cpu = _thread_cpu(listener)
            began = time.monotonic()
            writer = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.follow_reads", "--write", url,
                "--writes", str(writes), "--threads", str(threads),
            )  # fmt: skip
            await writer.wait()
            report["seconds"] = round(time.monotonic() - began, 2)
            await asyncio.sleep(0.5)  # the last notifications arrive
            for key in reads:
                report[f"{key}_per_write"] = round((reads[key] - start[key]) / writes, 3)
            listened = _thread_cpu(listener) - thread_cpu
            report["cpu_us_per_write"] = round((time.process_time() - cpu) / writes * 1e6)
            report["listener_thread_cpu_us_per_write"] = round(listened / writes * 1e6)
            report["events_taken"] = len(followers._window)
        finally:
            await followers.aclose()
            await store.aclose()

    asyncio.run(follow())
    with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{url.rsplit("=", 1)[1]}" CASCADE')
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=800)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--database", default="tk_follow_reads")
    parser.add_argument("--write", metavar="URL", help=argparse.SUPPRESS)  # the writer process
    args = parser.parse_args(argv)
    if args.write:
        write(args.write, args.writes, args.threads)
        return 0
    sys.stdout.write(json.dumps(run(args.writes, args.threads, args.database), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
