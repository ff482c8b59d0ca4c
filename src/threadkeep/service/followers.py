"""One reader of the change log per worker process, waking every SSE follower it serves.

Before, each open ``GET /v1/events`` stream read the store once a second while it waited (and,
on Redis, waited in XREAD BLOCK on a connection of the store's blocking pool), so 1,000 idle
dashboards cost 1,000 reads a second and as many waits on the store. Now one task per process
(``Followers``) follows the whole log (``store.events(tenant=None)``) and the streams wait on it
in memory: an idle stream makes no read and holds no connection, whatever the backend.

The log stays the only source of truth, so the events API keeps its guarantees (log order,
nothing missed or repeated across a resume, tenant isolation):

- The reader keeps the newest events it read in a window (``WINDOW``), a contiguous stretch of
  the log: a stream whose position is in it takes what follows from memory, filtered to its
  tenant, and moves to the window's end.
- A stream whose position is not in the window (it starts from an older cursor, or has never
  seen an event of the window) reads the store itself, as before.
- A stream without a cursor starts at the end of the log: the reader knows each tenant's last
  event id (the client's resume point), so it need not read the tenant's log to find it (on
  Redis that read scans the whole log). Streams that open while the reader is still reading
  to the end of the log wait for it (``READY_WAIT``) rather than each reading the log.
- Waiting: a stream takes its tenant's *mark* before it looks (in the window or the store), and
  when it found nothing waits for the mark to move; it looks again only when it moved (not at
  each heartbeat). The reader moves a tenant's mark for each event of that tenant it reads. An
  event committed after the look is read by the reader after the mark was taken, so it moves the
  mark; one committed before is seen by the look.
- Sending: what a stream takes from the window at one wake goes out as one chunk, and each
  event is rendered (its SSE text) once per process while it is in the window (``text``),
  however many streams of its tenant send it.
- Pacing: under a busy log the reader reads no more often than every ``PACE``. After a read
  that got events (fewer than a full batch), the next read starts no sooner than ``PACE`` after
  that one began, so the writes in between come in one read, not one read each: a worker's
  reader read about once per write it was notified of (on PostgreSQL a ~0.25 ms statement
  each, per worker, whatever its streams). The cost is at most ``PACE`` more delivery latency
  while the log is busy. An idle reader is as before: its read waits on the store's own wake-up
  (LISTEN, XREAD BLOCK, …), and a write after a quiet spell is read at once; a full batch is
  followed by the next read at once (there is more, and nothing left to fold). While it
  pauses the reader falls up to ``PACE`` of writes further behind the log's end, so a store
  whose log keeps fewer than ``PACED_LOG`` events (``events_kept``) is read unpaced: with the
  writes of a pause more than the log keeps, the reader (then every stream) would fall out of
  the bounded log (``CursorExpired``) where it had kept up.
- When the store is away the reader tries again (capped backoff) from where it was, so nothing
  is missed and idle streams just wait; when it fell out of the bounded log it starts again at
  the log's end and moves every mark, so every stream looks in the store once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from threadkeep import AsyncStore, CursorExpired, Event, ThreadkeepError

__all__ = ["PACE", "PACED_LOG", "READY_WAIT", "WINDOW", "Followers", "Mark"]

log = logging.getLogger("threadkeep.service")

WINDOW = 2048  # newest events kept in memory for the streams of this process
READY_WAIT = 5.0  # longest a new stream waits for the reader to know the end of the log
PACE = 0.015  # after a read that got events, the next starts no sooner than this after it began
PACED_LOG = 1_000  # a log keeping fewer events is read unpaced (a pause could fall out of it)
_SLICE = 1.0  # the reader's longest wait for events in one events() call
_BACKOFF = (0.1, 5.0)  # first and longest pause of the reader after a failure

#: (resets, the tenant's generation): moves when the tenant may have something new
Mark = tuple[int, int]


class Followers:
    """The reader of the log and the window and marks it drives (see the module docstring).

    Made at each start of the app (``app.state.followers``), so once per worker process;
    started by the first event stream, stopped with the app (or at SIGTERM/SIGINT).
    """

    def __init__(self, window: int = WINDOW, pace: float = PACE) -> None:
        self._size = window
        self._pace = pace
        self._window: list[Event] = []  # holds up to twice ``window`` (trimmed by halves)
        self._first = 0  # the absolute number of the window's first event
        self._number: dict[str, int] = {}  # event id → absolute number, for the window's events
        self._texts: dict[str, str] = {}  # event id → its rendering, for the window's events
        self._start: str | None = None  # the id just before the window (None: not known)
        self._head: str | None = None  # the id of the last event read (None: not known)
        self._last: dict[str, str] = {}  # each tenant's last event id in the log, when ready
        self._ready = False
        self._known = asyncio.Event()  # set while ``_ready`` (or once stopped)
        self._resets = 0
        self._generations: dict[str, int] = {}
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    # ---- what a stream calls ---------------------------------------------------------------

    def start(self, store: AsyncStore) -> None:
        """Start the reader of ``store``'s log, unless it runs already (call in the app's loop)."""
        if self._task is None and not self._stopped:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run(store), name="threadkeep-followers")

    def mark(self, tenant: str) -> Mark:
        """The tenant's mark; take it before looking for events."""
        return (self._resets, self._generations.get(tenant, 0))

    def since(self, tenant: str, position: str | None) -> tuple[list[Event], str] | None:
        """The tenant's events after ``position`` and the new position, from the window.

        None: ``position`` is not in the window; read the store instead.
        """
        if not self._ready or position is None:
            return None
        if position == self._start:
            begin = 0
        else:
            number = self._number.get(position)
            if number is None:
                return None
            begin = number - self._first + 1
        found = [e for e in self._window[begin:] if e.tenant == tenant]
        assert self._head is not None  # ready: the reader knows the end of the log
        return found, self._head

    def text(self, event: Event, render: Callable[[Event], str]) -> str:
        """``render(event)``, computed once while the event is in the window.

        Every stream of the event's tenant in this process sends it: they share one rendering,
        kept by event id, so ``render`` must be the same for every call (the service's one SSE
        rendering, ``routers.events.sse``); a stream that sends something else renders it itself.
        """
        text = self._texts.get(event.id)
        if text is None:
            text = render(event)
            if event.id in self._number:
                self._texts[event.id] = text
        return text

    def tail(self, tenant: str) -> tuple[str | None, str | None] | None:
        """(the tenant's last event id, the log's last) for a stream that starts at the end.

        None: the reader does not know the end of the log yet; read the store instead.
        """
        return (self._last.get(tenant), self._head) if self._ready else None

    async def wait_ready(self, seconds: float) -> None:
        """Wait up to ``seconds`` for a started reader to know the end of the log."""
        if not self._ready and self._task is not None and not self._stopped:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._known.wait()

    async def wait(self, tenant: str, mark: Mark, seconds: float) -> None:
        """Return when the tenant's mark moves past ``mark``, at stop, or after ``seconds``."""
        if self._stopped or self.mark(tenant) != mark:
            return
        future = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault(tenant, set())
        waiting.add(future)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await future
        finally:
            waiting.discard(future)
            if not waiting and self._waiting.get(tenant) is waiting:
                del self._waiting[tenant]

    @property
    def stopped(self) -> bool:
        """True once the app stops: streams end."""
        return self._stopped

    def stop_soon(self) -> None:
        """Wake every stream so it ends; callable from any thread (a signal handler)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stopped = True
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._stop)

    async def aclose(self) -> None:
        """Stop the reader and wake every stream (the app's shutdown)."""
        self._stop()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- the reader ------------------------------------------------------------------------

    def _stop(self) -> None:
        self._stopped = True
        self._known.set()
        self._reset()

    def _reset(self) -> None:
        """Move every mark and wake every stream: they look in the store themselves."""
        self._resets += 1
        for waiting in self._waiting.values():
            for future in waiting:
                if not future.done():
                    future.set_result(None)
        self._waiting.clear()

    def _take(self, event: Event) -> None:
        """Add an event the reader read to the window and wake its tenant's streams."""
        if len(self._window) >= 2 * self._size:  # keep the newest ``size``, in one cut
            cut = len(self._window) - self._size
            for dropped in self._window[:cut]:
                del self._number[dropped.id]
                self._texts.pop(dropped.id, None)
            self._start = self._window[cut - 1].id
            del self._window[:cut]
            self._first += cut
        self._number[event.id] = self._first + len(self._window)
        self._window.append(event)
        self._head = event.id
        tenant = event.tenant
        self._last[tenant] = event.id
        self._generations[tenant] = self._generations.get(tenant, 0) + 1
        for future in self._waiting.pop(tenant, ()):
            if not future.done():
                future.set_result(None)

    def _begin_at(self, head: str | None, last: dict[str, str]) -> None:
        """Start an empty window at ``head`` (the end of the log)."""
        self._window.clear()
        self._number.clear()
        self._texts.clear()
        self._last = last
        self._start = self._head = head
        self._ready = True
        self._known.set()
        self._reset()  # streams that looked before the reader knew the end look again

    async def _follow(self, store: AsyncStore) -> None:
        """Read the log from ``_head`` for one slice (``_SLICE`` without events), paced."""
        loop = asyncio.get_running_loop()
        pace = self._pace if store.limits.events_kept >= PACED_LOG else 0.0
        async with contextlib.aclosing(
            store._event_reads(after=self._head, timeout=_SLICE)
        ) as reads:
            began = loop.time()  # the read starts when the next list is asked for
            async for events, full in reads:
                for event in events:
                    self._take(event)
                if pace and events and not full:  # fold the next writes
                    rest = began + pace - loop.time()
                    if rest > 0:
                        await asyncio.sleep(rest)
                began = loop.time()

    async def _run(self, store: AsyncStore) -> None:
        pause = _BACKOFF[0]
        while not self._stopped:
            try:
                if not self._ready:
                    head, last = None, {}
                    async for event in store.events(timeout=0):  # to the end of the log
                        head = last[event.tenant] = event.id
                    self._begin_at(head, last)
                await self._follow(store)
                pause = _BACKOFF[0]
            except CursorExpired:  # fell behind the bounded log: start again at its end
                self._ready = False
                self._known.clear()
                self._reset()
            except Exception as exc:  # the store is away: try again from the same place
                if isinstance(exc, ThreadkeepError):
                    log.warning("events reader: %s; trying again in %.1f s", exc, pause)
                else:
                    log.exception("events reader failed; trying again in %.1f s", pause)
                await asyncio.sleep(pause)
                pause = min(_BACKOFF[1], pause * 2)
