"""Fixtures of the playbook tests: the fake LLM process and service clients."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from process import FakeProcess


@pytest.fixture
def fake_llm() -> Iterator[FakeProcess]:
    """The fake Messages API, as a process."""
    fake = FakeProcess("llm.py").start()
    yield fake
    fake.stop()
