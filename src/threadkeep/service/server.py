"""``threadkeep serve``: uvicorn with N real worker processes and a graceful shutdown.

Workers build the app with ``create_app()`` from ``THREADKEEP_*`` variables, which ``run`` sets
from its arguments and checks (and warns about) once, before any worker starts. On SIGTERM/SIGINT
uvicorn stops accepting, lets in-flight requests finish (event streams get ``GRACE`` seconds),
then each worker closes its store.

A client cannot make the server hold memory or connections for free: the HTTP parser is h11
(``BoundedH11Protocol``), whose request head is bounded by ``THREADKEEP_MAX_HEADER_BYTES``
(larger: 431 and closed), and each request must arrive whole, head and body, within
``THREADKEEP_REQUEST_TIMEOUT`` seconds of its first byte (or of the connection opening, or of
uvicorn starting it when it was pipelined behind another), else the connection gets 408 and is
closed. Both bounds hold for every request of a connection: the first, a kept-alive one, and
one pipelined behind another. A request framed by both ``Content-Length`` and
``Transfer-Encoding`` gets 400 and is closed. Idle kept-alive connections close after
``THREADKEEP_KEEP_ALIVE`` seconds. All of this happens before authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from threadkeep import InvalidInput, redact_url
from threadkeep.bot import make_bot
from threadkeep.service.app import create_app
from threadkeep.service.settings import (
    ServiceSettings,
    get_settings,
    is_loopback,
    load_settings,
    unknown_variables,
)

__all__ = ["GRACE", "BoundedH11Protocol", "check_exposure", "run"]

#: Seconds in-flight requests (and open event streams) get at shutdown.
GRACE = 5

log = logging.getLogger("threadkeep.service")


def _plain(status: str, text: str) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"connection: close\r\ncontent-length: {len(text)}\r\n\r\n{text}"
    ).encode()


_TIMED_OUT = _plain("408 Request Timeout", "the request did not arrive in time; resend it")
_TOO_LARGE = _plain("431 Request Header Fields Too Large", "the request head is too large")


_BLANK_LINE = re.compile(rb"\n\r?\n")  # ends a head: h11's own pattern (a bare LF is a line end)


class _HeadCount:
    """The bytes of one request head so far, fed as they arrive (its end may come split).

    A head is any CR/LF before its request line (h11 refuses them; other parsers skip them),
    the request line and headers, and the blank line that ends it. Bytes after that end are
    the body's, or the next request's, and are not counted here.
    """

    __slots__ = ("ended", "leading", "size", "tail")

    def __init__(self) -> None:
        self.size = 0
        self.leading = True  # no byte of a request line yet
        self.ended = False
        self.tail = b""  # the head's last bytes (at most 2), for an end split across reads

    def add(self, data: bytes) -> int:
        """Count what of ``data`` belongs to the head; return the head's size so far."""
        if self.ended:  # (a parser that has the whole head no longer asks)
            return self.size
        begin = 0
        if self.leading:
            if data[:1] in b"\r\n":
                begin = len(data) - len(data.lstrip(b"\r\n"))
                if begin == len(data):
                    self.size += begin
                    return self.size
            self.leading = False
        found = -1
        if self.tail:
            edge = _BLANK_LINE.search(self.tail + data[begin : begin + 2])
            if edge:
                found = edge.end() - len(self.tail) + begin
        if found < 0:
            whole = _BLANK_LINE.search(data, begin)
            if whole:
                found = whole.end()
        if found < 0:
            self.size += len(data)
            self.tail = (self.tail + data[max(begin, len(data) - 2) :])[-2:]
        else:
            self.size += found
            self.ended = True
        return self.size


