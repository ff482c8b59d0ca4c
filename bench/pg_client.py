"""PostgreSQL: the client's share of an append and a window read, counted and timed.

Run: ``python -m bench.pg_client --url postgresql://postgres@127.0.0.1:5432/DB [-n 1000]`` on
a database of your own (a schema ``tk_client_bench`` is made there and dropped). A
``pool_size=1`` store appends 200-byte messages to one conversation (200 first) and reads
``messages(last=20)``. Prints one JSON line per operation: Python calls per call (cProfile of
``n`` calls), client CPU per call (``time.process_time``) and wall-time p50 (``n`` calls each).
Run the same command with ``PYTHONPATH`` at another checkout's ``src`` to compare; alternate
the two for timings.

``--callgrind``: instead, call each operation 20 times, then ``math.gcd``, ``n`` times, then
``math.lcm``, for ``valgrind --tool=callgrind --zero-before=math_gcd --dump-before=math_lcm``:
one dump per operation (append, then read), its total over ``n`` the client instructions per
call.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import pstats
import statistics
import time
from collections.abc import Callable

import psycopg

import threadkeep

SCHEMA = "tk_client_bench"


def _profile(call: Callable[[], object], n: int) -> dict[str, float]:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(n):
        call()
    profile.disable()
    calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    walls = []
    cpu = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        call()
        walls.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    return {
        "python_calls": round(calls / n, 1),
        "client_cpu_us": round(cpu / n * 1e6, 1),
        "p50_us": round(statistics.median(walls) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--callgrind", action="store_true")
    args = parser.parse_args()
    store = threadkeep.open(f"{args.url}?schema={SCHEMA}&pool_size=1")
    try:
        conv = store.start("contact-bench")
        for _ in range(200):
            store.append(conv.id, "user", "x" * 200)
        ops: dict[str, Callable[[], object]] = {
            "append": lambda: store.append(conv.id, "user", "x" * 200),
            "messages(last=20)": lambda: store.messages(conv.id, last=20),
        }
        for name, call in ops.items():
            for _ in range(20 if args.callgrind else 100):
                call()
            if args.callgrind:
                math.gcd(1, 1)
                for _ in range(args.n):
                    call()
                math.lcm(1, 1)
            else:
                load = round(os.getloadavg()[0], 2)
                print(json.dumps({"op": name, **_profile(call, args.n), "load": load}))
    finally:
        store.close()
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


if __name__ == "__main__":
    main()
