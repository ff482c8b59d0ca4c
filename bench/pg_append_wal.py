"""PostgreSQL: what one append writes, counted (WAL records and bytes by type, index entries).

Run: ``python -m bench.pg_append_wal --url postgresql://postgres@127.0.0.1:55499/postgres
[-n 1000]`` against a server nothing else writes to (a private cluster: the WAL is
cluster-wide), as a superuser (it creates ``pg_walinspect`` and drops and creates the
schemas ``wal_raw`` and ``wal_threadkeep``). ``--url`` has no default: the shared server of
the tests (127.0.0.1:5432) counts every other session's WAL too, so the command refuses to
run without a URL. The store's appends (100
conversations round-robin, 200-byte messages, the event log past ``events_kept`` so every
append also trims one event) and the peer harness's raw-pg-seq statement on the same data,
each on a fresh schema: WAL records and bytes per append by record type, and per table the
rows inserted, updated (HOT or not) and deleted per call (warm-up, resumes and the filler
events included). Deterministic, unlike timings on a shared machine: run it with
``PYTHONPATH`` at another checkout's ``src`` to compare.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import psycopg

import threadkeep

CONVERSATIONS = 100
CONTENT = "x" * 200
RAW_SEQ = (
    "WITH c AS (INSERT INTO cv AS cv (conv_id, last_seq) VALUES (%s, 1) ON CONFLICT (conv_id) "
    "DO UPDATE SET last_seq = cv.last_seq + 1, updated_at = now() RETURNING last_seq) "
    "INSERT INTO m (conv_id, seq, role, content) SELECT %s, c.last_seq, 'user', %s FROM c"
)


def _raw(url: str, schema: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    conn = psycopg.connect(url, autocommit=True, options=f"-c search_path={schema}")
    conn.execute(
        "CREATE TABLE cv (conv_id text PRIMARY KEY, last_seq bigint NOT NULL, "
        "updated_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute(
        "CREATE TABLE m (conv_id text NOT NULL, seq bigint NOT NULL, role text NOT NULL, "
        "content text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), "
        "PRIMARY KEY (conv_id, seq))"
    )

    def append(i: int) -> None:
        cid = f"c{i % CONVERSATIONS:03d}"
        conn.execute(RAW_SEQ, (cid, cid, CONTENT))

    return append, conn.close


def _store(url: str, schema: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    store = threadkeep.open(f"{url}?schema={schema}&pool_size=1")
    ids = [store.resume(f"c{i:03d}", tenant="bench").id for i in range(CONVERSATIONS)]
    with psycopg.connect(url, autocommit=True, options=f"-c search_path={schema}") as conn:
        conn.execute(  # past events_kept (10,000): each append's event trims one
            "INSERT INTO events (kind, tenant, conversation_id, data_json, at_us) "
            "SELECT 'x', 'fill', 'none', '{}', 0 FROM generate_series(1, 10000)"
        )

    def append(i: int) -> None:
        store.append(ids[i % CONVERSATIONS], "user", CONTENT)

    return append, store.close


def measure(admin: psycopg.Connection[Any], url: str, name: str, n: int) -> None:
    """Print what ``n`` appends of ``name`` (raw or threadkeep) wrote, per append."""
    schema = f"wal_{name}"
    admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    admin.execute(f"CREATE SCHEMA {schema}")
    append, close = (_raw if name == "raw" else _store)(url, schema)
    for i in range(300):  # warm-up: psycopg prepares on the 6th run
        append(i)
    start = admin.execute("SELECT pg_current_wal_lsn()").fetchone()
    for i in range(n):
        append(i)
    end = admin.execute("SELECT pg_current_wal_lsn()").fetchone()
    close()  # the backend reports its table counts when it ends
    assert start is not None and end is not None
    rows = admin.execute(
        'SELECT "resource_manager/record_type", count, combined_size FROM '
        "pg_get_wal_stats(%s, %s, true) WHERE count > 0 ORDER BY combined_size DESC",
        (start[0], end[0]),
    ).fetchall()
    total = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"{name}: per append {total[0] / n:.2f} WAL records, {total[1] / n:.0f} bytes")
    for kind, count, size in rows:
        print(f"  {kind:28s} {count / n:6.2f} records {size / n:6.0f} bytes")
    time.sleep(1.0)  # the stats of the ended backend
    after = admin.execute(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, (SELECT count(*) "
        "FROM pg_index i WHERE i.indrelid = relid) FROM pg_stat_user_tables "
        "WHERE schemaname = %s ORDER BY relname",
        (schema,),
    ).fetchall()
    calls = n + 300 + (0 if name == "raw" else CONVERSATIONS)  # with warm-up (and resumes)
    for rel, *counts, indexes in after:
        ins, upd, hot, dele = (c / calls for c in counts)
        if ins or upd or dele:
            print(
                f"  table {rel:20s} ins {ins:4.2f} upd {upd:4.2f} (HOT {hot:4.2f}) "
                f"del {dele:4.2f}, {indexes} indexes"
            )
    admin.execute(f"DROP SCHEMA {schema} CASCADE")


def main(argv: list[str] | None = None) -> None:
    """Run both and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(  # no default: the shared server's WAL holds everyone's writes
        "--url",
        required=True,
        help="a server nothing else writes to (a private cluster), as a superuser",
    )
    parser.add_argument("-n", type=int, default=1000)
    args = parser.parse_args(argv)
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        for name in ("raw", "threadkeep"):
            measure(admin, args.url, name, args.n)


if __name__ == "__main__":
    main()
