"""Helpers of the Redis-only tests: servers of their own, a lossy proxy, a workload."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

import threadkeep
from tests._servers import REDIS_BASE, RedisServer
from threadkeep import BackendUnavailable
from threadkeep.backends.redis._keys import Keys

#: The shared server (host:port) the tests without a server of their own use.
SHARED = urlsplit(REDIS_BASE).netloc


def raw_client() -> Any:
    """A redis-py client of the shared server (replies decoded)."""
    return redis.Redis.from_url(REDIS_BASE, decode_responses=True)


class Writer(threading.Thread):
    """Appends to one conversation without pause, recording what was acknowledged."""

    def __init__(self, store: threadkeep.Store, conversation_id: str) -> None:
        super().__init__()
        self.store, self.conversation_id = store, conversation_id
        self.acknowledged: list[tuple[int, str]] = []
        self.failures: list[tuple[float, BackendUnavailable]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            started = time.monotonic()
            try:
                message = self.store.append(self.conversation_id, "user", f"w{i}")
            except BackendUnavailable as exc:
                self.failures.append((time.monotonic() - started, exc))
            else:
                self.acknowledged.append((message.seq, message.content))

    def wait_for_failures(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.failures) < count and self.is_alive():
            assert time.monotonic() < deadline, "calls during the outage neither failed nor ended"
            time.sleep(0.01)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.acknowledged) < count and self.is_alive():
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.01)


# Outage bounds: with retries=10 a call that ignored its 1 s deadline would take several
# seconds (backoffs alone add up to about 4 s, frozen attempts to 11 s); the bounds below are
# that loose on purpose, as the test machine is shared.
CALL_BOUND = 5.0


def workload(store: threadkeep.Store) -> None:
    """Attempts every method of the public API at least once."""
    conv = store.resume("c-1", tenant="t-1", channel="sms", stage="Q0", metadata={"x": 1})
    assert store.resume("c-1", tenant="t-1").id == conv.id
    assert store.find_open("c-1", tenant="t-1") is not None
    store.append(conv.id, "user", "hi", idempotency_key="k-1")
    store.append(conv.id, "user", "hi", idempotency_key="k-1")
    store.append(conv.id, "assistant", "hello")
    store.get(conv.id)
    store.messages(conv.id, last=5)
    store.messages(conv.id, after=1, limit=5)
    store.context(conv.id)
    version = store.save_state(conv.id, {"stage": "Q1"}, expected_version=0)
    store.save_state(conv.id, {"stage": "Q2"}, expected_version=version)
    store.load_state(conv.id)
    store.rollback_state(conv.id, to_version=version)
    store.set_stage(conv.id, "Q2")
    store.set_status(conv.id, "waiting_agent")
    store.set_status(conv.id, "active")
    with store.turn(conv.id, lease=5) as turn:
        turn.append("assistant", "fenced")
    store.list(tenant="t-1", status="active")
    store.list(tenant="t-1", contact_id="c-1")
    store.counts(tenant="t-1")
    store.remember("c-1", "prefers", "text", tenant="t-1", tier="critical")
    store.recall("c-1", tenant="t-1")
    last = list(store.events(tenant="t-1"))[-1].id
    assert list(store.events(tenant="t-1", after=last, timeout=0.2)) == []  # XREAD BLOCK
    store.sweep(dry_run=True)
    store.sweep()
    store.close_conversation(conv.id)
    other = store.start("c-2", tenant="t-1")
    store.delete(other.id)
    store.delete_contact("c-1", tenant="t-1")


#: Commands the store may send itself (INFO, GET, EXISTS, SET: once, to detect a Cluster and
#: read or record the layout); all else is in scripts.
DIRECT = {
    *("EVALSHA", "SCRIPT", "HGETALL", "XREAD", "PING", "CLIENT", "HELLO", "SELECT", "INFO"),
    *("GET", "EXISTS", "SET"),
    *("MULTI", "HMGET", "LRANGE", "EXEC"),  # messages(last=): one transaction, no script
}


def monitor(server: RedisServer, sink: list[dict[str, object]], ready: threading.Event) -> None:
    client = server.client()
    with client.monitor() as monitor:
        ready.set()
        for command in monitor.listen():
            if command["command"] == "ECHO monitor-stop":
                break
            sink.append(command)
    client.close()


class LosingProxy:
    """A TCP relay to a server; once armed, it delivers the next EVALSHA and drops its reply.

    Dropping the reply closes the client's connection, as a network fault after the server
    ran the script would: the store sees a connection error and sends the script again.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.armed = False
        self.dropped = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            swallow = threading.Event()
            threading.Thread(target=self._up, args=(client, server, swallow), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, swallow), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, swallow: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                with self.lock:
                    if self.armed and b"EVALSHA" in data.upper():
                        self.armed = False
                        swallow.set()
                server.sendall(data)
        except OSError:
            pass
        finally:
            shut(server)

    def _down(self, server: socket.socket, client: socket.socket, swallow: threading.Event) -> None:
        try:
            while data := server.recv(65536):
                if swallow.is_set():
                    self.dropped += 1
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            shut(client)
            shut(server)

    def arm(self) -> None:
        with self.lock:
            self.armed = True

    def close(self) -> None:
        self.listener.close()


def shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


SHARES = ((0, 5460), (5461, 10922), (10923, 16383))


def others_after_close(client: redis.Redis) -> list[dict[str, Any]]:
    """The server's clients other than ``client``, once closed sockets were seen (up to 5 s).

    A client closes its sockets at once, but the server drops them from ``CLIENT LIST`` only
    when its event loop reads each close, which may come after the next command it serves.
    """
    deadline = time.monotonic() + 5
    while True:
        others = [c for c in client.client_list() if c["cmd"] != "client|list"]
        if not others or time.monotonic() > deadline:
            return others
        time.sleep(0.02)


def prefix_on(nodes: list[RedisServer], index: int) -> str:
    """A prefix whose hash tag lands in the slots of nodes[index]."""
    client = nodes[0].client()
    low, high = SHARES[index]
    for i in range(1000):
        if low <= client.cluster("keyslot", Keys(f"cl{i}").events) <= high:
            client.close()
            return f"cl{i}"
    raise AssertionError("no prefix found")


def use_cluster_store(cluster: list[RedisServer], prefix: str) -> None:
    """Every method on a one-slot (``shard=none``) store whose slot is on the third node."""
    url = cluster[0].url + f"?prefix={prefix}&shard=none"
    with threadkeep.open(url) as store:  # … we dial the first
        workload(store)
        conv = store.start("c-9")
        store.append(conv.id, "user", "routed")
        owner = cluster[2].client()
        assert owner.exists(Keys(prefix).conversation(conv.id))
        dialed = cluster[0].client()
        with pytest.raises(redis.exceptions.MovedError):  # not on the node we dialed
            dialed.exists(Keys(prefix).conversation(conv.id))
        dialed.close()
        owner.script_flush()  # NOSCRIPT on the owning node: loaded again there
        assert store.append(conv.id, "user", "after flush").seq == 2
        assert [m.content for m in store.messages(conv.id)] == ["routed", "after flush"]
        owner.close()


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    ca_key, ca, key, csr, cert, ext = (
        directory / name for name in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt", "san.ext")
    )
    new_key = ("-newkey", "rsa:2048", "-nodes")
    openssl("req", "-x509", *new_key, "-days", "1", "-keyout", str(ca_key), "-out", str(ca),
             "-subj", "/CN=threadkeep-test-ca")  # fmt: skip
    openssl("req", *new_key, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


def hot_calls(store: Any, conversation_id: str) -> None:
    """The hot calls on a conversation holding one message, "warm": an append, a window read,
    a state save and its load."""
    store.append(conversation_id, "user", "hi")
    assert [m.content for m in store.messages(conversation_id, last=2)] == ["warm", "hi"]
    assert store.save_state(conversation_id, {"n": 1}) == 1
    assert store.load_state(conversation_id).value == {"n": 1}


async def ahot_calls(store: Any, conversation_id: str) -> None:
    """``hot_calls`` on an AsyncStore."""
    await store.append(conversation_id, "user", "hi")
    last = await store.messages(conversation_id, last=2)
    assert [m.content for m in last] == ["warm", "hi"]
    assert await store.save_state(conversation_id, {"n": 1}) == 1
    assert (await store.load_state(conversation_id)).value == {"n": 1}
