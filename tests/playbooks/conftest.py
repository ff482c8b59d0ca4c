"""Fixtures of the playbook tests: the fake LLM process and service clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.process import FakeProcess


@pytest.fixture
def fake_llm() -> Iterator[FakeProcess]:
    """The fake Messages API, as a process."""
    fake = FakeProcess("llm.py").started()
    yield fake
    fake.stop()
