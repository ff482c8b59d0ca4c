"""Helpers of the service tests: TestClient apps and the real server in a child process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from threadkeep.service.app import create_app
from threadkeep.service.settings import ServiceSettings

LOOPBACK_CLIENT = ("127.0.0.1", 50000)


@contextmanager
def client_for(store: str, *, key: str | None = None, **settings: Any) -> Iterator[TestClient]:
    """A TestClient (a loopback client, sending ``key`` if given) of an app with these settings."""
    client_address = settings.pop("client", LOOPBACK_CLIENT)
    settings.setdefault("bot", "echo")
    app = create_app(ServiceSettings(store=store, **settings))
    headers = {"Authorization": f"Bearer {key}"} if key else None
    with TestClient(app, client=client_address, headers=headers) as client:
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``threadkeep serve`` in a child process; restart() keeps the port and the store."""

    def __init__(self, store: str, log: Path, workers: int = 1, **env: str) -> None:
        self.store = store
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.workers = workers
        self.env = {"THREADKEEP_BOT": "echo", **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("THREADKEEP_")}
        env.update(self.env)
        args = [sys.executable, "-m", "threadkeep.cli.main", "serve", "--store", self.store]
        args += ["--port", str(self.port), "--workers", str(self.workers)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited ({self.proc.returncode}):\n{self.log_text()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        pytest.fail(f"the server did not start:\n{self.log_text()}")

    def stop(self) -> int | None:
        """Stop the server with SIGTERM (SIGKILL if it hangs); return its exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port; stop() and start() keep the port.

    Persistence is off: a restart comes back empty, like a store that lost its data.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """Kill the server at once."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``predicate`` until it is true; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up after {seconds} s waiting for {what}")
