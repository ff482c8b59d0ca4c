"""The load benchmark (``bench/load.py``), shortened: it runs, and under a light load with idle
streams open nothing is lost, no request fails and idle streams hold no store connection.

5 s per phase, 10 sessions, 2 workers, 40 idle streams and 2 watchers per backend; the full run
and its results are in docs/performance.md ("Under load").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from bench.load import MUST_BE_ZERO, Servers, Watcher, memory, pg_counters, rss_kib, run
from bench.soak import SqliteBackend

from tests._servers import POSTGRES_BASE, require_reachable, unavailable, wait_until

NEEDS = {"sqlite": None, "redis": "redis-server", "postgres": "initdb"}


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(NEEDS))
def test_a_short_load_run_loses_nothing(backend: str) -> None:
    needed = NEEDS[backend]
    if needed is not None and shutil.which(needed) is None:
        unavailable(f"{needed} is not installed: the {backend} run needs a private server")
    args = argparse.Namespace(
        backend=backend, sessions=10, seconds=5.0, think=0.1, workers=2, turns=20,
        followers=40, watchers=2, idle=1.0, redis_fsync="everysec", kill_worker=False,
    )  # fmt: skip
    report = run(args)
    assert report["workers_lost"] == []
    for load in (report["load"], report["with_followers"]["load"]):
        assert {name: load[name] for name in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0)
        assert load["acknowledged"] > 20
        assert load["readyz_probes"] > 0  # probed all along, every probe a 200 (errors 0)
    followers = report["with_followers"]
    assert followers["followers_refused"] == followers["unseen_by_a_watcher"] == 0
    connections = followers["store_connections_with_followers"]
    if backend == "redis":  # one XREAD per worker process, whatever the number of streams
        assert connections["in_xread"] <= args.workers
    elif backend == "postgres":  # one LISTEN session per worker process
        assert connections.get("threadkeep-events:soak", 0) <= args.workers
    if backend == "postgres":  # the database's transactions over the phase (none retried)
        counts = report["load"]["pg_transactions"]
        assert counts["commits_per_request"] >= 3
        assert counts["deadlocks"] == 0


def test_pg_counters_are_the_databases_commits_and_rollbacks() -> None:
    # what bench.load reports per request on PostgreSQL (pg_transactions): a session's
    # statements in autocommit count one commit each, a failed one a rollback
    require_reachable(POSTGRES_BASE)
    before = pg_counters(POSTGRES_BASE)
    with psycopg.connect(POSTGRES_BASE.split("?", 1)[0], autocommit=True) as conn:
        for _ in range(3):
            conn.execute("SELECT 1")
        with contextlib.suppress(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
    # a session reports its counts when it ends (other sessions of the database add theirs)

    def counted() -> bool:
        now = pg_counters(POSTGRES_BASE)
        return (
            now["xact_commit"] - before["xact_commit"] >= 3
            and now["xact_rollback"] - before["xact_rollback"] >= 1
        )

    wait_until("the session's transactions in pg_stat_database", counted, 30)
    assert set(before) == {"xact_commit", "xact_rollback", "deadlocks"}


def _gone_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_worker_that_is_gone_is_reported_not_a_crash() -> None:
    # a worker the supervisor killed mid-run: its /proc entry is gone when the bench reads it
    alive, gone = os.getpid(), _gone_pid()
    report = memory([alive, gone])
    assert report["rss_mib"][0] > 0 and report["rss_mib"][1] is None
    assert report["peak_rss_mib"][1] is None
    assert rss_kib([alive, gone]) == rss_kib([alive])
    servers = Servers([alive, gone], SqliteBackend(Path("/nonexistent")))
    servers.look()
    servers.look()  # noted once
    assert [entry["pid"] for entry in servers.lost] == [gone]
    assert servers.lost[0]["last_seen"] is None and len(servers.lost[0]["loadavg"]) == 3


@pytest.mark.slow
def test_a_worker_lost_mid_run_is_reported_and_the_run_ends() -> None:
    # a worker killed mid-load (uvicorn's supervisor starts another): the run reports it (and
    # keeps the server's log) instead of failing when it reads the worker's memory
    args = argparse.Namespace(
        backend="sqlite", sessions=4, seconds=6.0, think=0.1, workers=2, turns=5,
        followers=0, watchers=0, idle=1.0, redis_fsync="everysec", kill_worker=True,
    )  # fmt: skip
    report = run(args)
    lost = report["workers_lost"]
    assert len(lost) == 1, lost  # (its replacement may not have started when it was noticed)
    assert lost[0]["last_seen"] is not None  # seen alive before
    assert None in report["memory_after_load"]["rss_mib"]
    kept = Path(report["server_log"])
    assert kept.exists()
    kept.unlink()
    assert report["load"]["lost"] == 0  # acknowledged messages are all stored
    # the lost worker's CPU left the sum and its replacement's never joined it: no figure
    assert report["load"]["cpu_ms_per_request"]["workers"] is None


def test_a_watcher_takes_messages_split_anywhere_between_reads() -> None:
    """The watcher reads what arrived and splits it into SSE messages itself (not a line per
    read): a message split across reads, several in one read, a cursor-only message, a
    heartbeat and an error event are each taken as the line-by-line reader took them.
    """
    data = (
        '{"id":"%s","kind":"%s","tenant":"load","conversation_id":"c%d",'
        '"data":{"seq":%d},"at":"2026-12-01T12:00:00+00:00"}'
    )
    wire = (
        f"id: 7-0\nevent: message.appended\ndata: {data % ('7-0', 'message.appended', 1, 1)}\n\n"
        ": heartbeat\n\n"
        f"id: 8-0\nevent: conversation.updated\ndata: {data % ('8-0', 'x', 1, 0)}\n\n"
        f"id: 9-0\nevent: message.appended\ndata: {data % ('9-0', 'message.appended', 2, 5)}\n\n"
        "id: 12-0\n\n"
        'event: error\ndata: {"error":{"type":"CursorExpired"}}\n\n'
    ).encode()

    async def main() -> Watcher:
        reader = asyncio.StreamReader()
        for start in range(0, len(wire), 37):  # cuts inside lines and between them
            reader.feed_data(wire[start : start + 37])
        reader.feed_eof()
        watcher = Watcher()
        await watcher.follow(reader)
        return watcher

    watcher = asyncio.run(main())
    assert watcher.seen == {("c1", 1), ("c2", 5)}
    assert watcher.last_id == "12-0"
    assert watcher.errors == ['data: {"error":{"type":"CursorExpired"}}']
