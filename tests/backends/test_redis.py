"""Redis-only checks of issue 3 beyond the conformance suite.

One script per change (MONITOR), one Cluster slot per store (a cluster-mode server refuses
strays) and a real three-node cluster, script reloading, sliding native TTLs and bounded
memory, retries (lost replies, refused and frozen servers, outage under traffic with
``appendfsync always``), the pool, URLs (password, db, TLS) and a full server.

Tests against the shared server use their own key prefix and delete only their keys; tests
that flush scripts, stop, freeze or reconfigure a server start their own ``redis-server``s on
free ports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import threadkeep
from threadkeep import BackendUnavailable, Limits, Retention
from threadkeep.backends.redis._keys import Keys
from threadkeep.backends.redis._options import check_server

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

    def __init__(self, directory: Path, *, appendonly: bool, extra: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.port = _free_port()
        self.appendonly = appendonly
        self.extra = extra
        self.password = (
            extra[extra.index("--requirepass") + 1] if "--requirepass" in extra else None
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--save", "", "--daemonize", "no"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        args += self.extra
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client = redis.Redis(
                    host="127.0.0.1", port=self.port, socket_timeout=1, password=self.password
                )
                if client.ping():
                    client.close()
                    return
            except redis.RedisError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """Stop the server at once (SIGKILL): only fsynced writes survive."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a frozen server run again (SIGCONT)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _require_binary() -> None:
    if not Path(REDIS_SERVER).exists():
        reason = f"redis-server binary not found at {REDIS_SERVER}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    _require_binary()
    server = OwnServer(tmp_path, appendonly=True)
    server.start()
    yield server
    if server.process is not None:
        server.resume()
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
        # an event's id is its stream entry id, so a cursor resumes the stream itself
        stream_ids = [entry_id for entry_id, _ in raw.xrange(Keys(prefix).events)]
        assert [e.id for e in events] == stream_ids[-20:]
        # so is each conversation's list of its event ids (erasure deletes them without a scan)
        assert raw.llen(Keys(prefix).event_ids(conv.id)) <= 20
        # state versions are bounded too
        for i in range(15):
            store.save_state(conv.id, {"n": i})
        assert raw.hlen(Keys(prefix).states(conv.id)) == Limits().state_versions_kept
        raw.close()


def test_unreachable_server_names_host_not_password() -> None:
    port = _free_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/0?timeout=1&retries=2"
    with threadkeep.open(url) as store:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            store.start("c-1")
        assert time.monotonic() - started < _CALL_BOUND
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "s3cret" not in message
    assert "ConnectionError" in message
    assert "(after 3 attempts)" in message  # retries=2: sent three times
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    default = threadkeep.open(f"redis://127.0.0.1:{port}/0?timeout=5")
    with default, pytest.raises(BackendUnavailable, match=r"\(after 4 attempts\)"):
        default.get("c-1")  # three retries by default


def test_password_and_db_come_from_the_url(tmp_path: Path) -> None:
    _require_binary()
    server = OwnServer(tmp_path, appendonly=False, extra=("--requirepass", "s3cret"))
    server.start()
    try:
        with threadkeep.open(f"redis://:s3cret@127.0.0.1:{server.port}/3?prefix=auth") as store:
            conv = store.start("c-1")
        raw = redis.Redis(host="127.0.0.1", port=server.port, password="s3cret", db=3)
        assert raw.exists(Keys("auth").conversation(conv.id))
        raw.close()
        wrong = threadkeep.open(f"redis://:wrong@127.0.0.1:{server.port}/3?retries=3")
        with wrong, pytest.raises(BackendUnavailable) as info:
            wrong.get(conv.id)
        assert "wrong" not in str(info.value) and f"127.0.0.1:{server.port}" in str(info.value)
        assert isinstance(info.value.__cause__, redis.AuthenticationError)
        assert "attempts" not in str(info.value)  # a wrong password is not retried
    finally:
        server.kill()


def test_the_pool_holds_at_most_pool_size_connections(own_server: OwnServer) -> None:
    with threadkeep.open(own_server.url + "?prefix=pool&pool_size=2") as store:
        conv = store.start("c-1")
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                for i in range(20):
                    store.append(conv.id, "user", f"w{worker}-{i}")
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert store.get(conv.id).message_count == 160
        raw = own_server.client()
        clients = [c for c in raw.client_list() if c["cmd"] != "client|list"]
        assert len(clients) <= 2, clients
    assert [c for c in raw.client_list() if c["cmd"] != "client|list"] == []  # closed: released
    raw.close()


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
_CALL_BOUND = 5.0


