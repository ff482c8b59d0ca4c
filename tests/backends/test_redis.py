"""Redis-only checks: script reloading, native TTLs, bounded memory, outages and durability.

Tests against the shared server use their own key prefix and delete only their keys; tests
that flush scripts or stop the server start their own ``redis-server`` on a free port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import threadkeep
from threadkeep import BackendUnavailable, Limits, Retention
from threadkeep.backends.redis._keys import Keys

redis = pytest.importorskip("redis")

pytestmark = pytest.mark.redis

SHARED = "127.0.0.1:6379"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _reachable(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=1):
            return None
    except OSError as exc:
        return f"redis not reachable at {host}:{port} ({type(exc).__name__})"


def _require_shared() -> None:
    reason = _reachable("127.0.0.1", 6379)
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def prefix() -> Iterator[str]:
    _require_shared()
    name = f"tk-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = list(client.scan_iter(match=Keys(name).pattern, count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _raw() -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=6379, decode_responses=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnServer:
    """A redis-server of this test's own, in a temporary directory."""

    def __init__(self, directory: Path, *, appendonly: bool) -> None:
        self.directory = directory
        self.port = _free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--save", "", "--daemonize", "no"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
                if client.ping():
                    client.close()
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """Stop the server at once (SIGKILL): only fsynced writes survive."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    if not Path(REDIS_SERVER).exists():
        reason = f"redis-server binary not found at {REDIS_SERVER}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    server = OwnServer(tmp_path, appendonly=True)
    server.start()
    yield server
    server.kill()


def test_scripts_reload_after_script_flush(own_server: OwnServer) -> None:
    with threadkeep.open(own_server.url + "?prefix=flush") as store:
        conv = store.start("c-1")
        store.append(conv.id, "user", "before")
        client = redis.Redis(host="127.0.0.1", port=own_server.port)
        client.script_flush()
        assert client.script_exists("0" * 40) == [False]
        message = store.append(conv.id, "user", "after")
        assert message.seq == 2
        assert [m.content for m in store.messages(conv.id)] == ["before", "after"]
        client.close()


def test_every_key_of_a_conversation_carries_the_sliding_ttl(prefix: str) -> None:
    ttl = timedelta(hours=2)
    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}") as store:
        conv = store.start("c-1", retention=Retention(ttl=ttl))
        store.append(conv.id, "user", "hi", idempotency_key="k-1")
        store.append(conv.id, "user", "no key")
        store.save_state(conv.id, {"stage": "Q1"})
        raw = _raw()
        keys = [k for k in raw.scan_iter(match=Keys(prefix).pattern) if conv.id in k]
        assert len(keys) >= 5, keys
        for key in keys:
            pttl = raw.pttl(key)
            # never shorter than the logical ttl; reclaimed at most an hour after it
            assert ttl.total_seconds() * 1000 <= pttl <= (ttl.total_seconds() + 3601) * 1000, key
        forever = store.start("c-2", retention=Retention(ttl=None))
        store.append(forever.id, "user", "kept until deleted")
        for key in [k for k in raw.scan_iter(match=Keys(prefix).pattern) if forever.id in k]:
            assert raw.pttl(key) == -1, key
        raw.close()


def test_idempotency_keys_and_event_log_are_bounded(prefix: str) -> None:
    url = f"redis://{SHARED}/0?prefix={prefix}&idempotency_keys=5"
    with threadkeep.open(url, limits=Limits(events_kept=20)) as store:
        conv = store.start("c-1")
        for i in range(30):
            store.append(conv.id, "user", f"m{i}", idempotency_key=f"k-{i}")
        for i in range(150):
            store.append(conv.id, "user", f"n{i}")
        raw = _raw()
        remembered = raw.hkeys(Keys(prefix).idempotency(conv.id))
        caller_keys = [k for k in remembered if not k.startswith("\t")]
        assert sorted(caller_keys) == sorted(f"k-{i}" for i in range(25, 30))
        assert len(remembered) - len(caller_keys) <= 64  # internal retry keys
        # the newest keys still deduplicate
        assert store.append(conv.id, "user", "again", idempotency_key="k-29").content == "m29"
        # approximate trimming keeps whole stream nodes (100 entries) at most beyond the bound
        assert raw.xlen(Keys(prefix).events) <= 20 + 100
        events = list(store.events(after=str(int(raw.get(Keys(prefix).base + "evn")) - 20)))
        assert len(events) == 20
        raw.close()


def test_unreachable_server_names_host_not_password() -> None:
    port = _free_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/0?timeout=1&retries=2"
    with threadkeep.open(url) as store:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            store.start("c-1")
        assert time.monotonic() - started < 2
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "s3cret" not in message
    assert "ConnectionError" in message
    assert isinstance(info.value.__cause__, redis.ConnectionError)


def test_outage_fails_fast_then_recovers_without_reopening(own_server: OwnServer) -> None:
    url = own_server.url + "?prefix=outage&timeout=1&retries=3"
    with threadkeep.open(url) as store:
        conv = store.start("c-1")
        acknowledged = [store.append(conv.id, "user", f"m{i}").seq for i in range(50)]
        store.save_state(conv.id, {"stage": "Q3"})

        own_server.kill()
        down_since = time.monotonic()
        failures = 0
        while time.monotonic() - down_since < 3:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable) as info:
                store.append(conv.id, "user", "during the outage")
            assert time.monotonic() - started < 2.5  # the 1 s timeout, never a hang
            assert f"127.0.0.1:{own_server.port}" in str(info.value)
            failures += 1
        assert failures >= 2

        own_server.start()
        message = store.append(conv.id, "user", "after the outage")  # same Store object
        assert message.seq == len(acknowledged) + 1
        seqs = [m.seq for m in store.messages(conv.id, after=0, limit=1000)]
        assert seqs == [*acknowledged, message.seq]
        assert store.load_state(conv.id).value == {"stage": "Q3"}
        assert store.get(conv.id).message_count == len(acknowledged) + 1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_async_outage_recovers(own_server: OwnServer) -> None:
    url = own_server.url + "?prefix=aoutage&timeout=1&retries=1"
    store = await threadkeep.open_async(url)
    try:
        conv = await store.start("c-1")
        await store.append(conv.id, "user", "before")
        own_server.kill()
        with pytest.raises(BackendUnavailable):
            await store.append(conv.id, "user", "during")
        own_server.start()
        after = await store.append(conv.id, "user", "after")
        assert after.seq == 2
    finally:
        await store.aclose()
