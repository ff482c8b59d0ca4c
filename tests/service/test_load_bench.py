"""The load benchmark (``bench/load.py``), shortened: it runs, and under a light load with idle
streams open nothing is lost, no request fails and idle streams hold no store connection.

5 s per phase, 10 sessions, 2 workers, 40 idle streams and 2 watchers per backend; the full run
and its results are in docs/performance.md ("Under load").
"""

from __future__ import annotations

import argparse
import shutil

import pytest
from bench.load import MUST_BE_ZERO, run

from tests._servers import unavailable

NEEDS = {"sqlite": None, "redis": "redis-server", "postgres": "initdb"}


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(NEEDS))
def test_a_short_load_run_loses_nothing(backend: str) -> None:
    needed = NEEDS[backend]
    if needed is not None and shutil.which(needed) is None:
        unavailable(f"{needed} is not installed: the {backend} run needs a private server")
    args = argparse.Namespace(
        backend=backend, sessions=10, seconds=5.0, think=0.1, workers=2, turns=20,
        followers=40, watchers=2, idle=1.0, redis_fsync="everysec",
    )  # fmt: skip
    report = run(args)
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
