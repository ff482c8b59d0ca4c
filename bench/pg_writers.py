"""PostgreSQL: concurrent writers to different conversations, and what they wait for.

Run: ``python -m bench.pg_writers [--url postgresql://postgres@127.0.0.1:5432/postgres]
[--writers 4] [-n 150]``. Each of ``--writers`` processes opens its own store on a fresh
schema, starts its own conversation and appends ``-n`` messages as fast as it can; the
parent samples ``pg_locks`` every 2 ms for sessions of that store waiting on a lock. Prints
p50 / p99 of one append, appends per second over all writers, and the average number of
waiting sessions per sample by lock type (the deterministic part on a shared machine:
before migration 7 the writers queued on the event log's advisory lock). Run the same
command with ``PYTHONPATH`` at another checkout's ``src`` to compare, interleaved.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import threading
import time
import uuid
from typing import Any

import psycopg

import threadkeep


def _writer(url: str, n: int, barrier: Any, out: Any) -> None:
    with threadkeep.open(url) as store:
        conv = store.start(contact_id=uuid.uuid4().hex)
        store.append(conv.id, "user", "warm")
        barrier.wait()
        times = []
        began = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            store.append(conv.id, "user", f"m{i}")
            times.append(time.perf_counter() - t0)
        out.put((times, time.perf_counter() - began))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("-n", type=int, default=150)
    args = parser.parse_args(argv)
    schema = f"bench_writers_{uuid.uuid4().hex[:8]}"
    url = f"{args.url}?schema={schema}"
    threadkeep.open(url).close()
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(args.writers + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(url, args.n, barrier, out)) for _ in range(args.writers)
    ]
    waits: collections.Counter[str] = collections.Counter()
    samples = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal samples
        with psycopg.connect(args.url, autocommit=True) as conn:
            while not stop.is_set():
                for kind, count in conn.execute(
                    "SELECT l.locktype, count(*) FROM pg_locks l JOIN pg_stat_activity a "
                    "ON a.pid = l.pid WHERE NOT l.granted AND a.application_name = %s "
                    "GROUP BY 1",
                    (f"threadkeep:{schema}"[:63],),
                ).fetchall():
                    waits[kind] += count
                samples += 1
                time.sleep(0.002)

    try:
        for p in procs:
            p.start()
        barrier.wait()
        sampler = threading.Thread(target=sample)
        sampler.start()
        results = [out.get(timeout=600) for _ in procs]
        stop.set()
        sampler.join()
        for p in procs:
            p.join()
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    times = sorted(t for ts, _ in results for t in ts)
    wall = max(w for _, w in results)
    per_sample = {kind: round(n / max(1, samples), 2) for kind, n in waits.items()}
    p50, p99 = times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6
    print(
        f"{args.writers} writers x {args.n} appends, own conversations: "
        f"p50 {p50:,.0f} us, p99 {p99:,.0f} us, "
        f"{len(times) / wall:,.0f} appends/s; sessions waiting on a lock per sample: "
        f"{per_sample or 'none'} ({samples} samples)"
    )


if __name__ == "__main__":
    main()
