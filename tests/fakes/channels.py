"""A fake of the WhatsApp Cloud API (Graph) send endpoint and Twilio's Messages API, run as a
process.

- ``POST /{version}/{phone_number_id}/messages`` with ``Authorization: Bearer <--token>``
  (401 with a Graph error otherwise) answers like the Graph API: ``{"messaging_product",
  "contacts", "messages": [{"id": "wamid.FAKE…"}]}``;
- ``POST /2010-04-01/Accounts/{sid}/Messages.json`` with HTTP Basic ``--sid``:``--auth`` (401
  otherwise) and form fields ``To``, ``From``, ``Body`` answers ``{"sid": "SM…", "status":
  "queued"}`` (201).

Test controls: ``POST /_control`` with ``{"fail_twilio": [429, 500, …]}`` (the next Twilio
sends get these statuses, one each, before succeeding again; ``fail_whatsapp`` likewise),
``{"delay": seconds}`` (every send waits that long before answering), ``{"reject": true}``
(every send gets a 400 with the provider's error); ``GET /_requests`` lists every send
received (path, body, the status answered and the id given).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl

from tests.fakes._serve import serve  # run as `python -m tests.fakes.NAME` (FakeProcess)

LOCK = threading.Lock()
IDS = itertools.count(1)
STATE: dict[str, Any] = {
    "requests": [],
    "fail": {"whatsapp": [], "twilio": []},
    "delay": 0.0,
    "reject": False,
}
ARGS = argparse.Namespace()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/_requests":
            with LOCK:
                self._reply(200, STATE["requests"])
            return
        self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path == "/_control":
            control = json.loads(raw)
            with LOCK:
                for provider in ("whatsapp", "twilio"):
                    STATE["fail"][provider].extend(control.get("fail", []))
                    STATE["fail"][provider].extend(control.get(f"fail_{provider}", []))
                STATE["delay"] = float(control.get("delay", STATE["delay"]))
                STATE["reject"] = bool(control.get("reject", STATE["reject"]))
                if control.get("clear"):
                    STATE["requests"].clear()
            self._reply(200, {"ok": True})
            return
        whatsapp = self.path.endswith("/messages") and not self.path.startswith("/2010-04-01")
        if len(raw) < length:  # the client went away mid-request (killed): nothing was sent
            broken = {"at": time.time(), "path": self.path, "provider": "broken", "status": 400}
            with LOCK:
                STATE["requests"].append({**broken, "body": None, "id": None})
            return
        if whatsapp:
            body: Any = json.loads(raw or b"{}")
        else:
            body = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        record: dict[str, Any] = {
            "at": time.time(),
            "path": self.path,
            "provider": "whatsapp" if whatsapp else "twilio",
            "body": body,
            "status": None,  # until answered (a slow answer is recorded on arrival)
            "id": None,
        }
        with LOCK:
            STATE["requests"].append(record)
            delay = STATE["delay"]
            queue = STATE["fail"]["whatsapp" if whatsapp else "twilio"]
            failing = queue.pop(0) if queue else None
            reject = STATE["reject"]
        if delay:
            time.sleep(delay)
        status, answer = self._answer(whatsapp, body, failing, reject)
        with LOCK:
            record["status"] = status
            record["id"] = answer.get("sid") or (answer.get("messages") or [{}])[0].get("id")
        self._reply(status, answer)

    def _answer(
        self, whatsapp: bool, body: Any, failing: int | None, reject: bool
    ) -> tuple[int, dict[str, Any]]:
        if whatsapp:
            if self.headers.get("Authorization") != f"Bearer {ARGS.token}":
                return 401, {"error": {"message": "Invalid OAuth access token", "code": 190}}
            if failing is not None:
                return failing, {"error": {"message": "failing on demand", "code": 130429}}
            if reject:
                error = {"message": "(#131026) Message undeliverable", "code": 131026}
                return 400, {"error": {**error, "error_data": {"details": "rejected"}}}
            wamid = f"wamid.FAKE{next(IDS)}"
            return 200, {"messaging_product": "whatsapp",
                         "contacts": [{"input": body.get("to"), "wa_id": body.get("to")}],
                         "messages": [{"id": wamid}]}  # fmt: skip
        expected = base64.b64encode(f"{ARGS.sid}:{ARGS.auth}".encode()).decode()
        if (
            self.headers.get("Authorization") != f"Basic {expected}"
            or f"/{ARGS.sid}/" not in self.path
        ):
            return 401, {"code": 20003, "message": "Authenticate", "status": 401}
        if failing is not None:
            return failing, {"code": 20429, "message": "Too Many Requests", "status": failing}
        if reject:
            return 400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}
        if not body.get("To") or not body.get("From") or not body.get("Body"):
            return 400, {"code": 21604, "message": "A 'To', 'From' and 'Body' are required"}
        return 201, {"sid": f"SM{next(IDS):032d}", "status": "queued"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", default="wa-token")
    parser.add_argument("--sid", default="AC0123456789abcdef0123456789abcdef")
    parser.add_argument("--auth", default="test_auth_token")
    parser.parse_args(namespace=ARGS)
    serve(Handler, ARGS.port)


if __name__ == "__main__":
    main()