def test_outage_fails_fast_then_recovers_without_reopening(own_server: OwnServer) -> None:
    url = own_server.url + "?prefix=outage&timeout=1&retries=10"
    with threadkeep.open(url) as store:
        conv = store.start("c-1")
        store.save_state(conv.id, {"stage": "Q3"})
        writer = Writer(store, conv.id)
        writer.start()
        try:
            writer.wait_for(50)
            own_server.kill()  # SIGKILL: only what appendfsync always wrote survives
            before = len(writer.acknowledged)
            time.sleep(3)
            writer.wait_for_failures(2)
            assert len(writer.acknowledged) == before  # nothing acknowledged while down
            own_server.start()
            writer.wait_for(before + 50)  # the same Store object, not reopened
            # the restarted server had no scripts: the store met NOSCRIPT and loaded them again
            errors = own_server.client().info("errorstats")
            assert errors["errorstat_NOSCRIPT"]["count"] >= 1, errors
        finally:
            writer.stop.set()
            writer.join(30)
        for elapsed, exc in writer.failures:
            assert elapsed < _CALL_BOUND  # failed within the timeout, never hung
            assert f"127.0.0.1:{own_server.port}" in str(exc)
            assert "ConnectionError" in str(exc)
            assert isinstance(exc.__cause__, redis.ConnectionError)
        stored = [(m.seq, m.content) for m in store.messages(conv.id, after=0, limit=1000)]
        assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))  # gap-free
        contents = [content for _, content in stored]
        assert len(set(contents)) == len(contents)  # nothing stored twice
        assert set(writer.acknowledged) <= set(stored)  # every acknowledged write survived
        assert store.load_state(conv.id).value == {"stage": "Q3"}
        assert store.get(conv.id).message_count == len(stored)


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


# ---- every change is one script, and every script stays in one Cluster slot -----------------


def _workload(store: threadkeep.Store) -> None:
    """Call every method of the public API at least once."""
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


#: Commands the store may send itself (INFO: once, to detect a Cluster); all else is in scripts.
_DIRECT = {"EVALSHA", "SCRIPT", "HGETALL", "XREAD", "PING", "CLIENT", "HELLO", "SELECT", "INFO"}


def _monitor(server: OwnServer, sink: list[dict[str, object]], ready: threading.Event) -> None:
    client = server.client()
    with client.monitor() as monitor:
        ready.set()
        for command in monitor.listen():
            if command["command"] == "ECHO monitor-stop":
                break
            sink.append(command)
    client.close()


def test_every_change_is_one_evalsha_and_reads_touch_no_history(own_server: OwnServer) -> None:
    seen: list[dict[str, object]] = []
    ready = threading.Event()
    watcher = threading.Thread(target=_monitor, args=(own_server, seen, ready))
    watcher.start()
    assert ready.wait(10)
    raw = own_server.client()
    try:
        with threadkeep.open(own_server.url + "?prefix=mon") as store:
            _workload(store)
            conv = store.start("c-3")
            raw.echo("appends-begin")
            for i in range(10):
                store.append(conv.id, "user", f"m{i}")
            raw.echo("appends-end")
            raw.echo("counts-begin")
            assert store.counts(tenant="default").total == 1
            raw.echo("counts-end")
            raw.echo("delete-begin")
            store.delete(conv.id)
            raw.echo("delete-end")
    finally:
        raw.echo("monitor-stop")
        watcher.join(10)
        raw.close()
    direct = [str(c["command"]) for c in seen if c["client_type"] != "lua"]
    names = [c.split(" ", 1)[0].upper() for c in direct]
    assert set(names) - {"ECHO"} <= _DIRECT, sorted(set(names))
    assert "XREAD" in names  # events() waits with XREAD BLOCK …
    assert any(" BLOCK " in c.upper() for c in direct if c.upper().startswith("XREAD"))
    # … and between the markers each append was exactly one EVALSHA, nothing else
    begin, end = direct.index("ECHO appends-begin"), direct.index("ECHO appends-end")
    assert names[begin + 1 : end] == ["EVALSHA"] * 10
    # inside those scripts the history is only pushed to (and its TTL renewed), never read
    start = next(i for i, c in enumerate(seen) if c["command"] == "ECHO appends-begin")
    stop = next(i for i, c in enumerate(seen) if c["command"] == "ECHO appends-end")
    in_appends = [str(c["command"]) for c in seen[start:stop] if c["client_type"] == "lua"]
    on_history = [c.split(" ", 1)[0].upper() for c in in_appends if f":m:{conv.id}" in c]
    assert on_history.count("RPUSH") == 10
    assert set(on_history) == {"RPUSH", "PEXPIREAT"}, on_history
    # counts() reads counting indexes, never the conversations themselves
    start = next(i for i, c in enumerate(seen) if c["command"] == "ECHO counts-begin")
    stop = next(i for i, c in enumerate(seen) if c["command"] == "ECHO counts-end")
    in_counts = {str(c["command"]).split(" ", 1)[0].upper() for c in seen[start:stop]}
    assert in_counts == {"ECHO", "EVALSHA", "ZCOUNT", "SMEMBERS"}, in_counts
    # erasing a conversation deletes its own events by id, without scanning the log
    start = next(i for i, c in enumerate(seen) if c["command"] == "ECHO delete-begin")
    stop = next(i for i, c in enumerate(seen) if c["command"] == "ECHO delete-end")
    in_delete = {str(c["command"]).split(" ", 1)[0].upper() for c in seen[start:stop]}
    assert "XDEL" in in_delete and "XRANGE" not in in_delete, in_delete


