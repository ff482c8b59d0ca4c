"""Fixtures the framework suites share, as a pytest plugin: ``pytest_plugins = ("_fixtures",)``.

Each suite's conftest puts this folder on ``sys.path`` first (the suites run with their own
rootdirs and venvs, where ``tests`` is not importable as a package).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _backends import BACKENDS, backend_url, cleanup

import threadkeep


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url = backend_url(request.param, tmp_path)
    yield url
    cleanup(url)


@pytest.fixture(params=["async", "sync"])
async def open_store(
    request: pytest.FixtureRequest, store_url: str
) -> AsyncIterator[Callable[[], Any]]:
    """Open stores on the run's URL; memory:// hands out one store (it cannot be shared)."""
    opened: list[Any] = []

    def make() -> Any:
        if store_url.startswith("memory:") and opened:
            return opened[0]
        api = threadkeep.open_async if request.param == "async" else threadkeep.open
        store = api(store_url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        if isinstance(store, threadkeep.Store):
            store.close()
        else:
            await store.aclose()
