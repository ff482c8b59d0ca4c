"""Helpers of the service tests: TestClient apps and the real server in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests._servers import RedisServer, ServerProcess, free_port, http_ready
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


class LiveServer(ServerProcess):
    """``threadkeep serve`` in a child process; restart() keeps the port and the store."""

    def __init__(self, store: str, log: Path, workers: int = 1, **env: str) -> None:
        self.store = store
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        environ = {k: v for k, v in os.environ.items() if not k.startswith("THREADKEEP_")}
        environ.update({"THREADKEEP_BOT": "echo", **env})
        args = [sys.executable, "-m", "threadkeep.cli.main", "serve", "--store", store]
        args += ["--port", str(self.port), "--workers", str(workers)]
        super().__init__(
            args, http_ready(self.url + "/healthz"), log=log, env=environ, start_timeout=60
        )

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The server's process while it runs."""
        return self.process

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.output()


class PrivateRedis(RedisServer):
    """A redis-server of the test's own; stop() kills it at once, start() keeps the port.

    Persistence is off: a restart comes back empty, like a store that lost its data.
    """

    def stop(self, timeout: float = 30.0) -> int | None:
        self.kill()
        return None


def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``predicate`` until it is true; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up after {seconds} s waiting for {what}")