def test_scripts_never_leave_the_stores_cluster_slot(tmp_path: Path) -> None:
    _require_binary()
    server = OwnServer(
        tmp_path,
        appendonly=False,
        extra=(
            *("--cluster-enabled", "yes", "--cluster-port", str(_free_port())),
            *("--cluster-config-file", str(tmp_path / "nodes.conf")),
        ),
    )
    server.start()
    try:
        raw = server.client()
        raw.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 20
        while "cluster_state:ok" not in raw.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "single-node cluster did not come up"
            time.sleep(0.1)
        # the server really refuses a script that strays into another slot …
        with pytest.raises(redis.ResponseError, match="same slot"):
            raw.eval("#!lua\nredis.call('SET', '{other}:x', 1) return 1", 1, "{mine}:ev")
        # … and every script of the store stays in the slot of the key it routes by
        with threadkeep.open(server.url + "?prefix=cl") as store:
            _workload(store)
        with threadkeep.open(server.url + "?prefix=cl2") as store:
            _workload(store)  # a second store: its own tag, its own slot
        assert raw.cluster("keyslot", Keys("cl").events) != raw.cluster(
            "keyslot", Keys("cl2").events
        )
        raw.close()
    finally:
        server.kill()


# ---- TTLs renewed on activity ---------------------------------------------------------------


def test_activity_renews_the_ttl_of_every_key_of_the_conversation(prefix: str) -> None:
    ttl = timedelta(hours=2)
    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}") as store:
        conv = store.start("c-1", retention=Retention(ttl=ttl))
        store.append(conv.id, "user", "hi", idempotency_key="k-1")
        store.append(conv.id, "user", "no key")
        store.save_state(conv.id, {"stage": "Q1"})
        raw = _raw()
        keys = Keys(prefix).conversation_keys(conv.id)
        assert all(raw.exists(k) for k in keys), keys

        def shorten() -> None:
            for key in keys:
                raw.pexpire(key, 60_000)

        def renewed() -> bool:
            return all(raw.pttl(k) >= ttl.total_seconds() * 1000 for k in keys)

        for activity in (
            lambda: store.append(conv.id, "user", "again"),
            lambda: store.save_state(conv.id, {"stage": "Q2"}),
            lambda: store.set_stage(conv.id, "Q3"),
            lambda: store.set_status(conv.id, "waiting_agent"),
        ):
            shorten()
            activity()
            assert renewed(), [(k, raw.pttl(k)) for k in keys]
        raw.close()


