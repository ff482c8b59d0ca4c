"""Target backends for the moving-in suite (with ../_fixtures.py); the peers write to the real
local servers."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _backends import BACKENDS, backend_url, cleanup, servers

pytest_plugins = ("_fixtures",)

REDIS = servers.REDIS_BASE
POSTGRES = servers.POSTGRES_BASE


@pytest.fixture(params=[b for b in BACKENDS if b != "memory"])
def cli_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Stores the ``threadkeep`` command (another process) can open: not memory://."""
    url = backend_url(request.param, tmp_path)
    yield url
    cleanup(url)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    servers.require_reachable(REDIS)
    prefix = f"tk-peer-{uuid.uuid4().hex[:12]}"
    yield prefix
    servers._cleanup_redis(REDIS, prefix)


@pytest.fixture
def pg_table() -> Iterator[str]:
    servers.require_reachable(POSTGRES)
    import psycopg

    table = f"tk_peer_{uuid.uuid4().hex[:12]}"
    yield table
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
