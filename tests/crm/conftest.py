"""Fixtures of the GoHighLevel tests: the map file and the fake GoHighLevel API process."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from _ghl_helpers import LOCATION, MAP
from process import FakeProcess


@pytest.fixture
def map_file(tmp_path: Path) -> Path:
    path = tmp_path / "ghl-map.json"
    path.write_text(json.dumps(MAP))
    return path


@pytest.fixture
def fake_ghl() -> Iterator[FakeProcess]:
    """The fake GoHighLevel API with token tok-1 for the location and two known contacts."""
    fake = FakeProcess(
        "ghl.py",
        "--token",
        f"tok-1:{LOCATION}",
        "--refresh",
        f"rt-0:{LOCATION}",
        "--contact",
        "cI08i1Bls3iTB9bKgFJh",
        "--contact",
        "cJAWDskpkJHbRbhAT7bs",
    ).start()
    yield fake
    fake.stop()


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def fake_ghl_small_window() -> Iterator[FakeProcess]:
    """The fake GoHighLevel API enforcing 5 requests per second."""
    fake = FakeProcess(
        "ghl.py", "--token", f"tok-1:{LOCATION}", "--limit", "5", "--window", "1"
    ).start()
    yield fake
    fake.stop()
