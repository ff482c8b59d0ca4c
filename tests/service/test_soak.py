"""The fault soak (``bench/soak.py``), shortened: faults under load lose nothing.

12 s, 20 sessions, 2 workers per backend, with the same faults as the full run (a worker
SIGKILLed twice, the backend taken away for 3 s and brought back); the full run and its last
result are in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import shutil

import pytest
from bench.soak import MUST_BE_ZERO, run

from tests._servers import unavailable

NEEDS = {"sqlite": None, "redis": "redis-server", "postgres": "initdb"}


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(NEEDS))
def test_a_short_soak_loses_nothing(backend: str) -> None:
    needed = NEEDS[backend]
    if needed is not None and shutil.which(needed) is None:
        unavailable(f"{needed} is not installed: the {backend} soak needs a private server")
    args = argparse.Namespace(
        backend=backend, seconds=12.0, sessions=20, workers=2, outage=3.0, give_up=40.0
    )
    report = run(args)
    assert {name: report[name] for name in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0)
    assert report["acknowledged"] > 50
    assert report["readyz_recovery_s"] is not None, report["timeline"]
    assert report["readyz_recovery_s"] < 15
