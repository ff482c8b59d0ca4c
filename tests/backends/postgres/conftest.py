"""Fixtures of the PostgreSQL-only tests: a schema of the test's own, a private cluster."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._servers import POSTGRES_BASE, require_reachable
from tests.backends.postgres._helpers import Cluster, drop_schema


@pytest.fixture
def schema() -> Iterator[str]:
    require_reachable(POSTGRES_BASE)
    name = f"tk_test_{uuid.uuid4().hex[:12]}"
    yield name
    drop_schema(name)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A private PostgreSQL cluster (initdb in a temp dir, a free loopback port)."""
    with tempfile.TemporaryDirectory(prefix="tk-pg-") as tmp:
        os.chmod(tmp, 0o755)
        own = Cluster(Path(tmp))
        own.start()
        try:
            yield own
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                own.stop()
