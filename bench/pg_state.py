"""PostgreSQL: what the peer harness's W5 costs, counted, never timed.

Run: ``python -m bench.pg_state --url postgresql://postgres@127.0.0.1:PORT/postgres [-n 1000]``
against a server of your own (``initdb`` in a temp dir, ``autovacuum=off``): the WAL and
commit counters are the cluster's, so other users of a shared server would be counted too.
A W5 "save" is ``resume`` of a new contact then ``save_state`` of a ~1 KiB document. Prints
one JSON line: round trips and statements per call (ReadyForQuery, and Execute or Query
sent, in a libpq trace of a ``pool_size=1`` store), Python calls per W5 save and per load
(cProfile), and per W5 save: WAL records / FPI / bytes and flushes (``pg_stat_wal``),
commits (``pg_stat_database``), row inserts, updates and HOT updates per table
(``pg_stat_user_tables``). Run the same command with ``PYTHONPATH`` at another checkout's
``src`` to compare.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

import threadkeep


def _doc(rng: random.Random, key: str) -> dict[str, Any]:
    """A qualification state of about 1 KiB of JSON."""
    notes = "".join(rng.choice("abcdefghij klmnopqrstuvwxyz") for _ in range(900))
    return {"contact_id": key, "stage": "Q2", "score": rng.randint(0, 100), "notes": notes}


def _counters(url: str, schema: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        wal = conn.execute(
            "SELECT wal_records, wal_fpi, wal_bytes, wal_sync FROM pg_stat_wal"
        ).fetchone()
        commits = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        assert wal is not None and commits is not None
        out = {
            "wal_records": int(wal[0]),
            "wal_fpi": int(wal[1]),
            "wal_bytes": int(wal[2]),
            "wal_flushes": int(wal[3]),
            "commits": int(commits[0]),
        }
        for rel, ins, upd, hot in conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE schemaname = %s",
            (schema,),
        ):
            out.update({f"{rel}.ins": ins, f"{rel}.upd": upd, f"{rel}.hot": hot})
    return out


def _round_trips(
    store: threadkeep.Store, call: Callable[[int], object], n: int = 20
) -> dict[str, float]:
    """Round trips (ReadyForQuery) and statements sent (Execute or Query: BEGIN, COMMIT and
    NOTIFY included) per call, from a libpq trace."""
    pool = store._backend._pool  # type: ignore[attr-defined]
    fd, path = tempfile.mkstemp()
    try:
        with pool.connection() as conn:
            conn.pgconn.trace(fd)
        for i in range(n):
            call(i)
        with pool.connection() as conn:
            conn.pgconn.untrace()
        with open(path, encoding="utf-8", errors="replace") as trace:
            lines = trace.read().splitlines()
    finally:
        os.close(fd)
        os.unlink(path)
    trips = sum(1 for x in lines if "\tB\t" in x and "\tReadyForQuery" in x)
    sent = sum(1 for x in lines if "\tF\t" in x and ("\tExecute\t" in x or "\tQuery\t" in x))
    return {"round_trips": trips / n, "statements": sent / n}


def _python_calls(call: Callable[[int], object], n: int = 200) -> float:
    profile = cProfile.Profile()
    profile.enable()
    for i in range(n):
        call(i)
    profile.disable()
    return float(pstats.Stats(profile).total_calls) / n  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="postgresql://… of a server of your own")
    parser.add_argument("-n", type=int, default=1000, help="W5 saves counted")
    args = parser.parse_args()
    schema = "bench_state_" + uuid.uuid4().hex[:8]
    url = f"{args.url}?schema={schema}&pool_size=1"
    rng = random.Random(7)
    docs = [_doc(rng, f"contact-{i:05d}") for i in range(max(args.n, 200))]
    ids: dict[str, str] = {}
    out: dict[str, Any] = {"threadkeep": os.path.dirname(threadkeep.__file__)}
    with threadkeep.open(url) as store:

        def save(prefix: str) -> Callable[[int], None]:
            def call(i: int) -> None:
                key = f"{prefix}-{i}"
                cid = ids.get(key)
                if cid is None:
                    cid = ids[key] = store.resume(key, tenant="bench").id
                store.save_state(cid, docs[i % len(docs)])

            return call

        def load(prefix: str) -> Callable[[int], None]:
            return lambda i: store.load_state(ids[f"{prefix}-{i}"]) and None

        for i in range(50):
            save("warm")(i)
            load("warm")(i)
        one = store.resume("one", tenant="bench").id
        out["round_trips"] = {
            "w5_save": _round_trips(store, save("rt")),
            "load_state": _round_trips(store, load("rt")),
            "resume_new": _round_trips(store, lambda i: store.resume(f"rn-{i}", tenant="bench")),
            "resume_found": _round_trips(store, lambda i: store.resume("one", tenant="bench")),
            "save_state": _round_trips(store, lambda i: store.save_state(one, docs[i])),
        }
        out["python_calls"] = {
            "w5_save": _python_calls(save("py")),
            "load_state": _python_calls(load("py")),
        }
    time.sleep(1.5)  # server processes report their counters when they end
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    before = _counters(args.url, schema)
    with threadkeep.open(url) as store:
        for i in range(args.n):
            save("w5")(i)
    time.sleep(1.5)
    after = _counters(args.url, schema)
    changed = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    out["per_w5_save"] = {k: round(d / args.n, 2) for k, d in changed.items()}
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    print(json.dumps(out))


if __name__ == "__main__":
    main()
