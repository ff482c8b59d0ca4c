"""A fake of GoHighLevel's REST API (services.leadconnectorhq.com), run as a process.

It answers the calls threadkeep makes, in GoHighLevel's wire format, and checks what the real
API checks:

- ``Authorization: Bearer <token>`` must name a live access token (401 ``Invalid JWT``
  otherwise); ``Version: 2021-07-28`` must be present (400 otherwise);
- at most ``--limit`` requests per ``--window`` seconds per location (a token belongs to one
  location); beyond it 429 with GoHighLevel's ``X-RateLimit-*`` headers;
- ``POST /oauth/token`` (form) with the current refresh token returns a new access token and a
  new refresh token (the old one stops working, as GoHighLevel rotates them).

Calls: ``PUT /contacts/{id}``, ``POST``/``DELETE /contacts/{id}/tags``,
``GET /opportunities/search``, ``POST /opportunities/``, ``PUT /opportunities/{id}``. Unknown
contacts get 400 ``Contact not found``.

Test controls: ``POST /_control`` with ``{"fail": [503, 429, …]}`` (the next requests get these
statuses, one each), ``{"expire": true}`` (every access token stops working), ``{"down": true}``
(every API call gets 503); ``GET /_requests`` lists every API call received with its answer;
``GET /_state`` returns contacts and opportunities.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes._serve import serve  # run as `python -m tests.fakes.NAME` (FakeProcess)

VERSION = "2021-07-28"
LOCK = threading.Lock()
STATE: dict[str, Any] = {
    "tokens": {},  # access token -> location
    "refresh": {},  # refresh token -> location
    "contacts": {},  # id -> {"customFields": {id_or_key: value}, "tags": [..]}
    "opportunities": {},  # id -> {...}
    "requests": [],
    "fail": [],
    "down": False,
    "windows": {},  # location -> deque of request times
    "limit": 100,
    "window": 10.0,
}


def _json(handler: BaseHTTPRequestHandler, status: int, payload: Any, **headers: str) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(data)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        if self.path == "/_requests":
            with LOCK:
                _json(self, 200, STATE["requests"])
            return
        if self.path == "/_state":
            with LOCK:
                _json(
                    self,
                    200,
                    {"contacts": STATE["contacts"], "opportunities": STATE["opportunities"]},
                )
            return
        self._api("GET", b"")

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/_control":
            control = json.loads(body or b"{}")
            with LOCK:
                if control.get("expire"):
                    STATE["tokens"].clear()
                STATE["fail"].extend(control.get("fail", []))
                if "down" in control:
                    STATE["down"] = bool(control["down"])
            _json(self, 200, {})
            return
        if self.path == "/oauth/token":
            self._token(body)
            return
        self._api("POST", body)

    def do_PUT(self) -> None:
        self._api("PUT", self._body())

    def do_DELETE(self) -> None:
        self._api("DELETE", self._body())

    def _token(self, body: bytes) -> None:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        with LOCK:
            location = STATE["refresh"].pop(form.get("refresh_token", ""), None)
            ok = (
                location is not None
                and form.get("grant_type") == "refresh_token"
                and form.get("client_id") == "client-1"
                and form.get("client_secret") == "secret-1"
            )
            status = 200 if ok else 401
            STATE["requests"].append(
                {"method": "POST", "path": "/oauth/token", "form": form, "status": status}
            )
            if not ok:
                _json(self, 401, {"error": "invalid_grant"})
                return
            access, refresh = f"at-{uuid.uuid4().hex[:8]}", f"rt-{uuid.uuid4().hex[:8]}"
            STATE["tokens"][access] = location
            STATE["refresh"][refresh] = location
        _json(
            self,
            200,
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": 86399,
                "refresh_token": refresh,
                "scope": "contacts.write opportunities.write",
                "userType": "Location",
                "locationId": location,
            },
        )

    def _api(self, method: str, raw: bytes) -> None:
        parts = urlsplit(self.path)
        body = json.loads(raw) if raw else None
        record: dict[str, Any] = {
            "method": method,
            "path": parts.path,
            "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
            "body": body,
            "authorization": self.headers.get("Authorization"),
            "version": self.headers.get("Version"),
            "at": time.monotonic(),
        }
        with LOCK:
            status, payload, headers = self._answer(method, parts.path, record, body)
            record["status"] = status
            STATE["requests"].append(record)
        _json(self, status, payload, **headers)

    def _answer(
        self, method: str, path: str, record: dict[str, Any], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        token = (record["authorization"] or "").removeprefix("Bearer ")
        location = STATE["tokens"].get(token)
        if location is None:
            return 401, {"statusCode": 401, "message": "Invalid JWT"}, {}
        if record["version"] != VERSION:
            return 400, {"statusCode": 400, "message": "Version header is missing or wrong"}, {}
        window: deque[float] = STATE["windows"].setdefault(location, deque())
        now = time.monotonic()
        while window and now - window[0] >= STATE["window"]:
            window.popleft()
        limits = {
            "X-RateLimit-Max": str(STATE["limit"]),
            "X-RateLimit-Interval-Milliseconds": str(int(STATE["window"] * 1000)),
        }
        if len(window) >= STATE["limit"]:
            return 429, {"statusCode": 429, "message": "Too Many Requests"}, limits
        window.append(now)
        limits["X-RateLimit-Remaining"] = str(STATE["limit"] - len(window))
        if STATE["down"]:
            return 503, {"message": "Service Unavailable"}, {}
        if STATE["fail"]:
            status = int(STATE["fail"].pop(0))
            failing = {"statusCode": status, "message": "failing on demand"}
            return status, failing, {"Retry-After": "0"}
        return self._route(method, path, location, record, body)

    def _route(
        self, method: str, path: str, location: str, record: dict[str, Any], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        segments = path.strip("/").split("/")
        if segments[0] == "contacts" and len(segments) >= 2:
            contact = STATE["contacts"].get(segments[1])
            if contact is None:
                return 400, {"statusCode": 400, "message": "Contact not found"}, {}
            if len(segments) == 2 and method == "PUT":
                for item in body.get("customFields", []):
                    contact["customFields"][item.get("id") or item.get("key")] = item["field_value"]
                return 200, {"succeded": True, "contact": {"id": segments[1], **contact}}, {}
            if segments[2:] == ["tags"] and method in ("POST", "DELETE"):
                tags = set(contact["tags"])
                tags = tags | set(body["tags"]) if method == "POST" else tags - set(body["tags"])
                contact["tags"] = sorted(tags)
                return (201 if method == "POST" else 200), {"tags": contact["tags"]}, {}
        if path == "/opportunities/search" and method == "GET":
            query = record["query"]
            found = [
                o
                for o in STATE["opportunities"].values()
                if o["contactId"] == query.get("contact_id") and o["locationId"] == location
            ]
            return 200, {"opportunities": found, "meta": {"total": len(found)}}, {}
        if path == "/opportunities/" and method == "POST":
            opportunity = {"id": f"opp-{uuid.uuid4().hex[:10]}", **body}
            STATE["opportunities"][opportunity["id"]] = opportunity
            return 201, {"opportunity": opportunity}, {}
        if segments[0] == "opportunities" and len(segments) == 2 and method == "PUT":
            opportunity = STATE["opportunities"].get(segments[1])
            if opportunity is None:
                return 404, {"statusCode": 404, "message": "Opportunity not found"}, {}
            opportunity.update(body)
            return 200, {"opportunity": opportunity}, {}
        return 404, {"statusCode": 404, "message": f"Cannot {method} {path}"}, {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", action="append", default=[], help="token:location")
    parser.add_argument("--refresh", action="append", default=[], help="refresh:location")
    parser.add_argument("--contact", action="append", default=[], help="a known contact id")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    for pair in args.token:
        token, location = pair.split(":")
        STATE["tokens"][token] = location
    for pair in args.refresh:
        refresh, location = pair.split(":")
        STATE["refresh"][refresh] = location
    for contact in args.contact:
        STATE["contacts"][contact] = {"customFields": {}, "tags": []}
    STATE["limit"], STATE["window"] = args.limit, args.window
    serve(Handler, args.port)


if __name__ == "__main__":
    main()
