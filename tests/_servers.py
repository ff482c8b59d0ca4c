"""The servers tests use: store URLs isolated per run, reachability, cleanup, and servers a test
starts itself (one process helper, one skip-or-fail-under-CI rule).
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

import pytest

__all__ = [
    "REDIS_SERVER",
    "PostgresCluster",
    "RedisServer",
    "ServerProcess",
    "cleanup_url",
    "free_port",
    "http_ready",
    "isolated_url",
    "postgres_cluster",
    "require_reachable",
    "unavailable",
    "wait_until",
]

#: The shared servers; another one (a test's own Redis Cluster, say) through the environment.
REDIS_BASE = os.environ.get("THREADKEEP_TEST_REDIS_BASE", "redis://127.0.0.1:6379/0")
POSTGRES_BASE = os.environ.get(
    "THREADKEEP_TEST_POSTGRES_BASE", "postgresql://postgres@127.0.0.1:5432/test"
)


def isolated_url(kind: str, tmp_path: Path, run_id: str) -> str:
    """Return a store URL of ``kind`` that no other test run shares."""
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        path = (tmp_path / "threadkeep.db").resolve()
        return f"sqlite:///{path}"  # absolute path: sqlite:////tmp/...
    if kind == "redis":  # the base may carry options of its own (?shard=tenant)
        return f"{REDIS_BASE}{'&' if '?' in REDIS_BASE else '?'}prefix=tk-test-{run_id}"
    if kind == "postgres":  # the base may carry options of its own (?partitions=4)
        joint = "&" if "?" in POSTGRES_BASE else "?"
        return f"{POSTGRES_BASE}{joint}schema=tk_test_{run_id}"
    raise ValueError(f"unknown backend kind {kind!r}")


def require_reachable(url: str) -> None:
    """Skip (or fail under CI=true) when the server of a network URL does not answer."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "postgres", "postgresql"}:
        return
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (5432 if parts.scheme.startswith("postgres") else 6379)
    name = "redis" if parts.scheme.startswith("redis") else "postgres"
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as exc:
        unavailable(f"{name} not reachable at {host}:{port} ({type(exc).__name__})")


def cleanup_url(url: str) -> None:
    """Remove what a test run left on a shared server: keys under the prefix or the schema."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if parts.scheme.startswith("redis") and "prefix" in query:
        _cleanup_redis(url.split("?", 1)[0], query["prefix"][0])
    elif parts.scheme.startswith("postgres") and "schema" in query:
        _cleanup_postgres(url.split("?", 1)[0], query["schema"][0])


def _cleanup_redis(base: str, prefix: str) -> None:
    """Delete the keys of every store whose prefix starts with ``prefix`` (one slot each)."""
    import redis

    client = redis.Redis.from_url(base)
    try:
        pipe = client.pipeline(transaction=False)
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            pipe.delete(key)  # one key per command: the stores' keys hash to different slots
            if len(pipe) >= 500:
                pipe.execute()
        pipe.execute()
    finally:
        client.close()


def _cleanup_postgres(base: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# ---- servers a test starts itself -----------------------------------------------------------

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def unavailable(reason: str) -> NoReturn:
    """Skip the test, naming what is missing in one line; under ``CI=true`` fail it instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason, allow_module_level=True)


