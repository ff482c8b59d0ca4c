"""``?replicas=N``: a change returns once N replicas have it (WAIT), so it survives a failover."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import threadkeep
from tests._servers import RedisServer
from tests.backends.redis._helpers import Writer

pytestmark = pytest.mark.redis


def _wait_for_link(replica: RedisServer) -> None:
    client = replica.client()
    deadline = time.monotonic() + 30
    while client.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not connect"
        time.sleep(0.05)
    client.close()


@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    (tmp_path / "primary").mkdir()
    (tmp_path / "replica").mkdir()
    primary = RedisServer(tmp_path / "primary")
    primary.start()
    replica = RedisServer(
        tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(primary.port))
    )
    try:
        replica.start()
        _wait_for_link(replica)
        yield primary, replica
    finally:
        for server in (primary, replica):
            if server.process is not None:
                server.resume()
            server.kill()


def test_a_change_waits_for_the_replica_and_fails_without_it(
    primary_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = primary_and_replica
    url = primary.url + "?prefix=ha&replicas=1&replicas_timeout=0.2&timeout=1&retries=1"
    with threadkeep.open(url) as store:
        conv = store.start("c-1")
        assert store.append(conv.id, "user", "replicated").seq == 1
        replica.pause()  # the replica acknowledges nothing
        try:
            started = time.monotonic()
            with pytest.raises(threadkeep.BackendUnavailable, match="0 of 1 replicas"):
                store.append(conv.id, "user", "not acknowledged")
            assert time.monotonic() - started < 5
            assert store.messages(conv.id)[-1].seq >= 1  # reads do not wait
        finally:
            replica.resume()
        # the unacknowledged append was applied on the primary; a retry with the same key is
        # answered as a replay once the replica has it
        kept = store.append(conv.id, "user", "retried", idempotency_key="k-1")
        assert store.append(conv.id, "user", "retried", idempotency_key="k-1").seq == kept.seq
    with threadkeep.open(primary.url + "?prefix=ha&timeout=1") as store:
        replica.pause()  # without ?replicas a change does not wait
        try:
            assert store.append(conv.id, "user", "unwaited").seq == kept.seq + 1
        finally:
            replica.resume()


@pytest.mark.timeout(120)
def test_every_acknowledged_write_survives_a_failover_to_the_replica(
    primary_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    """Appends with replicas=1 under load; the replica falls behind (paused), the primary is
    SIGKILLed, the replica promoted: every acknowledged append is there, while an append a
    store without ?replicas had acknowledged meanwhile is lost (what WAIT prevents)."""
    primary, replica = primary_and_replica
    url = primary.url + "?prefix=ha&replicas=1&replicas_timeout=0.5&timeout=1&retries=1"
    with threadkeep.open(url) as store, threadkeep.open(primary.url + "?prefix=ha") as unwaited:
        conv = store.start("c-1")
        other = unwaited.start("c-2")
        writer = Writer(store, conv.id)
        writer.start()
        writer.wait_for(300)
        replica.pause()  # replication stops here: nothing more is acknowledged …
        admin = primary.client()
        admin.execute_command("CLIENT", "KILL", "TYPE", "replica")  # … nor sent
        admin.close()
        writer.wait_for_failures(1)
        assert unwaited.append(other.id, "user", "acknowledged, not replicated").seq == 1
        primary.kill()  # SIGKILL: what the replica lacks is gone
        writer.stop.set()
        writer.join(30)
    replica.resume()
    client = replica.client()
    client.execute_command("REPLICAOF", "NO", "ONE")  # the failover
    client.close()
    acknowledged = writer.acknowledged
    assert len(acknowledged) >= 300
    with threadkeep.open(replica.url + "?prefix=ha") as store:
        kept: set[tuple[int, str]] = set()
        while page := store.messages(conv.id, after=len(kept), limit=1000):
            kept |= {(m.seq, m.content) for m in page}
        assert store.messages(other.id) == []  # the control: acknowledged without WAIT, lost
    lost = [a for a in acknowledged if a not in kept]
    assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged appends lost"


@pytest.mark.anyio
async def test_an_async_change_waits_for_the_replica(
    primary_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = primary_and_replica
    url = primary.url + "?prefix=ha&replicas=1&replicas_timeout=0.2&timeout=1&retries=1"
    store = await threadkeep.open_async(url)
    try:
        conv = await store.start("c-1")
        assert (await store.append(conv.id, "user", "replicated")).seq == 1
        replica.pause()
        try:
            with pytest.raises(threadkeep.BackendUnavailable, match="0 of 1 replicas"):
                await store.append(conv.id, "user", "not acknowledged")
        finally:
            replica.resume()
    finally:
        await store.aclose()