# ---- a change resent after its reply was lost is applied once -------------------------------


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
            _shut(server)

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
            _shut(client)
            _shut(server)

    def arm(self) -> None:
        with self.lock:
            self.armed = True

    def close(self) -> None:
        self.listener.close()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def test_a_change_resent_after_a_lost_reply_is_applied_once(own_server: OwnServer) -> None:
    proxy = LosingProxy(own_server.port)
    url = f"redis://127.0.0.1:{proxy.port}/0?prefix=lost&retries=3&timeout=5"
    try:
        with threadkeep.open(url) as store:
            conv = store.start("c-1")
            warm = store.start("c-warm")  # load every script used below before faults start
            store.append(conv.id, "user", "first")
            store.save_state(conv.id, {"v": 0})
            with store.turn(warm.id):
                pass
            store.delete(warm.id)

            proxy.arm()
            message = store.append(conv.id, "user", "once")  # no caller key: the internal one
            assert proxy.dropped == 1
            assert message.seq == 2
            assert [m.content for m in store.messages(conv.id)] == ["first", "once"]
            appended = [e for e in store.events() if e.kind == "message.appended"]
            assert [e.data["seq"] for e in appended if e.conversation_id == conv.id] == [1, 2]

            proxy.arm()
            assert store.save_state(conv.id, {"v": 1}, expected_version=1) == 2
            assert proxy.dropped == 2
            assert store.load_state(conv.id).version == 2

            proxy.arm()
            with store.turn(conv.id, lease=5) as turn:  # not TurnInProgress against itself
                turn.append("assistant", "fenced")
            assert proxy.dropped == 3

            proxy.arm()
            again = store.start("c-2")
            assert proxy.dropped == 4
            assert [c.id for c in store.list(contact_id="c-2").items] == [again.id]

            proxy.arm()
            store.delete(conv.id)  # not ConversationNotFound for its own first run
            assert proxy.dropped == 5
            with pytest.raises(threadkeep.ConversationNotFound):
                store.get(conv.id)
    finally:
        proxy.close()


# ---- a frozen server: the call gives up within its timeout ------------------------------------


def test_a_frozen_server_fails_calls_within_the_timeout(own_server: OwnServer) -> None:
    url = own_server.url + "?prefix=frozen&timeout=1&retries=10"
    with threadkeep.open(url) as store:
        conv = store.start("c-1")
        store.append(conv.id, "user", "before")
        own_server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable) as info:
                store.append(conv.id, "user", "while frozen")
            # one attempt times out after 1 s and the deadline stops the retries
            assert time.monotonic() - started < _CALL_BOUND
            assert "TimeoutError" in str(info.value)
            assert isinstance(info.value.__cause__, redis.TimeoutError)
        finally:
            own_server.resume()
        after = store.append(conv.id, "user", "after")  # same Store object
        # the frozen append may have run once the server woke up: it is never stored twice
        contents = [m.content for m in store.messages(conv.id)]
        assert contents.count("while frozen") <= 1
        assert contents[-1] == "after" and after.seq == len(contents)


# ---- indexes stay proportional to live data ---------------------------------------------------


def test_tenant_and_contact_indexes_outlive_their_conversations_only(prefix: str) -> None:
    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}") as store:
        conv = store.start(
            "c-1", tenant="t-1", stage="Q1", retention=Retention(ttl=timedelta(hours=2))
        )
        store.append(conv.id, "user", "hi")
        raw = _raw()
        base = Keys(prefix).base
        indexes = [base + "t:t-1", base + "ts:active:t-1", base + "k:3:t-1:c-1"]
        indexes += [base + "xs:active:t-1", base + "xg:3:t-1:Q1", base + "gs:t-1"]  # counting
        conversation_at = raw.pexpiretime(Keys(prefix).conversation(conv.id))
        assert conversation_at > 0
        for key in indexes:
            assert raw.pexpiretime(key) >= conversation_at, key  # gone by itself, after it
        forever = store.start("c-1", tenant="t-1", stage="Q1", retention=Retention(ttl=None))
        store.append(forever.id, "user", "kept")
        for key in indexes:
            assert raw.pexpiretime(key) == -1, key  # holds a conversation kept forever
        raw.close()


def test_index_entries_of_conversations_redis_reclaimed_are_cleaned_lazily(prefix: str) -> None:
    clock = threadkeep.ManualClock()
    url = f"redis://{SHARED}/0?prefix={prefix}"
    with threadkeep.open(url, clock=clock) as store:
        gone = store.start("c-1", tenant="t-1", retention=Retention(ttl=timedelta(hours=1)))
        store.append(gone.id, "user", "hi")
        raw = _raw()
        keys = Keys(prefix)
        # what Redis does an hour after the logical expiry: the conversation's keys vanish
        raw.delete(*keys.conversation_keys(gone.id))
        clock.advance(timedelta(hours=3))
        store.start("c-2", tenant="t-1")  # any new conversation reaps a few such entries
        for key in (keys.base + "t:t-1", keys.base + "ts:active:t-1", keys.base + "idle",
                    keys.base + "xs:active:t-1"):  # fmt: skip
            assert raw.zscore(key, gone.id) is None, key
        assert raw.zscore(keys.base + "exp", f"{gone.id}\nt-1\nc-1") is None
        assert not raw.exists(keys.base + "k:3:t-1:c-1")
        assert any(e.conversation_id == gone.id for e in store.events())  # the log scan …
        assert store.sweep().purged == 0  # it was gone already: nothing to report …
        assert not any(e.conversation_id == gone.id for e in store.events())  # … is sweep's
        raw.close()


