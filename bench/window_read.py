"""The window read (the harness's W2): ``messages(last=20)`` of a 200-message conversation.

Run: ``python -m bench.window_read sqlite|postgres [--mode time|calls|callgrind] [-n N]
[--read messages|context|state] [--raw]``; ``--read context``: ``context(cid)`` instead (the
window of 20, plain format, what a bot reads every turn); ``--read state``: ``load_state(cid)``
of a ~1 KB state (the harness's W5 load). ``--raw`` (postgres, messages or state): the floor,
what the peer harness's raw adapters do on a psycopg connection of their own (autocommit):
``raw-pg-seq``'s read (``SELECT role, content … ORDER BY seq DESC LIMIT 20``, ``fetchall``,
``reverse``) of the same 200 messages, or ``raw-pg``'s state load (``SELECT doc`` of a jsonb
by key), in tables ``tk_window_bench_raw*`` of the same schema.
A fresh store (SQLite: a file under ``--dir``; PostgreSQL: schema ``tk_window_bench`` of
``--url``'s database, made and dropped, ``pool_size=1``) gets 200 messages of 50-110
characters (a third with metadata), then 200 warm-up reads. ``time``: the p50 µs of ``n``
reads; ``calls``: Python function calls per read (cProfile of ``n`` reads); ``callgrind``:
``math.gcd``, ``n`` reads, ``math.lcm``, for ``valgrind --tool=callgrind
--zero-before=math_gcd --dump-before=math_lcm`` (the second dump's total over ``n`` is the
client instructions per read). Run with ``PYTHONPATH`` at another checkout's ``src`` to
compare; alternate the two for timings.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import json
import math
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator

import threadkeep

SCHEMA = "tk_window_bench"


def _drop_schema(url: str) -> None:
    import psycopg  # the PostgreSQL side only: the SQLite bench runs without the extra

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend", choices=["sqlite", "postgres"])
    parser.add_argument("--mode", choices=["time", "calls", "callgrind"], default="time")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--read", choices=["messages", "context", "state"], default="messages")
    parser.add_argument("--raw", action="store_true", help="the raw psycopg floor (postgres)")
    args = parser.parse_args()
    if args.raw and (args.backend != "postgres" or args.read == "context"):
        parser.error("--raw: postgres, --read messages or state")
    if args.backend == "sqlite":
        path = os.path.join(args.dir, f"tk_window_bench_{os.getpid()}.db")
        url = f"sqlite:///{os.path.abspath(path)}"
    else:
        _drop_schema(args.url)
        url = f"{args.url}{'&' if '?' in args.url else '?'}schema={SCHEMA}&pool_size=1"
    try:
        if args.raw:
            with _raw_read(args.url, args.read) as read:
                _measure(read, args.mode, args.n)
            return
        with threadkeep.open(url) as store:
            cid = store.resume("c1", tenant="bench").id
            for i in range(200):
                metadata = {"i": i} if i % 3 == 0 else None
                role = "user" if i % 2 == 0 else "assistant"
                store.append(cid, role, f"message {i} " + "x" * (40 + i % 60), metadata=metadata)
            if args.read == "messages":
                read = functools.partial(store.messages, cid, last=20)
            elif args.read == "context":
                read = functools.partial(store.context, cid)
            else:
                store.save_state(cid, _state())
                read = functools.partial(store.load_state, cid)
            _measure(read, args.mode, args.n)
    finally:
        if args.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
        else:
            _drop_schema(args.url)


def _measure(read: Callable[[], object], mode: str, n: int) -> None:
    """200 warm-up reads, then ``mode``'s measure of ``n`` (see the module's docstring)."""
    for _ in range(200):
        read()
    if mode == "time":
        clock, lat = time.perf_counter_ns, []
        for _ in range(n):
            start = clock()
            read()
            lat.append(clock() - start)
        print(f"p50 {statistics.median(lat) / 1000:.1f} us")
    elif mode == "calls":
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(n):
            read()
        profile.disable()
        print(f"{pstats.Stats(profile).total_calls / n:.1f} Python calls per read")
    else:
        math.gcd(1, 1)
        for _ in range(n):
            read()
        math.lcm(1, 1)


@contextlib.contextmanager
def _raw_read(url: str, read: str) -> Iterator[Callable[[], object]]:
    """The peer harness's raw read (``raw-pg-seq``) or state load (``raw-pg``), on ``url``."""
    import psycopg
    from psycopg.types.json import Jsonb

    messages, states = f"{SCHEMA}.tk_window_bench_raw", f"{SCHEMA}.tk_window_bench_raw_state"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(  # raw-pg-seq's table and raw-pg's state table
            f"CREATE TABLE {messages} (conv_id text NOT NULL, seq bigint NOT NULL, "
            "role text NOT NULL, content text NOT NULL, created_at timestamptz NOT NULL "
            "DEFAULT now(), PRIMARY KEY (conv_id, seq))"
        )
        conn.execute(
            f"CREATE TABLE {states} (key text PRIMARY KEY, doc jsonb NOT NULL, "
            "updated_at timestamptz NOT NULL DEFAULT now())"
        )
        for i in range(200):
            role = "user" if i % 2 == 0 else "assistant"
            conn.execute(
                f"INSERT INTO {messages} (conv_id, seq, role, content) VALUES (%s, %s, %s, %s)",
                ("c1", i + 1, role, f"message {i} " + "x" * (40 + i % 60)),
            )
        conn.execute(f"INSERT INTO {states} (key, doc) VALUES (%s, %s)", ("k1", Jsonb(_state())))
        conn.execute(f"ANALYZE {messages}")

        def read_last() -> object:  # raw-pg-seq's read_last(conv_id, 20)
            rows = conn.execute(
                f"SELECT role, content FROM {messages} WHERE conv_id = %s "
                "ORDER BY seq DESC LIMIT %s",
                ("c1", min(20, 2**62)),
            ).fetchall()
            rows.reverse()
            return rows

        def load_state() -> object:  # raw-pg's load_state(key)
            row = conn.execute(f"SELECT doc FROM {states} WHERE key = %s", ("k1",)).fetchone()
            return None if row is None else row[0]

        yield read_last if read == "messages" else load_state


def _state() -> dict[str, object]:
    """A ~1 KB qualification state, shaped as the peer harness's W5 document."""
    doc: dict[str, object] = {
        "contact_id": "contact-00042", "stage": "Q2", "intent": "buy", "budget_min": 350000,
        "budget_max": 1250000, "preapproved": True, "bedrooms": 3,
        "areas": ["downtown", "lakeside", "hills"], "timeline_days": 90, "temperature": "warm",
        "answers": {f"q{i}": f"answer {i} " + "y" * 22 for i in range(1, 6)},
        "updated_at": "2026-11-22T00:00:00+00:00", "notes": "",
    }  # fmt: skip
    doc["notes"] = "z" * (1000 - len(json.dumps(doc)))
    return doc


if __name__ == "__main__":
    main()
