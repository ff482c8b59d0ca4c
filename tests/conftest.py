"""Fixtures shared by every test: run id, clock, backends, and the sync/async store facade."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest

import threadkeep

sys.path.insert(0, str(Path(__file__).parent))

from _servers import cleanup_url, isolated_url, require_reachable

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


class _AsyncFacade:
    """Expose an AsyncStore with the sync Store's call shapes, through a blocking portal."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, store: threadkeep.AsyncStore):
        self._portal = portal
        self._store = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            async def run() -> Any:
                return await attr(*args, **kwargs)

            return self._portal.call(run)

        return call

    def __enter__(self) -> _AsyncFacade:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._portal.call(self._store.aclose)

    def events(self, **kwargs: Any) -> Iterator[threadkeep.Event]:
        async def collect() -> list[threadkeep.Event]:
            return [event async for event in self._store.events(**kwargs)]

        return iter(self._portal.call(collect))

    def turn(self, conversation_id: str, **kwargs: Any) -> AbstractContextManager[Any]:
        @asynccontextmanager
        async def wrapped() -> AsyncIterator[_AsyncTurnFacade]:
            async with self._store.turn(conversation_id, **kwargs) as turn:
                yield _AsyncTurnFacade(self._portal, turn)

        return self._portal.wrap_async_context_manager(wrapped())


class _AsyncTurnFacade:
    def __init__(self, portal: anyio.from_thread.BlockingPortal, turn: threadkeep.AsyncTurn):
        self._portal = portal
        self._turn = turn
        self.conversation_id = turn.conversation_id
        self.token = turn.token

    def append(self, *args: Any, **kwargs: Any) -> threadkeep.Message:
        async def run() -> threadkeep.Message:
            return await self._turn.append(*args, **kwargs)

        return self._portal.call(run)


@pytest.fixture(params=["sync", "async"])
def make_store(
    request: pytest.FixtureRequest, store_url: str, clock: threadkeep.ManualClock
) -> Iterator[Callable[..., Any]]:
    """Return a factory ``make_store(**open_kwargs)``; every store it opens shares the URL."""
    opened: list[Any] = []
    with anyio.from_thread.start_blocking_portal() as portal:

        def factory(**kwargs: Any) -> Any:
            kwargs.setdefault("clock", clock)
            if request.param == "sync":
                store: Any = threadkeep.open(store_url, **kwargs)
            else:

                async def open_it() -> threadkeep.AsyncStore:
                    return await threadkeep.open_async(store_url, **kwargs)

                store = _AsyncFacade(portal, portal.call(open_it))
            opened.append(store)
            return store

        yield factory
        for store in opened:
            store.close()


@pytest.fixture
def store(make_store: Callable[..., Any]) -> Any:
    """Return an open store of each backend × API, on the test's ManualClock."""
    return make_store()