# ---- a real multi-node Redis Cluster --------------------------------------------------------

_SHARES = ((0, 5460), (5461, 10922), (10923, 16383))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[OwnServer]]:
    """Three cluster-mode redis-servers, each owning a third of the slots."""
    _require_binary()
    nodes: list[OwnServer] = []
    try:
        for i in range(3):
            directory = tmp_path / f"node{i}"
            directory.mkdir()
            bus = _free_port()
            node = OwnServer(
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
        for node, (low, high) in zip(nodes, _SHARES, strict=True):
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


def _prefix_on(nodes: list[OwnServer], index: int) -> str:
    """A prefix whose hash tag lands in the slots of nodes[index]."""
    client = nodes[0].client()
    low, high = _SHARES[index]
    for i in range(1000):
        if low <= client.cluster("keyslot", Keys(f"cl{i}").events) <= high:
            client.close()
            return f"cl{i}"
    raise AssertionError("no prefix found")


def test_a_store_works_on_a_multi_node_cluster(cluster: list[OwnServer]) -> None:
    prefix = _prefix_on(cluster, 2)  # the store lives on the third node …
    _use_cluster_store(cluster, prefix)
    for node in cluster:  # close() released the store's connections to every node
        client = node.client()
        assert [c for c in client.client_list() if c["cmd"] != "client|list"] == []
        client.close()


def _use_cluster_store(cluster: list[OwnServer], prefix: str) -> None:
    with threadkeep.open(cluster[0].url + f"?prefix={prefix}") as store:  # … we dial the first
        _workload(store)
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


@pytest.mark.anyio
async def test_an_async_store_works_on_a_multi_node_cluster(cluster: list[OwnServer]) -> None:
    prefix = _prefix_on(cluster, 1)
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


# ---- a full server refuses whole changes and still serves reads -----------------------------


def test_a_full_server_refuses_whole_changes_and_keeps_serving_reads(tmp_path: Path) -> None:
    _require_binary()
    server = OwnServer(
        tmp_path, appendonly=False, extra=("--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
    )
    server.start()
    try:
        with threadkeep.open(server.url + "?prefix=full") as store:
            conv = store.start("c-1", tenant="t-1")
            acknowledged = 0
            with pytest.raises(threadkeep.BackendError) as info:
                for i in range(10_000):
                    store.append(conv.id, "user", f"{i} " + "x" * 4000)
                    acknowledged += 1
            assert "OutOfMemoryError" in str(info.value)
            assert not isinstance(info.value, BackendUnavailable)  # not retried: it would not help
            # every read still works on the full server, and shows whole changes only
            assert store.get(conv.id).message_count == acknowledged
            assert len(store.messages(conv.id, after=0, limit=1000)) == min(acknowledged, 1000)
            assert len(store.context(conv.id)) == 20
            assert store.list(tenant="t-1").items[0].id == conv.id
            assert store.find_open("c-1", tenant="t-1") is not None
            assert store.load_state(conv.id).version == 0
            assert store.counts(tenant="t-1").by_status["active"] == 1
            assert len(list(store.events(tenant="t-1"))) == acknowledged + 2  # + started, status
    finally:
        server.kill()


# ---- rediss:// --------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    ca_key, ca, key, csr, cert, ext = (
        directory / name for name in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt", "san.ext")
    )
    new_key = ("-newkey", "rsa:2048", "-nodes")
    _openssl("req", "-x509", *new_key, "-days", "1", "-keyout", str(ca_key), "-out", str(ca),
             "-subj", "/CN=threadkeep-test-ca")  # fmt: skip
    _openssl("req", *new_key, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


def test_rediss_urls_talk_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _require_binary()
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found")
    ca, cert, key = _certificates(tmp_path)
    tls_port = _free_port()
    server = OwnServer(
        tmp_path,
        appendonly=False,
        extra=(
            *("--tls-port", str(tls_port), "--tls-cert-file", str(cert)),
            *("--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)),
            *("--tls-auth-clients", "no"),
        ),
    )
    server.start()  # the plain port too, to check where the data went
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # trust the private CA (system store stand-in)
        with threadkeep.open(f"rediss://127.0.0.1:{tls_port}/0?prefix=tls") as store:
            conv = store.start("c-1")
            store.append(conv.id, "user", "over TLS")
            assert [m.content for m in store.messages(conv.id)] == ["over TLS"]
        raw = server.client()
        assert raw.exists(Keys("tls").conversation(conv.id))
        raw.close()
        plain = threadkeep.open(f"redis://127.0.0.1:{tls_port}/0?timeout=1&retries=0")
        with plain, pytest.raises(BackendUnavailable):
            plain.get(conv.id)  # a TLS port does not talk plain RESP
    finally:
        server.kill()


_POINT_AT_CLUSTER = """
import os
import _servers

_servers.REDIS_BASE = os.environ["THREADKEEP_TEST_REDIS_BASE"]
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_conformance_suite_passes_on_a_multi_node_cluster(
    cluster: list[OwnServer], tmp_path: Path
) -> None:
    """Run tests/conformance's redis leg, unchanged, against the cluster (dialing node 0)."""
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "tk_point_at_cluster.py").write_text(_POINT_AT_CLUSTER)
    tests = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "THREADKEEP_TEST_REDIS_BASE": cluster[0].url,
        "PYTHONPATH": os.pathsep.join([str(plugin), str(tests)]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(tests / "conformance"), "-k", "redis", "-q",
         "-p", "no:cacheprovider", "-p", "tk_point_at_cluster", "-x"],
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


def test_event_followers_wait_on_their_own_pool(own_server: OwnServer) -> None:
    with threadkeep.open(own_server.url + "?prefix=follow&pool_size=1&timeout=5") as store:
        conv = store.start("c-1", tenant="t-1")
        raw = own_server.client()
        follower = threading.Thread(target=lambda: list(store.events(tenant="t-2", timeout=3)))
        follower.start()
        try:
            deadline = time.monotonic() + 30
            while not any(c["cmd"] == "xread" for c in raw.client_list()):
                assert time.monotonic() < deadline, "the follower never blocked"
                time.sleep(0.01)
            # the only command connection is free although the follower blocks: appends go on
            store.append(conv.id, "user", "while someone follows")
            commands = [c["cmd"] for c in raw.client_list() if c["cmd"] != "client|list"]
            assert sorted(commands) == ["evalsha", "xread"], commands
        finally:
            follower.join(30)
        raw.close()


@pytest.mark.anyio
async def test_an_async_append_resent_after_a_lost_reply_is_applied_once(
    own_server: OwnServer,
) -> None:
    proxy = LosingProxy(own_server.port)
    store = await threadkeep.open_async(f"redis://127.0.0.1:{proxy.port}/0?prefix=alost")
    try:
        conv = await store.start("c-1")
        await store.append(conv.id, "user", "first")  # the script is loaded before the fault
        proxy.arm()
        message = await store.append(conv.id, "user", "once")
        assert proxy.dropped == 1
        assert message.seq == 2
        assert [m.content for m in await store.messages(conv.id)] == ["first", "once"]
    finally:
        await store.aclose()
        proxy.close()


def test_servers_older_than_redis_7_are_refused_with_a_clear_message() -> None:
    check_server({"redis_version": "7.0.15"}, "127.0.0.1:6379")  # the scripts need 7.0
    with pytest.raises(redis.ResponseError, match=r"needs Redis 7\.0 or newer.* runs Redis 6\.2"):
        check_server({"redis_version": "6.2.14"}, "127.0.0.1:6379")


def test_sweep_erases_the_events_of_conversations_redis_reclaimed(prefix: str) -> None:
    clock = threadkeep.ManualClock()
    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}", clock=clock) as store:
        gone = store.start("c-1", retention=Retention(ttl=timedelta(hours=1)))
        store.append(gone.id, "user", "hi")
        kept = store.start("c-2", retention=Retention(ttl=None))
        raw = _raw()
        raw.delete(*Keys(prefix).conversation_keys(gone.id))  # Redis reclaimed it
        raw.close()
        clock.advance(timedelta(hours=3))
        store.sweep()
        ids = {e.conversation_id for e in store.events()}
        assert gone.id not in ids and kept.id in ids
