"""Redis: listings with filters and dry-run sweeps run as bounded scripts, never one long one.

Redis runs scripts one at a time for every client of the server, so the work of one script
must not grow with a tenant's size. These tests watch the scripts with MONITOR on a server of
their own and count what each script call touches (not how long it took).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import threadkeep
from tests._servers import RedisServer
from tests.backends.redis._helpers import monitor
from threadkeep import ManualClock
from threadkeep._rules import plans
from threadkeep.backends.redis import _flows

pytestmark = pytest.mark.redis

CONVERSATIONS = 2500


def _per_script(seen: list[dict[str, Any]], begin: str, end: str, command: str) -> list[int]:
    """How many times scripts between the ECHO markers ran ``command``, per EVALSHA."""
    start = next(i for i, c in enumerate(seen) if c["command"] == f"ECHO {begin}")
    stop = next(i for i, c in enumerate(seen) if c["command"] == f"ECHO {end}")
    groups = [0]
    for c in seen[start + 1 : stop]:
        name = str(c["command"]).split(" ", 1)[0].upper()
        if c["client_type"] != "lua" and name == "EVALSHA":
            groups.append(0)
        elif c["client_type"] == "lua" and name == command:
            groups[-1] += 1
    return groups


def _watched(server: RedisServer, work: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    ready = threading.Event()
    watcher = threading.Thread(target=monitor, args=(server, seen, ready))
    watcher.start()
    assert ready.wait(10)
    raw = server.client()
    try:
        work(raw)
    finally:
        raw.echo("monitor-stop")
        watcher.join(30)
        raw.close()
    return seen


def test_a_filter_matching_nothing_scans_in_bounded_scripts(own_server: RedisServer) -> None:
    """2,500 conversations, a stage and an agent nobody has: every conversation is looked at
    once, by scripts of at most LIST_SCAN conversations each."""
    with threadkeep.open(own_server.url + "?prefix=big") as store:
        for i in range(CONVERSATIONS):
            store.start(f"c{i}", tenant="big", stage="Q1", agent_id="a1")

        def work(raw: Any) -> None:
            raw.echo("stage-begin")
            assert store.list(tenant="big", stage="nope").items == []
            raw.echo("stage-end")
            raw.echo("agent-begin")
            assert store.list(tenant="big", agent_id="nobody", limit=5).items == []
            raw.echo("agent-end")

        seen = _watched(own_server, work)
    for filtered in ("stage", "agent"):
        reads = _per_script(seen, f"{filtered}-begin", f"{filtered}-end", "HGETALL")
        assert sum(reads) == CONVERSATIONS, reads  # each looked at once: no rescans
        assert max(reads) <= _flows.LIST_SCAN, reads
        assert len(reads) >= 3, reads  # 2,500 / 1,000: three scripts at least


@pytest.mark.parametrize("scan", [1, 2, 3, 7])
def test_pages_across_bounded_scans_keep_keyset_order(
    own_server: RedisServer, monkeypatch: pytest.MonkeyPatch, scan: int
) -> None:
    """With tiny scan budgets, paging a filtered listing (many equal activity times: a manual
    clock) gives every match once, in the order of an unfiltered listing."""
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    with threadkeep.open(own_server.url + f"?prefix=keys{scan}", clock=clock) as store:
        for i in range(40):
            if i % 9 == 0:
                clock.advance(timedelta(seconds=1))
            store.start(f"c{i}", tenant="t", stage="hot" if i % 3 == 0 else "cold")
        expected = [c.id for c in store.list(tenant="t", limit=100).items if c.stage == "hot"]
        monkeypatch.setattr(_flows, "LIST_SCAN", scan)
        got: list[str] = []
        cursor = None
        while True:
            page = store.list(tenant="t", stage="hot", limit=4, cursor=cursor)
            got += [c.id for c in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert got == expected
    assert len(got) == 14


def test_a_dry_run_sweep_counts_in_bounded_scripts(own_server: RedisServer) -> None:
    """2,500 expired and 700 idle conversations: the dry run counts them all in scripts of at
    most SWEEP_BATCH entries per index, and its counts are what the sweep then does."""
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    with threadkeep.open(own_server.url + "?prefix=dry", clock=clock) as store:
        for i in range(CONVERSATIONS):
            store.start(f"old{i}", tenant="t")
        clock.advance(timedelta(days=8))  # past the default 7-day ttl
        for i in range(700):
            store.append(store.start(f"new{i}", tenant="t").id, "user", "hi")  # active
        clock.advance(timedelta(hours=1))  # past the default 30-minute idle time
        reports: list[Any] = []

        def work(raw: Any) -> None:
            raw.echo("dry-begin")
            reports.append(store.sweep(dry_run=True))
            raw.echo("dry-end")

        seen = _watched(own_server, work)
        assert store.counts(tenant="t").by_status == {"active": 700}  # the dry run changed nothing
        done = store.sweep()
    (dry,) = reports
    assert (dry.purged, dry.idled) == (CONVERSATIONS, 700)
    assert (done.purged, done.idled) == (dry.purged, dry.idled)
    reads = _per_script(seen, "dry-begin", "dry-end", "HGETALL")
    assert sum(reads) == CONVERSATIONS + 700 + CONVERSATIONS  # expired ones sit in both indexes
    assert max(reads) <= 2 * plans.SWEEP_BATCH, reads
