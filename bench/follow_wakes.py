"""What one idle follower of another tenant costs PostgreSQL per write (deterministic counts).

A service worker's reader of the log (``service.followers``) with one SSE stream of tenant
``quiet`` waiting, and a library follower (``store.events(tenant="quiet", timeout=…)``) beside
it, while another store appends ``--writes`` messages of tenant ``load`` one after another.
Reports the event reads (one statement each, ``Flows.follow_events``) each follower's backend
ran per write; idle, each reads about once a second (``UNNOTIFIED_WAIT``), which the appends'
``seconds`` bound. A private database (created if missing) on 127.0.0.1:5432; loopback only.

    .venv/bin/python -m bench.follow_wakes [--writes 300] [--database tk_follow_wakes]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
import uuid
from typing import Any

import psycopg

import threadkeep
from threadkeep.service.followers import Followers
from threadkeep.service.routers.events import _follow

BASE = "postgresql://postgres@127.0.0.1:5432"


def _counting(reads: dict[str, int], name: str) -> Any:
    def instrument(backend: Any) -> Any:
        flows = backend._flows
        follow = flows.follow_events

        def counted(op: Any) -> Any:
            reads[name] += 1
            return follow(op)

        flows.follow_events = counted
        return backend

    return instrument


def run(writes: int, database: str) -> dict[str, Any]:
    with psycopg.connect(f"{BASE}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            conn.execute(f'CREATE DATABASE "{database}"')
    url = f"{BASE}/{database}?schema=tk_{uuid.uuid4().hex[:10]}"
    reads = {"service reader": 0, "library follower": 0}
    writer = threadkeep.open(url)
    conv = writer.resume("c-load", tenant="load")
    writer.append(conv.id, "user", "warm-up")

    report: dict[str, Any] = {"writes": writes}

    def appends() -> None:
        began = time.monotonic()
        for i in range(writes):
            writer.append(conv.id, "user", f"m{i}")
        time.sleep(0.5)  # the last notifications arrive
        report["seconds"] = round(time.monotonic() - began, 2)

    async def followed() -> None:
        store = await threadkeep.open_async(url, instrument=_counting(reads, "service reader"))
        library = threadkeep.open(url, instrument=_counting(reads, "library follower"))
        followers = Followers()
        stop = threading.Event()

        def follow_library() -> None:
            while not stop.is_set():
                for _ in library.events(tenant="quiet", after=cursor, timeout=1.0):
                    pass

        try:
            cursor = [e.id async for e in store.events(timeout=0)][-1]
            followers.start(store)
            stream = _follow(store, "quiet", _none(), cursor, True, 60, True, followers, bool)
            task = asyncio.create_task(_drain(stream))
            thread = threading.Thread(target=follow_library, daemon=True)
            thread.start()
            await asyncio.sleep(2.0)  # both wait
            start = dict(reads)
            await asyncio.to_thread(appends)
            report["reads_per_write"] = {k: round((reads[k] - start[k]) / writes, 2) for k in reads}
            stop.set()
            await followers.aclose()
            await asyncio.wait_for(task, 10)
            thread.join(5)
        finally:
            await followers.aclose()
            await store.aclose()
            library.close()

    asyncio.run(followed())
    writer.close()
    with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{url.rsplit("=", 1)[1]}" CASCADE')
    return report


async def _none() -> Any:
    return
    yield


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--database", default="tk_follow_wakes")
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(run(args.writes, args.database), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
