"""Backends for threadkeep's own ThreadkeepSession tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _backends import BACKENDS, backend_url, cleanup

collect_ignore = ["threadkeep_repoint.py"]


@pytest.fixture(params=[b for b in BACKENDS if b != "memory"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store several processes can open at once."""
    url = backend_url(request.param, tmp_path)
    yield url
    cleanup(url)
