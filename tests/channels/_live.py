"""Helpers of the real-process channel tests: the service, ``threadkeep worker`` processes and
the fake provider API, each a child process; webhooks posted as raw signed bytes."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests._servers import ServerProcess
from tests.channels._payloads import APP_SECRET, AUTH_TOKEN, PHONE_NUMBER_ID
from tests.fakes.process import FakeProcess
from tests.service._service_helpers import LiveServer

SID = "AC0123456789abcdef0123456789abcdef"
TWILIO_NUMBER = "+15558675310"


def channel_env(fake: FakeProcess, **extra: str) -> dict[str, str]:
    return {
        "THREADKEEP_WHATSAPP_APP_SECRET": APP_SECRET,
        "THREADKEEP_WHATSAPP_VERIFY_TOKEN": "vibecoding",
        "THREADKEEP_WHATSAPP_ACCESS_TOKEN": "wa-token",
        "THREADKEEP_WHATSAPP_API_URL": f"{fake.url}/v25.0",
        "THREADKEEP_TWILIO_ACCOUNT_SID": SID,
        "THREADKEEP_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "THREADKEEP_TWILIO_API_URL": fake.url,
        "THREADKEEP_CHANNEL_LEASE": "2",
        **extra,
    }


def service(store: str, tmp_path: Path, fake: FakeProcess, *, worker: bool = True,
            **extra: str) -> LiveServer:  # fmt: skip
    server = LiveServer(store, tmp_path / "server.log", 1, **channel_env(fake, **extra))
    assert server.env is not None
    server.env["THREADKEEP_PUBLIC_URL"] = server.url
    if not worker:
        server.args.append("--no-worker")
    server.start()
    return server


class Worker(ServerProcess):
    """``threadkeep worker`` as a child process; ready once it logged that it serves."""

    def __init__(self, store: str, log: Path, env: dict[str, str]) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("THREADKEEP_")}
        environ.update({"THREADKEEP_BOT": "echo", **env})
        args = [sys.executable, "-m", "threadkeep.cli.main", "worker", "--store", store]
        self.marks = 0
        super().__init__(args, self._serving, log=log, env=environ, start_timeout=60)

    def start(self) -> None:
        self.marks = self.output().count("channel worker serving")
        super().start()

    def _serving(self) -> bool:
        return self.output().count("channel worker serving") > self.marks


def post(url: str, raw: bytes, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=raw, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def get(server: LiveServer, path: str) -> Any:
    with urllib.request.urlopen(server.url + path, timeout=30) as response:
        return json.loads(response.read())


def find(server: LiveServer, contact: str) -> dict[str, Any] | None:
    """The contact's conversation (one at most), or None."""
    from urllib.parse import quote

    items = get(server, f"/v1/conversations?contact_id={quote(contact)}")["items"]
    assert len(items) <= 1, items
    return items[0] if items else None


def conversation(server: LiveServer, contact: str) -> dict[str, Any]:
    """The contact's one conversation."""
    found = find(server, contact)
    assert found is not None, f"no conversation of {contact}"
    return found


def history(server: LiveServer, conv_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get(server, f"/v1/conversations/{conv_id}/messages?last=1000")[
        "items"
    ]
    return items


def coverage(messages: list[dict[str, Any]]) -> tuple[list[int], list[list[int]]]:
    """The seqs of inbound messages that want an answer, and each reply's covered seqs."""
    inbound = [
        m["seq"]
        for m in messages
        if m["role"] == "user" and m["metadata"].get("channel", {}).get("expects_reply", True)
    ]
    replies = [m["metadata"]["covers"] for m in messages if m["role"] == "assistant"]
    return inbound, replies


def answered(server: LiveServer, contact: str) -> bool:
    """Whether every inbound message of the contact is covered and every reply left (or failed)."""
    conv = find(server, contact)
    if conv is None:
        return False
    messages = history(server, conv["id"])
    inbound, replies = coverage(messages)
    settled = all(
        (m.get("delivery") or {}).get("state") not in (None, "queued")
        for m in messages
        if m["role"] == "assistant"
    )
    return settled and sorted(s for r in replies for s in r) == inbound


def wait_all(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {seconds} s waiting for {what}")
        time.sleep(0.1)


def sends_by_reference(fake: FakeProcess) -> dict[str, list[dict[str, Any]]]:
    """The fake's successful WhatsApp sends, by the reference they carried (conv:seq)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for request in fake.requests():
        if request["provider"] == "whatsapp" and request["status"] == 200:
            out.setdefault(request["body"]["biz_opaque_callback_data"], []).append(request)
    return out


__all__ = [
    "PHONE_NUMBER_ID",
    "SID",
    "TWILIO_NUMBER",
    "Worker",
    "answered",
    "channel_env",
    "conversation",
    "find",
    "coverage",
    "get",
    "history",
    "post",
    "sends_by_reference",
    "service",
    "wait_all",
]
