"""A real three-node Redis Cluster: sync and async stores, and the whole conformance suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import threadkeep
from tests._servers import RedisServer
from tests.backends.redis._helpers import prefix_on, use_cluster_store
from threadkeep.backends.redis._keys import Keys

pytestmark = pytest.mark.redis


def test_a_store_works_on_a_multi_node_cluster(cluster: list[RedisServer]) -> None:
    prefix = prefix_on(cluster, 2)  # the store lives on the third node …
    use_cluster_store(cluster, prefix)
    for node in cluster:  # close() released the store's connections to every node
        client = node.client()
        assert [c for c in client.client_list() if c["cmd"] != "client|list"] == []
        client.close()


@pytest.mark.anyio
async def test_an_async_store_works_on_a_multi_node_cluster(cluster: list[RedisServer]) -> None:
    prefix = prefix_on(cluster, 1)
    store = await threadkeep.open_async(cluster[0].url + f"?prefix={prefix}")
    try:
        conv = await store.resume("c-1", tenant="t-1")
        await store.append(conv.id, "user", "hi", idempotency_key="k-1")
        await store.append(conv.id, "user", "hi", idempotency_key="k-1")
        await store.save_state(conv.id, {"stage": "Q1"}, expected_version=0)
        assert [m.seq for m in await store.messages(conv.id)] == [1]
        assert (await store.list(tenant="t-1")).items[0].id == conv.id
        events = [e async for e in store.events(tenant="t-1")]
        assert [e.kind for e in events][:2] == ["conversation.started", "message.appended"]
        late = [e async for e in store.events(tenant="t-1", after=events[-1].id, timeout=0.2)]
        assert late == []  # XREAD BLOCK routed to the owning node
        await store.delete(conv.id)
        owner = cluster[1].client()
        assert not owner.exists(Keys(prefix).conversation(conv.id))
        owner.close()
    finally:
        await store.aclose()
    for node in cluster:  # aclose() released the store's connections to every node
        client = node.client()
        assert [c for c in client.client_list() if c["cmd"] != "client|list"] == []
        client.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_conformance_suite_passes_on_a_multi_node_cluster(
    cluster: list[RedisServer], tmp_path: Path
) -> None:
    """Run tests/conformance's redis leg, unchanged, against the cluster (dialing node 0)."""
    tests = Path(__file__).resolve().parents[1]
    env = {**os.environ, "THREADKEEP_TEST_REDIS_BASE": cluster[0].url}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(tests / "conformance"), "-k", "redis", "-q",
         "-p", "no:cacheprovider", "-x"],
        cwd=tests.parent, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]
    scripts_run = 0
    for node in cluster:  # the suite really ran on the cluster, not on the shared server
        client = node.client()
        scripts_run += client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        client.close()
    assert scripts_run > 1000
