"""Fixtures of the Redis-only tests: a key prefix of the test's own, servers of its own."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests._servers import REDIS_BASE, RedisServer, free_port, require_reachable
from tests.backends.redis._helpers import SHARES
from threadkeep.backends.redis._keys import Keys


@pytest.fixture
def prefix() -> Iterator[str]:
    require_reachable(REDIS_BASE)
    name = f"tk-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_BASE)
    keys = list(client.scan_iter(match=Keys(name).pattern, count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, appendonly=True)
    server.start()
    yield server
    if server.process is not None:
        server.resume()
    server.kill()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Three cluster-mode redis-servers, each owning a third of the slots."""
    nodes: list[RedisServer] = []
    try:
        for i in range(3):
            directory = tmp_path / f"node{i}"
            directory.mkdir()
            bus = free_port()
            node = RedisServer(
                directory,
                appendonly=False,
                extra=(
                    *("--cluster-enabled", "yes", "--cluster-port", str(bus)),
                    *("--cluster-config-file", str(directory / "nodes.conf")),
                ),
            )
            node.bus = bus  # type: ignore[attr-defined]
            node.start()
            nodes.append(node)
        first = nodes[0].client()
        for node, (low, high) in zip(nodes, SHARES, strict=True):
            client = node.client()
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
            client.close()
            if node is not nodes[0]:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus)  # type: ignore[attr-defined]
        first.close()
        deadline = time.monotonic() + 30
        for node in nodes:
            client = node.client()
            while True:
                info = client.execute_command("CLUSTER", "INFO")
                if "cluster_state:ok" in info and "cluster_known_nodes:3" in info:
                    break
                assert time.monotonic() < deadline, f"cluster did not form: {info}"
                time.sleep(0.1)
            client.close()
        yield nodes
    finally:
        for node in nodes:
            node.kill()
