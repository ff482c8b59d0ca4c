"""The real server (``threadkeep serve`` under uvicorn): live events, degradation, shutdown."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import threadkeep
from tests.service._service_helpers import wait_for


class SSE:
    """Reads one event stream; ``next(kind)`` returns the next event (or comment) of a kind."""

    def __init__(self, client: httpx.Client, url: str, headers: dict[str, str] | None = None):
        self._cm = client.stream("GET", url, headers=headers or {}, timeout=httpx.Timeout(10.0))
        self.response = self._cm.__enter__()
        self._lines = self.response.iter_lines()

    def next(self) -> dict[str, str]:
        """Return the next message: its fields, or {"comment": text} for a comment."""
        fields: dict[str, str] = {}
        for line in self._lines:
            if line == "":
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                return {"comment": line[1:].strip()}
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        raise AssertionError("the stream ended")

    def next_event(self) -> dict[str, str]:
        """Return the next message that carries data (skipping comments and bare ids)."""
        while True:
            message = self.next()
            if "data" in message:
                return message

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


def until_messages(stream: SSE, count: int) -> list[dict[str, str]]:
    """Read events until ``count`` message.appended ones came; return them all."""
    seen: list[dict[str, str]] = []
    while sum(e["event"] == "message.appended" for e in seen) < count:
        seen.append(stream.next_event())
    return seen


def lease_attempts(base: str) -> float:
    """How many times the (single-worker) server tried to take a turn lease."""
    text = httpx.get(base + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('threadkeep_store_operations_total{op="acquire_lease"')
    )


def post(url: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(url, json=body, timeout=30, **kw)


def test_events_stream_live_with_heartbeats_and_resume(live_server, tmp_path):
    server = live_server(f"sqlite:///{tmp_path / 'tk.db'}", THREADKEEP_SSE_HEARTBEAT="0.3")
    with httpx.Client() as client:
        stream = SSE(client, server.url + "/v1/events")
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.next() == {"retry": "2000"}
        assert stream.next() == {"comment": "heartbeat"}  # idle: heartbeats keep it open

        chat = post(server.url + "/v1/chat", {"message": "hi"}).json()
        cid = chat["conversation_id"]
        seen = until_messages(stream, 2)
        assert seen[0]["event"] == "conversation.started"
        assert "status.changed" in [e["event"] for e in seen]  # new → active
        assert all(json.loads(e["data"])["conversation_id"] == cid for e in seen)
        stream.close()

        # while disconnected, more happens; Last-Event-ID replays exactly what was missed
        post(server.url + "/v1/chat", {"message": "again", "conversation_id": cid})
        resumed = SSE(client, server.url + "/v1/events", {"Last-Event-ID": seen[-1]["id"]})
        missed = until_messages(resumed, 2)
        assert [json.loads(e["data"])["data"].get("seq") for e in missed] == [3, 4]
        assert int(missed[0]["id"]) == int(seen[-1]["id"]) + 1
        resumed.close()


def test_events_410_for_a_cursor_out_of_the_log(live_server, tmp_path):
    server = live_server(f"sqlite:///{tmp_path / 'tk.db'}", THREADKEEP_EVENTS_KEPT="3")
    cid = post(server.url + "/v1/chat", {"message": "hi"}).json()["conversation_id"]
    first = httpx.get(server.url + "/v1/events?from_start=true&follow=false", timeout=10)
    oldest = next(line for line in first.text.splitlines() if line.startswith("id: "))[4:]
    for i in range(4):
        post(server.url + "/v1/chat", {"message": f"m{i}", "conversation_id": cid})
    resp = httpx.get(server.url + "/v1/events", headers={"Last-Event-ID": oldest}, timeout=10)
    assert resp.status_code == 410
    assert resp.json()["error"]["type"] == "CursorExpired"


@pytest.mark.redis
def test_chat_degrades_while_the_store_is_down_and_recovers(live_server, private_redis):
    store = private_redis.url + "?prefix=svc&timeout=1&retries=0"
    server = live_server(store, THREADKEEP_READY_TIMEOUT="3")
    ok = post(server.url + "/v1/chat", {"message": "hi", "contact_id": "+1555"}).json()
    assert ok["persisted"] is True
    cid = ok["conversation_id"]

    private_redis.stop()
    down = post(server.url + "/v1/chat", {"message": "still there?", "conversation_id": cid})
    assert down.status_code == 200
    assert down.json()["persisted"] is False
    assert down.json()["reply"] == "echo: still there?"
    assert down.json()["conversation_id"] == cid
    assert "store unreachable; answering without keeping the turn" in server.log_text()
    ready = httpx.get(server.url + "/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["error"]["type"] == "StoreNotReady"
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    assert httpx.get(server.url + "/v1/conversations", timeout=10).status_code == 503

    private_redis.start()  # an empty server on the same port: the old conversation is gone
    wait_for(
        lambda: httpx.get(server.url + "/readyz", timeout=10).status_code == 200,
        30,
        "/readyz to recover",
    )
    again = post(server.url + "/v1/chat", {"message": "back", "contact_id": "+1555"}).json()
    assert again["persisted"] is True
    got = httpx.get(f"{server.url}/v1/conversations/{again['conversation_id']}/messages")
    assert [m["content"] for m in got.json()["items"]] == ["back", "echo: back"]


@pytest.mark.redis
def test_starts_while_the_store_is_down(live_server, private_redis):
    private_redis.stop()
    server = live_server(private_redis.url + "?prefix=svc&timeout=1&retries=0")
    assert httpx.get(server.url + "/readyz", timeout=10).status_code == 503
    reply = post(server.url + "/v1/chat", {"message": "hi"}).json()
    assert reply["persisted"] is False and reply["reply"] == "echo: hi"
    private_redis.start()
    wait_for(
        lambda: httpx.get(server.url + "/readyz", timeout=10).status_code == 200,
        30,
        "/readyz to recover",
    )
    assert post(server.url + "/v1/chat", {"message": "hi"}).json()["persisted"] is True


def test_graceful_shutdown_finishes_in_flight_requests(live_server: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tk.db'}"
    server = live_server(url, THREADKEEP_TURN_WAIT="20")
    cid = post(server.url + "/v1/chat", {"message": "hi"}).json()["conversation_id"]
    results: list[httpx.Response] = []
    with threadkeep.open(url) as store, store.turn(cid, lease=60):
        # the chat below waits for the turn this test holds: it is in flight at SIGTERM
        sender = threading.Thread(
            target=lambda: results.append(
                post(server.url + "/v1/chat", {"message": "late", "conversation_id": cid})
            )
        )
        sender.start()
        # the request is in the app once it has tried (and failed) to take the turn
        wait_for(lambda: lease_attempts(server.url) >= 2, 30, "the chat to wait for its turn")
        assert server.proc is not None
        server.proc.terminate()
        time.sleep(0.5)
        assert server.proc.poll() is None  # still finishing the in-flight request
    sender.join(30)
    assert results and results[0].status_code == 200
    assert results[0].json()["reply"] == "echo: late"
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly
    assert server.stop() in (0, -15)
    log = server.log_text()
    assert "Application shutdown complete" in log
    assert f"store {url} closed" in log
    with threadkeep.open(url) as store:
        assert [m.content for m in store.messages(cid)][-2:] == ["late", "echo: late"]


def test_shutdown_ends_open_event_streams(live_server: Any, tmp_path: Path) -> None:
    server = live_server(f"sqlite:///{tmp_path / 'tk.db'}", THREADKEEP_SSE_HEARTBEAT="0.2")
    with httpx.Client() as client:
        stream = SSE(client, server.url + "/v1/events")
        assert stream.next() == {"retry": "2000"}
        assert stream.next() == {"comment": "heartbeat"}
        assert server.proc is not None
        server.proc.terminate()
        with pytest.raises(AssertionError, match="the stream ended"):
            while True:  # heartbeats until the server ends the stream
                stream.next()
        stream.close()
    assert server.stop() in (0, -15)
    log = server.log_text()
    assert "timeout graceful shutdown exceeded" not in log
    assert "Application shutdown complete" in log


def test_events_reach_a_stream_served_by_another_process(live_server: Any, tmp_path: Path) -> None:
    # two servers over one SQLite file: a change made through one streams from the other,
    # as with the workers of one server
    store = f"sqlite:///{tmp_path / 'tk.db'}"
    watching, writing = live_server(store), live_server(store)
    with httpx.Client() as client:
        stream = SSE(client, watching.url + "/v1/events")
        assert stream.next() == {"retry": "2000"}
        sent = {
            post(writing.url + "/v1/chat", {"message": f"m{i}"}).json()["conversation_id"]
            for i in range(3)
        }
        seen = until_messages(stream, 6)
        appended = [json.loads(e["data"]) for e in seen if e["event"] == "message.appended"]
        assert {e["conversation_id"] for e in appended} == sent
        stream.close()
