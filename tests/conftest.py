"""Fixtures shared by every test: run id, clock, backends × APIs (see ``_stores``), fakes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import threadkeep
from tests._servers import cleanup_url, isolated_url, require_reachable
from tests._stores import store_factory
from tests.fakes.process import FakeProcess

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

#: Backends that several processes can share (memory:// lives in one process).
SHARED_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

_USED_URLS: set[str] = set()


@pytest.fixture(scope="session")
def run_id() -> str:
    """Return an id unique to this pytest run (names Redis prefixes and PG schemas)."""
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="session", autouse=True)
def _cleanup_servers() -> Iterator[None]:
    yield
    for url in sorted(_USED_URLS):
        cleanup_url(url)


@pytest.fixture
def fake_llm() -> Iterator[FakeProcess]:
    """The fake Messages API (``tests/fakes/llm.py``), as a process."""
    fake = FakeProcess("llm.py").started()
    yield fake
    fake.stop()


@pytest.fixture
def clock() -> threadkeep.ManualClock:
    """Return a ManualClock starting at a fixed, whole-second UTC time."""
    return threadkeep.ManualClock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))


def _url_for(kind: str, tmp_path: Path, run_id: str) -> str:
    url = isolated_url(kind, tmp_path, run_id)
    require_reachable(url)
    _USED_URLS.add(url)
    return url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path, run_id: str) -> str:
    """Return an isolated URL of each backend."""
    return _url_for(str(request.param), tmp_path, run_id)


@pytest.fixture(params=SHARED_BACKENDS)
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path, run_id: str) -> str:
    """Return an isolated URL of each backend usable from several processes."""
    return _url_for(str(request.param), tmp_path, run_id)


@pytest.fixture(params=BACKENDS)
def lone_store_url(request: pytest.FixtureRequest, tmp_path: Path, run_id: str) -> str:
    """Return a URL of each backend that no other test uses (its own file, prefix or schema)."""
    return _url_for(str(request.param), tmp_path, f"{run_id}_{uuid.uuid4().hex[:8]}")


@pytest.fixture
def lone_store(api: str, lone_store_url: str, clock: threadkeep.ManualClock) -> Iterator[Any]:
    """Return an open store of each backend × API that no other test shares.

    For assertions over the whole store, such as sweep() counts, which other tests would skew.
    """
    with store_factory(api, lone_store_url, clock) as make:
        yield make()


@pytest.fixture(params=SHARED_BACKENDS)
def own_store_url(request: pytest.FixtureRequest, tmp_path: Path, run_id: str) -> str:
    """Return a URL of each backend but memory that no other test uses (own prefix/schema).

    For tests that see the whole store: event numbers, sweeps.
    """
    return _url_for(str(request.param), tmp_path, f"{run_id}_{uuid.uuid4().hex[:8]}")


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> str:
    """Return each API: ``sync`` (Store) and ``async`` (AsyncStore)."""
    return str(request.param)


@pytest.fixture
def make_store(
    api: str, store_url: str, clock: threadkeep.ManualClock
) -> Iterator[Callable[..., Any]]:
    """Return a factory ``make_store(**open_kwargs)``; every store it opens shares the URL."""
    with store_factory(api, store_url, clock) as factory:
        yield factory


@pytest.fixture
def store(make_store: Callable[..., Any]) -> Any:
    """Return an open store of each backend × API, on the test's ManualClock."""
    return make_store()
