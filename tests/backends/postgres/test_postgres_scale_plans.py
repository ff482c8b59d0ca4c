"""PostgreSQL plans that keep counts() and sweep() flat as a tenant grows (bench.scale)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import threadkeep
from tests.backends.postgres._helpers import connect, url_of
from threadkeep.backends.postgres import _schema as sql

pytestmark = pytest.mark.postgres


def _scans(plan: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    """(node type, index, index condition) of every node reading ``conversations`` or one
    of its indexes (a bitmap heap scan names no index: its bitmap index scan child does)."""
    found = []
    index = plan.get("Index Name") or ""
    reads_table = plan.get("Relation Name") == "conversations" and "Bitmap" not in plan["Node Type"]
    if reads_table or index.startswith("conversations_"):
        found.append((plan["Node Type"], plan.get("Index Name"), plan.get("Index Cond", "")))
    for child in plan.get("Plans", []):
        found.extend(_scans(child))
    return found


Scan = tuple[str, str | None, str]


def _plan(schema_name: str, query: str, params: dict[str, Any]) -> list[Scan]:
    threadkeep.open(url_of(schema_name)).close()  # migrated
    with connect(schema_name) as conn:
        conn.execute("SET enable_seqscan = off")  # what the planner does on a big table
        row = conn.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()
        doc = json.loads(row[0]) if isinstance(row[0], str) else row[0]
        return _scans(doc[0]["Plan"])


def test_counts_reads_only_the_expired_rows_of_conversations(schema: str) -> None:
    """COUNTS reads counters, and of ``conversations`` only the expired-unswept range."""
    scans = _plan(schema, sql.COUNTS, {"tenant": "t", "now": 10**15})
    assert scans, "COUNTS must correct for expired rows"
    assert all(index == "conversations_expiry" for _, index, _ in scans), scans


@pytest.mark.slow  # 200,000 rows: seconds, minutes on a loaded machine
def test_idle_batches_seek_by_status_on_a_big_table(schema: str) -> None:
    """Sweep's idle batch reads a range of (status, idle_us), never a walk of the table.

    200,000 rows long idle or closed and 4,000 active ones not due: the planner, taking status
    and idle time for independent, expected due rows everywhere and, ordering the batch by id,
    walked the primary key through every row (none due): 0.7 s a sweep at 1,000,000.
    """
    threadkeep.open(url_of(schema)).close()  # migrated
    with connect(schema, autocommit=True) as conn:
        for lo in range(0, 200_000, 20_000):  # a transaction each: the count triggers' rows
            conn.execute(
                "INSERT INTO conversations (id, tenant, contact_id, status, metadata_json, "
                "created_us, activity_us, expires_us, idle_us, idle_after_us, window_n) "
                "SELECT 'c' || g, 't', 'k' || g, CASE WHEN g %% 50 = 0 THEN 'active' "
                "WHEN g %% 2 = 0 THEN 'idle' ELSE 'closed' END, '{}', g, g, NULL, "
                "CASE WHEN g %% 50 = 0 THEN 10000000 + g ELSE g END, 1, 20 "
                "FROM generate_series(%s::bigint, %s::bigint) g",
                (lo + 1, lo + 20_000),
            )
        conn.execute("ANALYZE conversations")
        params = {"now": 5_000_000, "status": "active", "to": "idle", "n": 500}
        doc = conn.execute(f"EXPLAIN (FORMAT JSON) {sql.MARK_IDLE}", params).fetchone()[0]
        scans = _scans(json.loads(doc)[0]["Plan"] if isinstance(doc, str) else doc[0]["Plan"])
        seeks = [cond for _, index, cond in scans if index == "conversations_idle"]
        assert seeks and all("status" in cond for cond in seeks), scans
        walks = [(kind, index) for kind, index, cond in scans if index and not cond]
        assert not walks, scans
        assert conn.execute(sql.MARK_IDLE, params).fetchall() == []  # none due
