"""What a client can make the real server hold: event streams, headers, slow requests.

Regression tests of the adversarial review of b07f6d3 (findings 3, 6 and 17), each against
``threadkeep serve`` in a child process, measured from outside (RSS, open connections).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import threadkeep
from tests.service._service_helpers import LiveServer
from threadkeep import CursorExpired, Event, EventKind
from threadkeep.service.followers import Followers
from threadkeep.service.routers.events import _follow
from threadkeep.service.server import _HeadCount


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
    assert all(b"408 Request Timeout" in answer for _, answer in results)


def test_an_event_stream_outlives_the_read_deadline(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """The deadline is for a request to arrive; an answer may last (an event stream does).

    Bytes of a next request sent while the stream lasts do not start a deadline that would
    cut the stream.
    """
    server = live_server(f"sqlite:///{tmp_path}/long.db", THREADKEEP_REQUEST_TIMEOUT="1")
    sock = connect(server)
    sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: t\r\n\r\n")
    read_until(sock, b"retry: 2000")
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")
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


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
LAST = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"  # answered, then closed
OK = b"HTTP/1.1 200 OK"
TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large"
TIMED_OUT = b"HTTP/1.1 408 Request Timeout"


def statuses(answer: bytes) -> list[bytes]:
    """The status lines of the responses in ``answer``, in order (a body ends without CRLF)."""
    return re.findall(rb"HTTP/1\.1 \d\d\d [^\r]*", answer)


def padded(size: int, request: bytes = HEALTHZ) -> bytes:
    """``request`` with a header added so that its head is ``size`` bytes (its body kept)."""
    head, _, body = request.partition(b"\r\n\r\n")
    pad = b"\r\nX-Pad: "
    return head + pad + b"a" * (size - len(head) - len(pad) - 4) + b"\r\n\r\n" + body


def create(contact: str) -> bytes:
    """A request that starts a conversation with ``contact``."""
    body = json.dumps({"contact_id": contact}).encode()
    return (
        b"POST /v1/conversations HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )


def contacts(server: LiveServer) -> bytes:
    """The server's conversations, as its list answers them."""
    with urllib.request.urlopen(server.url + "/v1/conversations?limit=100", timeout=10) as resp:
        return bytes(resp.read())


def answers(server: LiveServer, *writes: bytes, seconds: float = 5.0) -> tuple[bool, list[bytes]]:
    """Send ``writes`` on a new connection (a moment apart: separate reads for the server).

    Returns whether the server closed the connection within ``seconds``, and its answers.
    """
    sock = connect(server)
    try:
        for n, data in enumerate(writes):
            if n:
                time.sleep(0.1)
            try:
                sock.sendall(data)
            except OSError:  # refused and closed before this write
                break
        closed, answer = closed_within(sock, seconds)
    finally:
        sock.close()
    return closed, statuses(answer)


