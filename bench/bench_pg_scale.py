"""PostgreSQL at scale: a schema hash-partitioned by tenant beside an unpartitioned one.

Run: `python -m bench.bench_pg_scale [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
[--conversations 1000000] [--per 4] [--tenants 1000] [--partitions 16] [-n 300]
[--idle-samples 5] [--keep | --reuse]`.

It creates a database of its own (``--database``, default ``tk_pg_scale_bench``; it refuses
to start when that database exists, and drops it at the end unless ``--keep``), opens one
store per layout there (schema ``plain``, and schema ``part`` with ``?partitions=N``) so the
store creates the tables, and fills both with the same rows by ``INSERT … SELECT
generate_series`` (in chunks of 100,000 conversations, then ``ANALYZE``): ``--conversations``
conversations spread evenly over ``--tenants`` tenants, each with ``--per`` messages, none
expired and none idle. Each operation is then timed on both layouts in alternation, call by
call (the same conversation, tenant or contact on both sides), so machine noise hits both
alike; the table gives the partitioned side with the unpartitioned one as its baseline.
Compare the two sides of a row, not rows with each other (a row may find its pages warmed by
the row before). Last, ``--idle-samples`` times, one random tenant's conversations are all
made due to go idle and ``sweep()`` is timed on each layout (it marks them idle, with one
event each). ``--keep`` leaves the database, ``--reuse`` measures a kept one again without
loading. 1,000,000 conversations and 4,000,000 messages are 2.2 GB with indexes per
layout and took 3–5 minutes a layout to load on the shared 2-core development machine.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import psycopg
from psycopg import sql

import threadkeep
from bench._util import Result, compare, say, summarize

NOW_US = time.time_ns() // 1000
WEEK_US = 7 * 86_400_000_000

CONVERSATIONS = """
INSERT INTO conversations (id, tenant, contact_id, agent_id, channel, status, stage,
    metadata_json, created_us, activity_us, expires_us, idle_us, message_count, last_seq,
    state_version, ttl_us, idle_after_us, window_n)
SELECT 'tks' || lpad(g::text, 23, '0'), 't' || (g %% %(tenants)s), 'contact-' || g,
    'agent-' || (g %% 50), 'sms', (ARRAY['active', 'new', 'waiting_agent'])[1 + g %% 3],
    'Q' || (g %% 5), '{}', %(now)s - g * 1000, %(now)s - g * 1000, %(now)s + %(week)s,
    %(now)s + %(week)s, %(per)s, %(per)s, 0, %(week)s, %(week)s, 20
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
"""
MESSAGES = """
INSERT INTO messages (tenant, conversation_id, seq, role, content, created_us, metadata_json,
    idem_key)
SELECT 't' || (g %% %(tenants)s), 'tks' || lpad(g::text, 23, '0'), s,
    CASE WHEN s %% 2 = 1 THEN 'user' ELSE 'assistant' END,
    convert_to('message ' || s || ': I would like to sell my house on Elm street', 'UTF8'),
    %(now)s - g * 1000 + s, '{}', CASE WHEN s %% 2 = 1 THEN 'wamid.' || g || '.' || s END
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
    CROSS JOIN generate_series(1, %(per)s::bigint) s
