"""What a client can make the real server hold: event streams, headers, slow requests.

Regression tests of the adversarial review of b07f6d3 (findings 3, 6 and 17), each against
``threadkeep serve`` in a child process, measured from outside (RSS, open connections).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import threadkeep
from tests.service._service_helpers import LiveServer
from threadkeep import CursorExpired, Event, EventKind
from threadkeep.service.followers import Followers
from threadkeep.service.routers.events import _follow


def rss_mb(pid: int) -> float:
    """The resident memory of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    """Read from ``sock`` until ``marker`` came (or fail)."""
    got = b""
    while marker not in got:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r}: {got[-200:]!r}"
        got += chunk
        assert len(got) < limit, "too much"
    return got


def fill_events(url: str, messages: int) -> None:
    """Store ``messages`` messages (one event each) in tenant ``default``, 500 per call."""
    with threadkeep.open(url) as store:
        for n in range(messages // 500):
            cid = store.start(f"filler-{n}").id
            store.append_many(cid, [("user", f"message {j} " + "x" * 200) for j in range(500)])


def test_event_streams_do_not_hold_the_log(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """Finding 3: each stream kept the tenant's retained log (~8 MB at 10,000 events)."""
    url = f"sqlite:///{tmp_path}/log.db"
    fill_events(url, 10_000)
    server = live_server(url)
    assert server.proc is not None
    pid = server.proc.pid
    warm = connect(server)  # the first stream warms up the worker (imports, pools)
    warm.sendall(b"GET /v1/events HTTP/1.1\r\nHost: t\r\n\r\n")
    read_until(warm, b"\nid: ")
    before = rss_mb(pid)
    streams: list[socket.socket] = []
    try:
        for _ in range(30):
            sock = connect(server)
            sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: t\r\n\r\n")
            read_until(sock, b"\nid: ")  # the stream skipped the backlog and now follows
            streams.append(sock)
        grown = rss_mb(pid) - before
    finally:
        for sock in [warm, *streams]:
            sock.close()
    assert grown < 40, f"30 streams over a 10,000-event log took {grown:.0f} MB"


def test_a_replayed_backlog_is_sent_in_full(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """from_start streams every retained event, in order, while reading it batch by batch."""
    url = f"sqlite:///{tmp_path}/replay.db"
    fill_events(url, 1_500)
    server = live_server(url)
    sock = connect(server)
    sock.sendall(b"GET /v1/events?from_start=true&follow=false HTTP/1.1\r\nHost: t\r\n\r\n")
    got = read_until(sock, b"0\r\n\r\n", limit=64 << 20)  # the chunked body's end
    sock.close()
    seqs = [
        int(line.split(b'"seq":')[1].split(b",")[0])
        for line in got.split(b"\n")
        if line.startswith(b"data:") and b"message.appended" in line
    ]
    assert len(seqs) == 1_500
    assert seqs == [n for _ in range(3) for n in range(1, 501)]


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[bool, bytes]:
    """Send ``trickle`` a byte every 0.2 s (or nothing) until the server closes or time is up.

    Returns whether the server closed the connection in time, and what it answered.
    """
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    answer = b""
    sent = 0
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if trickle:
                try:
                    sock.sendall(trickle[sent % len(trickle) : sent % len(trickle) + 1])
                except OSError:
                    return True, answer
                sent += 1
            continue
        except OSError:
            return True, answer
        if not chunk:
            return True, answer
        answer += chunk
    return False, answer


def test_slow_requests_are_cut_at_the_read_deadline(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """Finding 6: 6,000 half-sent requests were held open for as long as their clients liked."""
    server = live_server(f"sqlite:///{tmp_path}/slow.db", THREADKEEP_REQUEST_TIMEOUT="1.5")
    idle = connect(server)  # sends nothing at all
    head = connect(server)  # a request head, one byte at a time
    head.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
    body = connect(server)  # a whole head, then a body one byte at a time
    body.sendall(
        b"POST /v1/conversations HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
        b"content-length: 100\r\n\r\n{"
    )
    kept = connect(server)  # a first request answered, then a next one trickled
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert b"200 OK" in read_until(kept, b"\r\n\r\n")
    kept.sendall(b"GET /healthz HTTP/1.1\r\n")
    results: list[tuple[bool, bytes]] = []
    cases = [(idle, b""), (head, b"X-a: b\r\n"), (body, b" "), (kept, b"X-a: b\r\n")]
    began = time.monotonic()
    threads = [
        threading.Thread(target=lambda c=case: results.append(closed_within(c[0], 6.0, c[1])))
        for case in cases
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - began
    for sock, _ in cases:
        sock.close()
    assert [closed for closed, _ in results] == [True] * 4, "a slow request was held"
    assert took < 5.0
    assert sum(b"408 Request Timeout" in answer for _, answer in results) >= 3


def test_an_event_stream_outlives_the_read_deadline(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """The deadline is for a request to arrive; an answer may last (an event stream does)."""
    server = live_server(f"sqlite:///{tmp_path}/long.db", THREADKEEP_REQUEST_TIMEOUT="1")
    sock = connect(server)
    sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: t\r\n\r\n")
    read_until(sock, b"retry: 2000")
    time.sleep(2.0)
    with threadkeep.open(f"sqlite:///{tmp_path}/long.db") as store:
        store.start("late")
    assert b"conversation.started" in read_until(sock, b"conversation.started")
    sock.close()


def test_huge_headers_are_refused_before_they_are_held(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """Finding 6: 50 unfinished 20 MB headers added 950 MB; a whole 10 MB header was served."""
    server = live_server(f"sqlite:///{tmp_path}/big.db")
    assert server.proc is not None
    before = rss_mb(server.proc.pid)
    chunk = b"a" * 65536
    for _ in range(20):  # unfinished heads: cut off at the limit (32 KiB), not after 4 MB
        sock = connect(server)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
        sent = 0
        try:
            while sent < 4 << 20:
                sock.sendall(chunk)
                sent += len(chunk)
                time.sleep(0.001)
        except OSError:
            pass
        answer = b""
        try:
            sock.settimeout(5)
            answer = sock.recv(65536)
        except OSError:
            pass
        sock.close()
        assert sent < 4 << 20, "the server read a 4 MB request head"
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431")
    assert rss_mb(server.proc.pid) - before < 30
    whole = connect(server)  # a complete head of 100 KB
    whole.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert read_until(whole, b"\r\n").startswith(b"HTTP/1.1 431")
    whole.close()


def test_a_nul_in_a_static_name_is_a_404(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """Finding 17: `GET /static/a%00b.js` was a 500 (ValueError: embedded null byte)."""
    server = live_server(f"sqlite:///{tmp_path}/nul.db")
    sock = connect(server)
    sock.sendall(b"GET /static/a%00b.js HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_until(sock, b"\r\n").startswith(b"HTTP/1.1 404")
    sock.close()


def test_a_backlog_that_fails_while_streaming_ends_with_an_error_event() -> None:
    """The backlog is read while streaming now, so its errors become an `event: error`."""

    async def backlog() -> AsyncIterator[Event]:
        at = datetime.now(UTC)
        yield Event("1", EventKind.MESSAGE_APPENDED, "t", "c1", {"seq": 1, "role": "user"}, at)
        raise CursorExpired("1")  # a writer trimmed the log under a slow reader

    async def collect() -> list[str]:
        stream = _follow(
            cast(Any, None), "t", backlog(), None, True, 15.0, False, Followers(),
            lambda event: True,
        )  # fmt: skip
        return [chunk async for chunk in stream]

    sent = asyncio.run(collect())
    assert sent[1].startswith("id: 1\nevent: message.appended")
    assert sent[-1].startswith("event: error\n") and "CursorExpired" in sent[-1]