def test_a_pipelined_request_is_bounded_by_the_head_limit(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """A request that reached h11 behind another was never counted: a 20 KB head was served.

    Its bytes never pass ``data_received`` as the current request's: uvicorn starts it from
    h11's buffer once the earlier response is out (or once the earlier body ends, when its
    response went out first).
    """
    server = live_server(f"sqlite:///{tmp_path}/piped.db", THREADKEEP_MAX_HEADER_BYTES="4096")
    for n in range(1, 4):
        assert answers(server, create(f"c-kept-{n}") + LAST)[1] == [b"HTTP/1.1 201 Created", OK]

    def erase(n: int) -> bytes:  # needs no body: it would run even for a gone client
        return padded(20_000, b"DELETE /v1/contacts/c-kept-%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)

    # whole, behind a first request in the same write (main: 200, 200, 200)
    assert answers(server, HEALTHZ + erase(1) + LAST) == (True, [OK, TOO_LARGE])
    # begun behind a first request, the rest later (main: a new count from the next write)
    begun = erase(2)
    assert answers(server, HEALTHZ + begun[:3000], begun[3000:]) == (True, [OK, TOO_LARGE])
    # behind a body that arrived after its response (a 404 does not wait for the body)
    sock = connect(server)
    sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: t\r\ncontent-length: 5\r\n\r\n")
    assert read_until(sock, b"}").startswith(b"HTTP/1.1 404")
    sock.sendall(b"12345" + erase(3) + LAST)
    closed, answer = closed_within(sock, 5.0)
    sock.close()
    assert (closed, statuses(answer)) == (True, [TOO_LARGE])
    listed = contacts(server)  # none of them reached the app
    assert [listed.count(b'"c-kept-%d"' % n) for n in range(1, 4)] == [1, 1, 1]


def test_a_pipelined_request_has_the_request_deadline(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """A request started from h11's buffer had no deadline (held 18 s at a 2 s deadline)."""
    server = live_server(f"sqlite:///{tmp_path}/piped.db", THREADKEEP_REQUEST_TIMEOUT="1.5")
    post = (
        b"POST /v1/conversations HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
        b"content-length: 100\r\n\r\n{"
    )
    body = connect(server)  # a whole head behind a first request, then a byte of body a time
    body.sendall(HEALTHZ + post)
    head = connect(server)  # a head behind a first request, then a line at a time
    head.sendall(HEALTHZ + b"GET /healthz HTTP/1.1\r\n")
    after = connect(server)  # behind a body that arrived after its response
    after.sendall(b"POST /nowhere HTTP/1.1\r\nHost: t\r\ncontent-length: 5\r\n\r\n")
    read_until(after, b"}")
    after.sendall(b"12345" + post)
    results: dict[str, tuple[bool, bytes]] = {}
    cases = {"body": (body, b" "), "head": (head, b"X-a: b\r\n"), "after": (after, b" ")}
    began = time.monotonic()
    threads = [
        threading.Thread(
            target=lambda n=name, c=case: results.update({n: closed_within(c[0], 6.0, c[1])})
        )
        for name, case in cases.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - began
    for sock, _ in cases.values():
        sock.close()
    assert {name: closed for name, (closed, _) in results.items()} == dict.fromkeys(cases, True)
    assert took < 5.0
    assert statuses(results["body"][1]) == [OK, TIMED_OUT]
    assert statuses(results["head"][1]) == [OK, TIMED_OUT]
    assert statuses(results["after"][1]) == [TIMED_OUT]


def test_a_pipelined_head_stalled_behind_a_response_gets_its_408(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """Review: uvicorn's keep-alive timer, armed after the first response, closed a stalled
    pipelined head silently at the keep-alive (1 s here) instead of its deadline's 408."""
    server = live_server(
        f"sqlite:///{tmp_path}/stall.db",
        THREADKEEP_REQUEST_TIMEOUT="2.5",
        THREADKEEP_KEEP_ALIVE="1",
    )
    sock = connect(server)
    began = time.monotonic()
    sock.sendall(HEALTHZ + b"GET /healthz HTTP/1.1\r\n")
    closed, answer = closed_within(sock, 6.0)
    took = time.monotonic() - began
    sock.close()
    assert (closed, statuses(answer)) == (True, [OK, TIMED_OUT])
    assert took > 2.0


def test_a_request_framed_by_both_length_headers_is_refused(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """Review: Content-Length with Transfer-Encoding (a smuggling path behind a proxy that
    frames by Content-Length) was answered and the connection kept: now 400 and closed, and
    nothing behind it is parsed (RFC 9112, 6.1)."""
    server = live_server(f"sqlite:///{tmp_path}/framed.db")
    body = b'{"contact_id": "c-framed"}'
    both = (
        b"POST /v1/conversations HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (len(body), len(body), body)
    )
    assert answers(server, both + create("c-behind") + LAST) == (
        True,
        [b"HTTP/1.1 400 Bad Request"],
    )
    listed = contacts(server)
    assert b"c-framed" not in listed and b"c-behind" not in listed


def test_empty_lines_before_a_request_line_count_toward_its_head(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """CR/LF before a request line are part of its head: a parser that skips them (llhttp)
    would otherwise hide the head's end from the count (a 120 KB head served at 4 KiB).

    h11 refuses any empty line before a request line (400); over the limit the count
    answers first (431).
    """
    server = live_server(f"sqlite:///{tmp_path}/crlf.db", THREADKEEP_MAX_HEADER_BYTES="4096")
    refused = {TOO_LARGE, b"HTTP/1.1 400 Bad Request"}
    closed, got = answers(server, b"\r\n\r\n" + padded(20_000) + LAST)
    assert closed and len(got) == 1 and got[0] in refused
    assert answers(server, b"\r\n" * 3000 + LAST) == (True, [TOO_LARGE])
    closed, got = answers(server, b"\r\n" * 1000, b"\r\n" * 1100, LAST)  # h11: 400 at once
    assert closed and len(got) == 1 and got[0] in refused
    assert answers(server, HEALTHZ + b"\r\n" * 3000 + LAST) == (True, [OK, TOO_LARGE])
    closed, got = answers(server, b"\r\n" + LAST)  # h11: 400 (RFC 9112 lets a server skip it)
    assert closed and len(got) == 1 and got[0] in refused | {OK}


def test_a_head_ending_across_reads_is_counted_exactly(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """The blank line ending a head, split at each of its bytes: a head of exactly the limit
    is served (with what follows it not counted as head), one byte more is refused.
    """
    server = live_server(f"sqlite:///{tmp_path}/split.db", THREADKEEP_MAX_HEADER_BYTES="4096")
    for cut in range(5):  # before its first byte ... after its last
        exact, over = padded(4096), padded(4097)
        at = len(exact) - 4 + cut
        assert answers(server, exact[:at], exact[at:] + LAST) == (True, [OK, OK]), cut
        at = len(over) - 4 + cut
        assert answers(server, over[:at], over[at:] + LAST) == (True, [TOO_LARGE]), cut


def test_the_head_count_matches_the_parsers_end_of_a_head() -> None:
    """The count, fed in pieces cut anywhere, equals where h11 ends a head (its own pattern,
    after any CR/LF before the request line)."""
    rng = random.Random(11)
    pieces = [b"a", b"\r", b"\n", b"\r\n", b"x: y", b"\r\n\r\n"]
    for _ in range(5000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        lead = len(data) - len(data.lstrip(b"\r\n"))
        end = re.compile(rb"\n\r?\n").search(data, lead)
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 4))))
        count, size, prev = _HeadCount(), 0, 0
        for cut in [*cuts, len(data)]:
            size, prev = count.add(data[prev:cut]), cut
        assert size == (end.end() if end else len(data)), (data, cuts)


def test_pipelined_and_kept_alive_requests_are_served_in_order(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """The bounds change nothing for well-behaved clients: pipelined requests (with a body)
    are answered in order, a kept-alive connection serves one request after another."""
    server = live_server(f"sqlite:///{tmp_path}/order.db", THREADKEEP_MAX_HEADER_BYTES="4096")
    post = create("c-piped")
    created = b"HTTP/1.1 201 Created"
    assert answers(server, HEALTHZ + post + padded(4000) + LAST) == (
        True,
        [OK, created, OK, OK],
    )
    assert answers(server, HEALTHZ + post[:60], post[60:] + HEALTHZ, LAST) == (
        True,
        [OK, created, OK, OK],
    )
    sock = connect(server)  # one request after another, each after the last answer
    for _ in range(3):
        sock.sendall(padded(4000))
        assert read_until(sock, b"}").startswith(OK)
    sock.sendall(post)
    assert read_until(sock, b"}").startswith(created)
    sock.close()
    assert contacts(server).count(b'"c-piped"') == 3


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
