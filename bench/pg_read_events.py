"""What one ``read_events`` costs the PostgreSQL server: migration 15's function against 14's.

The service's reader of the log reads every tenant (``read_events(after, NULL, 500)``). This
times the function in a server-side loop (no client, no round trip: ``clock_timestamp()``
around ``--calls`` calls in one ``DO`` block), the current one and version 14's (migration 9's
body, made beside it as ``read_events_v14``), alternated, at the log's end (an empty read),
20 events behind it, and a full batch of 500 behind; ``--sessions`` other sessions each hold
an open transaction that read a few tables (their locks are what ``pg_locks`` walks under
load). A schema of its own in ``--database`` (created if missing) on 127.0.0.1:5432, dropped
at the end; loopback only.

    .venv/bin/python -m bench.pg_read_events [--calls 2000] [--sessions 40] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

import psycopg

import threadkeep
from threadkeep.backends.postgres._schema import MIGRATIONS

BASE = "postgresql://postgres@127.0.0.1:5432"
CASES = {"at the end": 0, "20 behind": 20, "500 behind": 500}


def _old_function() -> str:
    """Version 14's read_events (migration 9's body), renamed."""
    body = MIGRATIONS[8]
    start = body.index("CREATE OR REPLACE FUNCTION read_events")
    text = body[start : body.index("END $f$;", start) + len("END $f$;")]
    return text.replace("FUNCTION read_events(", "FUNCTION read_events_v14(", 1)


def _time(conn: psycopg.Connection[Any], function: str, after: int, calls: int) -> float:
    """µs per call of ``function(after, NULL, 500)``, in one DO block on the server."""
    conn.execute(
        f"DO $$ DECLARE t0 timestamptz := clock_timestamp(); BEGIN "
        f"FOR i IN 1..{calls} LOOP PERFORM count(*) FROM {function}({after}, NULL, 500); "
        f"END LOOP; PERFORM set_config('tk.took', "
        f"(extract(epoch FROM clock_timestamp() - t0) * 1e6)::text, false); END $$"
    )
    row = conn.execute("SELECT current_setting('tk.took')::float8").fetchone()
    assert row is not None
    return float(row[0]) / calls


def run(calls: int, sessions: int, rounds: int, database: str) -> dict[str, Any]:
    with psycopg.connect(f"{BASE}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            conn.execute(f'CREATE DATABASE "{database}"')
    schema = f"tk_re_{uuid.uuid4().hex[:10]}"
    url = f"{BASE}/{database}?schema={schema}"
    held: list[psycopg.Connection[Any]] = []
    report: dict[str, Any] = {"calls": calls, "sessions": sessions}
    try:
        with threadkeep.open(url) as store:
            conv = store.start(contact_id="c")
            for i in range(600):
                store.append(conv.id, "user", f"m{i}")
            last = int([e.id for e in store.events(after=None, timeout=0)][-1])
        with psycopg.connect(f"{BASE}/{database}", autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute(_old_function())
            for _ in range(sessions):  # open transactions holding a few relations' locks
                other = psycopg.connect(f"{BASE}/{database}")
                other.execute(f'SET search_path TO "{schema}"')
                other.execute("SELECT count(*) FROM conversations, events_floors, meta")
                held.append(other)
            report["pg_locks_rows"] = conn.execute("SELECT count(*) FROM pg_locks").fetchone()
            for case, behind in CASES.items():
                for function in ("read_events_v14", "read_events"):  # warm
                    _time(conn, function, last - behind, 50)
                times: dict[str, list[float]] = {"v14": [], "v15": []}
                for _ in range(rounds):
                    times["v14"].append(_time(conn, "read_events_v14", last - behind, calls))
                    times["v15"].append(_time(conn, "read_events", last - behind, calls))
                report[case] = {k: [round(t, 1) for t in v] for k, v in times.items()}
    finally:
        for other in held:
            other.close()
        with psycopg.connect(f"{BASE}/{database}", autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database", default="tk_read_events")
    args = parser.parse_args(argv)
    report = run(args.calls, args.sessions, args.rounds, args.database)
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