def free_port() -> int:
    """Return a loopback port that was free a moment ago, below the kernel's ephemeral range.

    ``bind(0)`` hands out a port of the ephemeral range, which the kernel also gives every
    outgoing connection as its local port: between this call and the server's own bind, or
    while a test's server is down for a restart on the same port, a client connection could
    take it (CI met "redis-server exited (1)" so). A port below the range is taken only by a
    bind.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except OSError:  # not Linux: the kernel's own choice
        low = 0
    for _ in range(1000):
        port = 1024 + secrets.randbelow(max(low - 1024, 1)) if low > 2048 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free loopback port below the ephemeral range")


def wait_until(what: str, check: Callable[[], bool], seconds: float = 60.0) -> None:
    """Poll ``check()`` until it is true; fail after ``seconds`` (a hang guard, not a timing)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def http_ready(url: str) -> Callable[[], bool]:
    """A readiness check: ``url`` answers 200."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return check


class ServerProcess:
    """A server this test runs as a child process: started, checked ready, stopped.

    Args:
        args: the command line.
        ready: answers True once the server serves.
        log: where its output goes (None: nowhere).
        env: its environment (None: this process's).
        start_timeout: how long ``start`` waits for ``ready``.
    """

    def __init__(
        self,
        args: Sequence[str],
        ready: Callable[[], bool],
        *,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.args = list(args)
        self.ready = ready
        self.log = log
        self.env = None if env is None else dict(env)
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it is ready; fail with its log if it exits or hangs."""
        if self.log is None:
            self.process = subprocess.Popen(
                self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        else:
            with self.log.open("ab") as out:
                self.process = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=out)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.args[0]} exited ({self.process.returncode}):\n{self.output()}")
            if self.ready():
                return
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"{self.args[0]} did not start:\n{self.output()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop it with SIGTERM (SIGKILL if it hangs); return its exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        return process.returncode

    def kill(self) -> None:
        """Stop it at once (SIGKILL)."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(10)

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections stay open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a frozen server run again (SIGCONT)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def output(self) -> str:
        """What it wrote to its log so far."""
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")


class RedisServer(ServerProcess):
    """A redis-server of the test's own in ``directory``, on a free loopback port.

    ``appendonly``: every write fsynced (``appendfsync always``), so SIGKILL loses nothing
    acknowledged; else nothing persists and a restart comes back empty. The port stays the
    same across restarts.
    """

    def __init__(
        self, directory: Path, *, appendonly: bool = False, extra: Sequence[str] = ()
    ) -> None:
        if not Path(REDIS_SERVER).exists():
            unavailable(f"redis-server binary not found at {REDIS_SERVER}")
        self.port = free_port()
        self.password = (
            extra[list(extra).index("--requirepass") + 1] if "--requirepass" in extra else None
        )
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(directory), "--save", "", "--daemonize", "no"]
        args += (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if appendonly
            else ["--appendonly", "no"]
        )
        super().__init__([*args, *extra], self._pongs, start_timeout=10.0)

    def _pongs(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                if self.password is not None:
                    conn.sendall(f"AUTH {self.password}\r\n".encode())
                    conn.recv(64)
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        """``redis://`` URL of its database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        """A redis-py client (decoding replies) of this server."""
        import redis

        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, decode_responses=True
        )


def _pg_bin(name: str) -> str:
    """The path of a PostgreSQL server program (the newest installed version's)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        unavailable(f"{name} not found under /usr/lib/postgresql/*/bin")
    return found[-1]


class PostgresCluster:
    """A throwaway PostgreSQL cluster in ``root``, on a free loopback port, run as ``postgres``
    when we are root (``root`` must be reachable by that user: see ``postgres_cluster``).
    The port stays the same across restarts."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                unavailable("running as root without runuser; initdb refuses root")
            self.as_user = [runuser, "-u", "postgres", "--"]
            shutil.chown(root, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=60)

    @property
    def url(self) -> str:
        """``postgresql://`` URL of its ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        log = str(self.data / "log")
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-w", "start", "-l", log)

    def stop(self, mode: str = "fast") -> None:
        """Stop it: ``fast`` (clean shutdown) or ``immediate`` (no shutdown checkpoint; the
        next start recovers from the WAL, as after a crash)."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A started ``PostgresCluster`` in a temporary directory of its own (a test's ``tmp_path``
    is private to root), stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="tk-pg-") as tmp:
        os.chmod(tmp, 0o755)
        cluster = PostgresCluster(Path(tmp))
        cluster.start()
        try:
            yield cluster
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                cluster.stop()