class _BoundedConnection(h11.Connection):
    """h11's server side, telling its protocol when a next request cycle starts.

    uvicorn starts one after a response (when a pipelined request is waiting) and when a
    request's body ends after its response went out. Whatever h11 holds then is the start of
    the next request, which reached h11 while an earlier one was current: it is counted then,
    and the deadline starts then. Once the protocol refuses the connection, h11 parses nothing
    more (``PAUSED``: uvicorn stops reading), so no request after a refusal reaches the app.
    """

    def __init__(self, max_head: int, begins: Callable[[bytes], None]) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head)
        self.begins: Callable[[bytes], None] | None = begins

    def start_next_cycle(self) -> None:
        """Start the next cycle and tell the protocol what of its request is in already."""
        super().start_next_cycle()
        if self.begins is not None:
            self.begins(self.trailing_data[0])

    def next_event(self) -> Any:
        """h11's next event; a request framed twice is a protocol error (400 and closed).

        A request with both ``Content-Length`` and ``Transfer-Encoding`` is how requests are
        smuggled past a proxy that frames by the other header (RFC 9112, 6.1: reject it, or
        answer it and close). h11 accepts it and frames it by the latter.
        """
        event = super().next_event()
        if type(event) is h11.Request:
            names = {name for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                raise h11.RemoteProtocolError(
                    "both Content-Length and Transfer-Encoding", error_status_hint=400
                )
        return event

    def refuse(self) -> None:
        """Parse nothing more: every next event is ``PAUSED``."""
        self.begins = None
        self.next_event = _paused  # type: ignore[method-assign]


def _paused() -> type[h11.PAUSED]:
    return h11.PAUSED


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a bounded request head and a deadline for each request.

    Every request of a connection is bounded: the first, a next one on a kept-alive
    connection, and one pipelined behind another (whose bytes h11 buffered while the earlier
    request was current; they are counted, and its deadline starts, when uvicorn starts it).

    The deadline starts when the connection opens, with the first byte of a next request on
    a kept-alive one, or when a pipelined request that had begun arriving is started; it ends
    once h11 has the whole request (then the app has it: a long response, such as an event
    stream, is not limited, nor are bytes of a next request sent meanwhile). Past it the
    client gets 408 and the connection is closed, so a client trickling a request holds
    nothing for long. A head over ``max_header_bytes`` (CR/LF before its request line
    included) gets 431 and the connection is closed, whether it is still arriving or came
    whole (h11's own limit bounds only a head that is still incomplete). After either answer
    no further request of the connection is parsed.
    """

    conn: _BoundedConnection

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        from threadkeep.service.settings import get_settings

        settings = get_settings()
        self.request_timeout = settings.request_timeout
        self.max_head = settings.max_header_bytes
        self.conn = _BoundedConnection(self.max_head, self._next_request)
        self._deadline: asyncio.TimerHandle | None = None
        self._head = _HeadCount()  # the current request's head

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept a connection: its first request must arrive within the timeout."""
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection's deadline."""
        self._disarm()
        self.conn.begins = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser; the deadline holds while the request is still arriving."""
        if self.conn.their_state is h11.IDLE:
            if self._deadline is None:
                self._arm()  # a next request begins on a kept-alive connection
            if self._head.add(data) > self.max_head:
                self._refuse(_TOO_LARGE)
                return
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()  # the whole request is in

    def on_response_complete(self) -> None:
        """Start a pipelined request, if one waits; it may be whole already."""
        super().on_response_complete()
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """Hand the connection over: what follows is the websocket protocol's."""
        self._disarm()
        self.conn.begins = None
        super().handle_websocket_upgrade(event)

    def _next_request(self, buffered: bytes) -> None:
        """A next request cycle starts, with ``buffered`` of its bytes in already."""
        self._head = _HeadCount()
        if not buffered:
            self._disarm()  # its deadline starts with its first byte
            return
        # it began arriving while an earlier request was current: its deadline, not uvicorn's
        # keep-alive timer (armed after that response), bounds it now
        self._unset_keepalive_if_required()
        self._arm()
        if self._head.add(buffered) > self.max_head:
            self._refuse(_TOO_LARGE)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._refuse(_TIMED_OUT)

    def _refuse(self, answer: bytes) -> None:
        """Answer (unless a response is under way), close, and parse nothing more."""
        self._disarm()
        self.conn.refuse()
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(answer)
        self.transport.close()


def check_exposure(settings: ServiceSettings) -> None:
    """Refuse to serve a non-loopback address without API keys.

    Raises:
        InvalidInput: ``host`` is not loopback and no API key is configured.
    """
    if not is_loopback(settings.host) and not settings.tenants_by_key():
        raise InvalidInput(
            f"refusing to serve {settings.host} without API keys: anyone who can reach it "
            "would read every conversation. Set THREADKEEP_API_KEYS (tenant:key,…) or "
            "THREADKEEP_API_KEYS_FILE, or bind 127.0.0.1",
            field="host",
        )


def _worker_app() -> FastAPI:
    """A worker's app, from the settings ``run`` checked (and warned about) before it started.

    Once the app has started, the objects the worker made until then (the modules, the app,
    the store's clients: about 100,000 per worker) are moved out of the cyclic garbage
    collector's sight (``gc.freeze``): nearly all live as long as the process (one that later
    becomes cyclic garbage is never freed; a few at most, measured in review), and each full
    collection traversed all of them (70-100 ms of CPU per worker here, a pause every
    request on that worker waited through). What is made later is collected as before.
    """
    app = create_app(get_settings())
    started = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with started(app) as state:
            gc.collect()  # what startup left as garbage is collected, not frozen
            gc.freeze()
            yield state

    app.router.lifespan_context = lifespan
    return app


def run(
    *,
    store_url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
) -> None:
    """Serve the API until interrupted.

    Args:
        store_url: the store (default: ``THREADKEEP_STORE``, else the SQLite default).
        host: the address to bind.
        port: the port.
        workers: worker processes (each opens its own store connections).

    Raises:
        InvalidInput: a non-loopback host without API keys, a bad setting or bot (one line
            naming the variable and the rule).
    """
    if store_url is not None:
        os.environ["THREADKEEP_STORE"] = store_url
    os.environ["THREADKEEP_HOST"] = host
    os.environ["THREADKEEP_PORT"] = str(port)
    os.environ["THREADKEEP_WORKERS"] = str(workers)
    settings = load_settings()
    for name in unknown_variables():
        sys.stderr.write(f"warning: {name} is not a threadkeep setting (a typo?); ignored\n")
    # Check everything here, so N workers do not each fail with a traceback.
    store = redact_url(settings.store)  # also checks the URL
    settings.tenants_by_key()
    settings.visitor_secrets()
    check_exposure(settings)
    make_bot(settings.bot)
    shown = f"[{host}]" if ":" in host else host
    sys.stderr.write(
        f"threadkeep serving {store} at http://{shown}:{port}/ "
        f"({workers} worker{'s' if workers != 1 else ''}; API docs at /docs)\n"
    )
    sys.stderr.flush()
    uvicorn.run(
        "threadkeep.service.server:_worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers if workers > 1 else None,
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=GRACE,
        timeout_worker_healthcheck=settings.worker_healthcheck,
        proxy_headers=False,
        http=BoundedH11Protocol,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=settings.keep_alive,
    )
