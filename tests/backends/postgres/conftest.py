"""Fixtures of the PostgreSQL-only tests: a schema of the test's own, a private cluster."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests._servers import POSTGRES_BASE, PostgresCluster, postgres_cluster, require_reachable
from tests.backends.postgres._helpers import drop_schema


@pytest.fixture
def schema() -> Iterator[str]:
    require_reachable(POSTGRES_BASE)
    name = f"tk_test_{uuid.uuid4().hex[:12]}"
    yield name
    drop_schema(name)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster (initdb in a temp dir, a free loopback port)."""
    with postgres_cluster() as own:
        yield own
