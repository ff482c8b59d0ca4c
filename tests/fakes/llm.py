"""A fake of Anthropic's Messages API (``POST /v1/messages``), run as a process by the tests.

Modes (``POST /_control {"mode": …}``): ``ok`` rewords the draft (after "Reword this reply: " in
the last text of the last message) as ``"Sure! <draft>"``;
``drop`` answers without the draft's question; ``error`` answers 500; ``slow`` waits 10 s.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes._serve import serve  # run as `python -m tests.fakes.NAME` (FakeProcess)

STATE: dict[str, Any] = {"mode": "ok", "requests": []}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (slow mode)

    def do_GET(self) -> None:
        with LOCK:
            self._send(200, STATE["requests"])

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        if self.path == "/_control":
            with LOCK:
                STATE.update(body)
            self._send(200, {})
            return
        with LOCK:
            STATE["requests"].append(
                {
                    "path": self.path,
                    "body": body,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                }
            )
            mode = STATE["mode"]
        key = self.headers.get("x-api-key") or self.headers.get("authorization") or ""
        if key.removeprefix("Bearer ") != "test-key":
            self._send(401, {"type": "error", "error": {"type": "authentication_error"}})
            return
        if mode == "slow":
            time.sleep(10)
        if mode == "error":
            self._send(500, {"type": "error", "error": {"type": "api_error", "message": "boom"}})
            return
        content = body["messages"][-1]["content"]  # the request, or a turn it was joined to
        prompt = content if isinstance(content, str) else content[-1]["text"]
        draft = prompt.split("Reword this reply: ", 1)[-1]
        text = "Sure! " + draft if mode == "ok" else "Sure, sounds good."
        self._send(
            200,
            {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 10},
            },
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve(Handler, args.port)


if __name__ == "__main__":
    main()
