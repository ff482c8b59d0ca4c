"""Run a fake provider server (a script in this folder) as a child process on a free port.

Each fake prints ``PORT <n>`` on its first stdout line once it listens, answers its provider's
wire format, and has ``/_control`` (POST a JSON object to change its behaviour) and
``/_requests`` (GET what it recorded) for the tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def serve(handler: type[BaseHTTPRequestHandler], port: int) -> None:
    """Serve ``handler`` on 127.0.0.1:``port`` (0: a free one); say ``PORT <n>`` once listening.

    Called by each fake's ``main()`` when it runs as a script.
    """
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


class FakeProcess:
    """One fake server process: ``url``, ``control(**kw)``, ``requests()``, ``stop()``."""

    def __init__(self, script: str, *args: str, port: int = 0) -> None:
        self.script = script
        self.args = args
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> FakeProcess:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / self.script), "--port", str(self.port), *self.args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"{self.script} did not start: {line!r}")
        self.port = int(line.split()[1])  # a restart keeps the port
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

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
        with urllib.request.urlopen(f"{self.url}/_requests", timeout=5) as response:
            recorded: list[dict[str, Any]] = json.loads(response.read())
        return recorded
