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


def test_idle_batches_seek_by_status(schema: str) -> None:
    """Sweep's idle batch seeks (status, idle_us): rows idled or closed long ago are not read."""
    params = {"now": 10**15, "from": ["new", "active"], "to": "idle", "n": 100}
    scans = _plan(schema, sql.MARK_IDLE, params)
    seeks = [cond for _, index, cond in scans if index == "conversations_idle"]
    assert seeks and all("status" in cond for cond in seeks), scans
