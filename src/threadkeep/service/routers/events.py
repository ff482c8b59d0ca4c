"""``GET /v1/events``: the tenant's change events as Server-Sent Events.

``Last-Event-ID`` (or ``?after=``) resumes after that event and replays what was missed; a cursor
that fell out of the bounded log gets 410, before the stream starts. Without a cursor the stream
starts at the end of the log (only new changes). Heartbeat comments keep proxies from closing an
idle stream.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from threadkeep import AsyncStore, Event, ThreadkeepError
from threadkeep.service.deps import PublicCallerDep, SettingsDep, StoreDep
from threadkeep.service.followers import READY_WAIT, Followers, Mark
from threadkeep.service.routers import errors

__all__ = ["router", "sse"]

log = logging.getLogger("threadkeep.service")
router = APIRouter(prefix="/v1", tags=["events"])

#: The most a stream sends in one write from the window (then the next, once the connection
#: took it): a stream that fell behind a busy tenant does not buffer the whole window at once.
CHUNK = 64 * 1024

_EXAMPLE = (
    "id: 42\nevent: message.appended\n"
    'data: {"id": "42", "kind": "message.appended", "tenant": "default", '
    '"conversation_id": "01JDZ3V7K2M9X4QW8T6R5YB0NC", "data": {"seq": 3, "role": "user"}, '
    '"at": "2026-11-30T09:15:02.123456+00:00"}\n\n'
)


def _everything(event: Event) -> bool:
    return True


def sse(event: Event) -> str:
    """Return one event in the SSE wire format (its id is the resume cursor)."""
    data = json.dumps(event.to_dict(), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"


async def _follow(
    store: AsyncStore,
    tenant: str,
    backlog: AsyncIterator[Event],
    after: str | None,
    replay: bool,
    heartbeat: float,
    follow: bool,
    followers: Followers,
    keep: Callable[[Event], bool],
    skipped: str | None = None,
) -> AsyncIterator[str]:
    """Send the backlog (or only move the client's cursor past it), then follow new events.

    The backlog is read from the store as the client takes it, one batch at a time (``events``
    reads ``EVENT_BATCH`` per query), so a stream holds one batch, never the tenant's log.
    Following, the stream waits on the process's reader of the log (``Followers``): it reads
    the store only when its position is not in the reader's window, and an idle stream makes
    no read at all. What it takes from the window at one wake goes out in chunks of up to about
    ``CHUNK`` characters (one write each, not one per event), each event's text rendered once
    per process (``Followers.text``) however many streams of its tenant send it.
    """
    yield "retry: 2000\n\n"
    try:
        async for event in backlog:
            after = event.id
            if replay:
                if keep(event):
                    yield sse(event)
            else:
                skipped = event.id
        if skipped is not None:
            yield f"id: {skipped}\n\n"  # moves the client's resume point to the end of the log
        if not follow:
            return
        quiet_since = time.monotonic()
        looked: Mark | None = None
        while not followers.stopped:
            mark = followers.mark(tenant)  # before looking: a later change moves it
            got = False
            if mark != looked:  # else nothing of the tenant's came since the last look
                found = followers.since(tenant, after)
                if found is None:  # not in the reader's window: read the store, as before
                    async for event in store.events(tenant=tenant, after=after, timeout=0):
                        after, got = event.id, True
                        if keep(event):
                            yield sse(event)
                            quiet_since = time.monotonic()
                else:  # what the window holds: one write, each event rendered once a process
                    new, after = found
                    got = bool(new)
                    parts: list[str] = []
                    size = 0
                    for event in new:
                        if keep(event):
                            text = followers.text(event, sse)
                            parts.append(text)
                            size += len(text)
                            if size >= CHUNK:
                                yield "".join(parts)
                                parts, size = [], 0
                                quiet_since = time.monotonic()
                    if parts:
                        yield "".join(parts)
                        quiet_since = time.monotonic()
                looked = None if got else mark
            if not got:
                await followers.wait(tenant, mark, quiet_since + heartbeat - time.monotonic())
            if time.monotonic() - quiet_since >= heartbeat:
                yield ": heartbeat\n\n"
                quiet_since = time.monotonic()
    except ThreadkeepError as exc:  # cursor expired under a slow reader, store gone …
        log.warning("events stream for tenant %s ended: %s", tenant, exc)
        body = json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}})
        yield f"event: error\ndata: {body}\n\n"


async def _each(events: list[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


async def _backlog(first: Event | None, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    if first is not None:
        yield first
        async for event in rest:
            yield event


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "an endless stream of change events (and heartbeat comments)",
            "content": {"text/event-stream": {"schema": {"type": "string"}, "example": _EXAMPLE}},
        },
        **errors(410),
    },
    summary="Follow changes (Server-Sent Events)",
)
async def events(
    request: Request,
    caller: PublicCallerDep,
    store: StoreDep,
    settings: SettingsDep,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", max_length=128, description="resume after this event"),
    ] = None,
    after: Annotated[
        str | None, Query(max_length=128, description="resume after this event id")
    ] = None,
    from_start: Annotated[
        bool, Query(description="without a cursor: replay the whole retained log first")
    ] = False,
    follow: Annotated[
        bool, Query(description="false: send what is already in the log, then end")
    ] = True,
) -> StreamingResponse:
    """Stream the tenant's change events: each has ``id`` (the cursor), ``event`` and JSON data.

    A visitor token (``?visitor_token=``: EventSource cannot send headers) follows its own
    conversation only: its messages (not ``system`` or ``tool`` ones), status changes, closing
    and erasure. With public chat, a visitor without a token yet gets a stream with no events.
    """
    tenant = caller.tenant
    keep = caller.visitor.sees if caller.visitor else _everything
    cursor = last_event_id or after
    replay = cursor is not None or from_start
    followers: Followers = request.app.state.followers
    followers.start(store)
    if not replay:
        await followers.wait_ready(READY_WAIT)
    tail = None if replay else followers.tail(tenant)
    if tail is not None:  # the end of the log is known: nothing to read before following
        last, cursor = tail
        backlog = _each([])
    else:
        # Read the first event now, so an expired cursor is a 410 rather than a broken stream;
        # the rest of what is already there is read while streaming, one batch at a time.
        rest = aiter(store.events(tenant=tenant, after=cursor, timeout=0))
        backlog, last = _backlog(await anext(rest, None), rest), None
    stream = _follow(
        store, tenant, backlog, cursor, replay, settings.sse_heartbeat, follow, followers, keep,
        last,
    )  # fmt: skip
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
