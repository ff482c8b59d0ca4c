"""Service fixtures: TestClient apps over each backend, and real servers in child processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service._service_helpers import LiveServer, PrivateRedis, client_for


@pytest.fixture
def tenant() -> str:
    """A tenant of the test's own, so tests sharing a server never see each other's data."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_client(store_url: str, tenant: str) -> Iterator[Callable[..., Any]]:
    """Return ``make(**settings)``: a started TestClient over the test's backend.

    Unless ``api_keys`` is given, the app has one key, for the test's tenant, and the client
    sends it.
    """
    opened: list[Any] = []

    def make(**settings: Any) -> TestClient:
        if "api_keys" not in settings:
            key = f"key-{tenant}"
            settings.update(api_keys=f"{tenant}:{key}", key=key)
        cm = client_for(store_url, **settings)
        opened.append(cm)
        return cm.__enter__()

    yield make
    for cm in reversed(opened):
        cm.__exit__(None, None, None)


@pytest.fixture
def api(make_client: Callable[..., TestClient]) -> TestClient:
    """A client of the service over each backend (its own tenant and key, echo bot)."""
    return make_client()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Return ``start(store, workers=1, **env)``; every server started is stopped at the end."""
    started: list[LiveServer] = []

    def start(store: str, workers: int = 1, **env: str) -> LiveServer:
        server = LiveServer(store, tmp_path / f"server-{len(started)}.log", workers, **env)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A started redis-server of the test's own (fails under CI=true when there is none)."""
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