"""
CHUNK = 100_000


def _fill(conn: psycopg.Connection[Any], schema: str, args: argparse.Namespace) -> None:
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    params = {"tenants": args.tenants, "now": NOW_US, "week": WEEK_US, "per": args.per}
    t0 = time.perf_counter()
    for lo in range(1, args.conversations + 1, CHUNK):
        hi = min(args.conversations, lo + CHUNK - 1)
        conn.execute(CONVERSATIONS, {**params, "lo": lo, "hi": hi})
        conn.execute(MESSAGES, {**params, "lo": lo, "hi": hi})
        conn.commit()
        say(f"  {schema}: {hi:,} conversations ({time.perf_counter() - t0:.0f} s)")
    conn.execute("ANALYZE")
    size = conn.execute(
        "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c "
        "WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 'p')",
        (schema,),
    ).fetchone()
    conn.commit()
    say(f"  {schema}: {size[0] if size else '?'} with indexes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="tk_pg_scale_bench")
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--per", type=int, default=4, help="messages per conversation")
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("-n", type=int, default=300, help="timed calls per operation")
    parser.add_argument("--idle-samples", type=int, default=5, help="idle tenants to sweep")
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    parser.add_argument("--reuse", action="store_true", help="measure a kept database again")
    args = parser.parse_args(argv)
    database = sql.Identifier(args.database)
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        try:
            if not args.reuse:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(database))
        except psycopg.errors.DuplicateDatabase:
            say(f"database {args.database} exists: drop it, name another, or --reuse it")
            return 2
    base = args.admin_url.rsplit("/", 1)[0] + "/" + args.database
    stores: list[Any] = []
    try:
        urls = {"plain": f"{base}?schema=plain", "part": f"{base}?schema=part"}
        urls["part"] += f"&partitions={args.partitions}"
        with psycopg.connect(base) as conn:
            for schema, url in urls.items():
                if not args.reuse:
                    threadkeep.open(url).close()  # the store creates its schema
                    say(f"filling {schema} …")
                    _fill(conn, schema, args)
        stores += [threadkeep.open(urls["plain"]), threadkeep.open(urls["part"])]
        rows = _measure(*stores, args)
        rows.append(_sweep_idle_tenants(base, stores[0], stores[1], args))
        title = (
            f"PostgreSQL at {args.conversations:,} conversations × {args.per} messages, "
            f"{args.tenants:,} tenants: {args.partitions} hash partitions per table "
            f"against none (n={args.n})"
        )
        _table(title, rows)
    finally:
        for store in stores:
            store.close()
        if not args.keep:
            with psycopg.connect(args.admin_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))
    return 0


def _sweep_idle_tenants(
    base: str, plain: Any, part: Any, args: argparse.Namespace
) -> tuple[Result, Result, str]:
    """Time sweep() right after one tenant's conversations all passed their idle time."""
    samples: tuple[list[float], list[float]] = ([], [])
    idled = 0
    with psycopg.connect(base, autocommit=True) as conn:
        for _ in range(args.idle_samples):
            tenant = f"t{random.randrange(args.tenants)}"  # fresh ones on a --reuse too
            for side, (schema, store) in enumerate((("part", part), ("plain", plain))):
                conn.execute(
                    sql.SQL("UPDATE {}.conversations SET idle_us = %s WHERE tenant = %s").format(
                        sql.Identifier(schema)
                    ),
                    (NOW_US, tenant),
                )
                t0 = time.perf_counter()
                idled = store.sweep().idled
                samples[side].append(time.perf_counter() - t0)
    name = "sweep, one idle tenant"
    return (
        summarize(f"{name} (partitioned)", samples[0], sum(samples[0])),
        summarize(f"{name} (unpartitioned)", samples[1], sum(samples[1])),
        f"marks its {idled:,} due conversations idle, one event each ({args.idle_samples} runs)",
    )


def _table(title: str, rows: list[tuple[Result, Result, str]]) -> None:
    print(f"\n## {title}\n")
    print("| operation | partitioned p50 µs | p99 µs | unpartitioned p50 µs | p99 µs | ratio (p50) "
          "| note |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|")
    for part, plain, note in rows:
        name = part.name.removesuffix(" (partitioned)")
        print(f"| {name} | {part.p50_us:.0f} | {part.p99_us:.0f} | {plain.p50_us:.0f} "
              f"| {plain.p99_us:.0f} | {part.p50_us / plain.p50_us:.2f}× | {note} |")  # fmt: skip


def _measure(plain: Any, part: Any, args: argparse.Namespace) -> list[tuple[Result, Result, str]]:
    n, total, tenants = args.n, args.conversations, args.tenants

    def g(i: int) -> int:  # the i-th call's conversation, spread over the whole table
        return (i * 7_919 + 13) % total + 1

    def cid(i: int) -> str:
        return "tks" + str(g(i)).zfill(23)

    def tenant(i: int) -> str:
        return f"t{g(i) % tenants}"

    def both(name: str, call: Any, calls: int = n) -> tuple[Result, Result]:
        say(f"{name} …")
        part_side = (f"{name} (partitioned)", lambda i: call(part, i))
        plain_side = (f"{name} (unpartitioned)", lambda i: call(plain, i))
        return compare(part_side, plain_side, calls)

    text = "hello, I would like to sell my house on Elm street"
    ops = [
        ("append", lambda s, i: s.append(cid(i), "user", text, tenant=tenant(i)), n,
         "row lock + message + event + NOTIFY, tenant given"),
        ("append, bare id", lambda s, i: s.append(cid(i + n), "user", text), n,
         "no tenant: the row is found by id in every partition"),
        ("window read", lambda s, i: s.messages(cid(i), tenant=tenant(i), last=20), n,
         "last 20 of the conversation, tenant given"),
        ("window read, bare id", lambda s, i: s.messages(cid(i), last=20), n,
         "no tenant"),
        ("list page of 50", lambda s, i: s.list(tenant=tenant(i), limit=50), n,
         f"newest activity first, {total // tenants:,} conversations a tenant"),
        ("counts()", lambda s, i: s.counts(tenant=tenant(i)), n,
         "by status and stage, one tenant"),
        ("find_open", lambda s, i: s.find_open(f"contact-{g(i)}", tenant=tenant(i)), n,
         "the contact's open conversation"),
        ("resume", lambda s, i: s.resume(f"contact-{g(i + 2 * n)}", tenant=tenant(i + 2 * n)),
         n, "contact lock + find (finds the open one)"),
        ("sweep, nothing due", lambda s, i: s.sweep(), max(20, n // 10),
         "whole store: expiry, idle and fact scans find nothing"),
    ]  # fmt: skip
    rows: list[tuple[Result, Result, str]] = []
    for name, call, calls, note in ops:
        partitioned, unpartitioned = both(name, call, calls)
        rows.append((partitioned, unpartitioned, note))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
