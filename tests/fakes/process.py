"""Run a fake provider server (a module of this folder) as a child process on a free port.

Each fake answers its provider's wire format, and has ``/_control`` (POST a JSON object to
change its behaviour) and ``/_requests`` (GET what it recorded) for the tests.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests._servers import ServerProcess, free_port, http_ready

HERE = Path(__file__).parent
ROOT = HERE.parents[1]  # where `tests` is a package: the fakes run as `python -m tests.fakes.NAME`


class FakeProcess(ServerProcess):
    """One fake server process: ``url``, ``control(**kw)``, ``requests()``; a restart
    (``start()`` after ``stop()``, or a new one given ``port=``) keeps the port."""

    def __init__(self, script: str, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        module = f"tests.fakes.{Path(script).stem}"
        command = [sys.executable, "-m", module, "--port", str(self.port), *args]
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path}
        super().__init__(command, http_ready(f"{self.url}/_requests"), env=env)

    def started(self) -> FakeProcess:
        """Start it; return it."""
        self.start()
        return self

    def control(self, **settings: Any) -> None:
        request = urllib.request.Request(
            f"{self.url}/_control",
            data=json.dumps(settings).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def requests(self) -> list[dict[str, Any]]:
        recorded: list[dict[str, Any]] = self._get("/_requests")
        return recorded

    def state(self) -> dict[str, Any]:
        """What the fake holds (``GET /_state``, where it has one)."""
        held: dict[str, Any] = self._get("/_state")
        return held

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            return json.loads(response.read())
