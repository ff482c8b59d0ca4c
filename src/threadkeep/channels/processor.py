"""The channel processor: answers unanswered inbound messages, per conversation in order.

The store is the durable inbox. The processor follows the store's events log; each
``message.appended`` of a ``user`` message schedules its conversation. Under the conversation's
turn lease it decides from the store alone what is unanswered: the inbound messages after the
last covered seq, where a bot reply covers up to its ``reply_to`` seq, a human agent's message
covers everything before it, and a contact fact ``_channel_covered:<conversation id>`` records
the coverage after each turn (also of turns that ended without a reply: stale messages, a silent
bot), so the next turn reads only the history after it. All unanswered messages are
answered by one reply (the bot sees them joined, newest last), so messages that arrive during a
turn are answered together by the next one.

Exactly one reply per inbound message, also across crashes: the reply is appended through the
turn (fenced by the lease token), and the coverage it records is read back by whoever takes the
next turn. A processor killed before appending leaves the messages unanswered; once its lease
runs out another (or the restarted) processor answers them. One killed after appending leaves
them covered. A turn that finds the lease taken retries shortly, so a message stored while
another processor was finishing is not missed. Inbound messages older than ``stale_after`` (by
the provider's timestamp) are covered without a reply.

Stopping (``stop`` set, e.g. at SIGTERM) drains: turns in flight finish (their replies are
stored and sent), nothing new starts; what is left is found by the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Final, Protocol

from threadkeep import (
    AsyncStore,
    AsyncTurn,
    BackendError,
    Conversation,
    ConversationClosed,
    ConversationNotFound,
    CursorExpired,
    Message,
    Status,
    StoreClosed,
    TurnInProgress,
)
from threadkeep.bot import Bot, respond_to
from threadkeep.channels.config import ChannelConfig
from threadkeep.channels.inbox import inbound_of, is_channel_conversation, is_unsent_reply

__all__ = ["COVERED_FACT", "Outbound", "Processor", "Work", "unanswered"]

log = logging.getLogger("threadkeep.channels")

#: Contact fact (internal: ``_``-prefixed) recording a turn's coverage, per conversation.
COVERED_FACT: Final = "_channel_covered:"
_PAGE: Final = 500
_RETRY_BUSY: Final = 0.25  # seconds before retrying a conversation whose lease is taken
_RETRY_DOWN: Final = 1.0  # seconds before retrying after a store failure
_IDLE: Final = 0.5  # seconds an events read waits once caught up (bounds the stop latency)
_MAX_BACKOFF: Final = 300.0  # seconds: the longest wait before retrying a failing turn


class Outbound(Protocol):
    """Sends a stored reply through its conversation's channel (``channels.outbound``)."""

    async def deliver(self, store: AsyncStore, conv: Conversation, reply: Message) -> None:
        """Send ``reply`` and record its delivery state on it."""
        ...


class Observer(Protocol):
    """Counts what the processor does (the service's metrics)."""

    def replied(self, provider: str, lag_seconds: float) -> None:
        """One reply stored; ``lag_seconds`` from the oldest message it answers."""
        ...


class Work:
    """What a turn found: unanswered messages, their coverage, replies not sent yet.

    Attributes:
        pending: the unanswered inbound messages, oldest first.
        covered: the seq every earlier inbound message is covered to.
        unsent: replies stored but not sent yet (a processor stopped before sending them).
    """

    def __init__(self, pending: list[Message], covered: int, unsent: list[Message]) -> None:
        self.pending = pending
        self.covered = covered
        self.unsent = unsent


def _provider_time(message: Message) -> datetime:
    record = inbound_of(message) or {}
    try:
        return datetime.fromisoformat(str(record["provider_timestamp"]))
    except (KeyError, ValueError):
        return message.created_at


async def _from_a_channel(store: AsyncStore, conv: Conversation) -> bool:
    """Whether a channel brought the conversation, or at least its newest message.

    The second case is a contact whose open conversation started elsewhere (a web chat under
    the same contact id): the channel's message landed there and is answered there.
    """
    if is_channel_conversation(conv):
        return True
    newest = await store.messages(conv.id, last=1, tenant=conv.tenant)
    return bool(newest) and inbound_of(newest[-1]) is not None


async def unanswered(store: AsyncStore, conv: Conversation) -> Work:
    """Return the conversation's unanswered inbound messages, read from the store alone.

    Raises:
        ConversationNotFound: it is gone.
        BackendError: the store failed.
    """
    facts = await store.recall(conv.contact_id, COVERED_FACT + conv.id, tenant=conv.tenant)
    covered = facts[0].value if facts and isinstance(facts[0].value, int) else 0
    seen: list[Message] = []
    after = covered
    while True:
        page = await store.messages(conv.id, after=after, limit=_PAGE, tenant=conv.tenant)
        for message in page:
            reply_to = message.metadata.get("reply_to")
            if message.role == "assistant" and isinstance(reply_to, int):
                covered = max(covered, reply_to)
            elif message.role == "agent":  # a person answered: everything before is covered
                covered = max(covered, message.seq - 1)
        seen += page
        if len(page) < _PAGE:
            break
        after = page[-1].seq
    pending = [
        m
        for m in seen
        if m.seq > covered
        and (record := inbound_of(m)) is not None
        and record.get("expects_reply", True)
    ]
    return Work(pending, covered, [m for m in seen if is_unsent_reply(m)])


class Processor:
    """Answers channel conversations' unanswered messages (see the module docstring).

    Args:
        store: returns the open store (the service's holder retries a store that is down).
        bot: the bot that answers.
        config: the channels' settings (``stale_after``, ``lease``).
        outbound: sends replies (None: replies are stored, not sent).
        observer: counts replies (None: nothing is counted).
        concurrency: conversations answered at once.
    """

    def __init__(
        self,
        store: Callable[[], Awaitable[AsyncStore]],
        bot: Bot,
        config: ChannelConfig,
        *,
        outbound: Outbound | None = None,
        observer: Observer | None = None,
        concurrency: int = 8,
    ) -> None:
        self._store = store
        self.bot = bot
        self.config = config
        self.outbound = outbound
        self.observer = observer
        self.concurrency = concurrency
        self._due: dict[str, float] = {}
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._failures: dict[str, int] = {}  # turns that raised in a row, per conversation
        self._wake = asyncio.Event()

    def schedule(self, conversation_id: str, delay: float = 0.0) -> None:
        """Look at ``conversation_id`` after ``delay`` seconds (again, if it is being answered)."""
        if conversation_id in self._busy:
            self._again.add(conversation_id)
            return
        due = time.monotonic() + delay
        self._due[conversation_id] = min(self._due.get(conversation_id, due), due)
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Answer until ``stop`` is set; then finish the turns in flight and return."""
        workers = [
            asyncio.create_task(self._work(stop), name=f"channel-turns-{i}")
            for i in range(self.concurrency)
        ]
        follower = asyncio.create_task(self._follow(stop), name="channel-events")
        try:
            await stop.wait()
        finally:
            self._wake.set()
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await asyncio.gather(*workers, return_exceptions=True)

    async def _follow(self, stop: asyncio.Event) -> None:
        """Schedule every conversation with a new user message (from the oldest retained)."""
        cursor: str | None = None
        while not stop.is_set():
            try:
                store = await self._store()
                async for event in store.events(after=cursor, timeout=_IDLE):
                    cursor = event.id
                    data = event.data
                    if event.kind == "message.appended" and data.get("role") == "user":
                        self.schedule(event.conversation_id)
                    elif event.kind == "status.changed" and data.get("to") == Status.ACTIVE:
                        self.schedule(event.conversation_id)  # handed back by a person
                    if stop.is_set():
                        return
            except CursorExpired:
                log.warning("channel processor fell behind the events log; reading it again")
                cursor = None
            except (BackendError, StoreClosed) as exc:
                log.warning("channel processor cannot read events (%s); retrying", exc)
                await asyncio.sleep(_RETRY_DOWN)

    async def _next(self, stop: asyncio.Event) -> str | None:
        while not stop.is_set():
            now = time.monotonic()
            ready = [c for c, due in self._due.items() if due <= now and c not in self._busy]
            if ready:
                conversation_id = min(ready, key=self._due.__getitem__)
                del self._due[conversation_id]
                self._busy.add(conversation_id)
                return conversation_id
            wait = min((due - now for due in self._due.values()), default=_IDLE)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(min(wait, _IDLE), 0.005))
        return None

    async def _work(self, stop: asyncio.Event) -> None:
        while (conversation_id := await self._next(stop)) is not None:
            retry: float | None = None
            try:
                retry = await self.answer(conversation_id)
            except Exception:  # a bot's or a sender's bug must not stop the processor
                failures = self._failures[conversation_id] = (
                    self._failures.get(conversation_id, 0) + 1
                )
                retry = min(_RETRY_DOWN * 2 ** (failures - 1), _MAX_BACKOFF)
                log.exception(
                    "channel turn of %s failed (%d in a row); retrying in %.0f s",
                    conversation_id, failures, retry,
                )  # fmt: skip
            else:
                self._failures.pop(conversation_id, None)
            finally:
                self._busy.discard(conversation_id)
            if retry is not None or conversation_id in self._again:
                self._again.discard(conversation_id)
                self.schedule(conversation_id, retry or 0.0)

    async def answer(self, conversation_id: str) -> float | None:
        """Take one turn of the conversation if it has unanswered messages.

        Returns:
            None when done; else the seconds after which to try again (lease taken, store
            down).
        """
        try:
            store = await self._store()
            conv = await store.get(conversation_id)
            if not await _from_a_channel(store, conv):
                return None  # a web chat's turn (POST /v1/chat answers it): never take its lease
            if conv.status in (Status.CLOSED, Status.WAITING_AGENT):
                return None
            async with store.turn(
                conv.id, lease=self.config.lease, timeout=0, tenant=conv.tenant
            ) as turn:
                unsent = await self._turn(store, conv, turn)
                if self.outbound is not None:
                    for reply in unsent:  # inside the lease: a conversation's replies in order
                        await self.outbound.deliver(store, conv, reply)
        except TurnInProgress:
            return _RETRY_BUSY
        except (ConversationNotFound, ConversationClosed):
            return None
        except (BackendError, StoreClosed) as exc:
            log.warning("channel turn of %s: store failed (%s); retrying", conversation_id, exc)
            return _RETRY_DOWN
        return None

    async def _turn(self, store: AsyncStore, conv: Conversation, turn: AsyncTurn) -> list[Message]:
        """Answer what is unanswered; return the replies to send (older unsent ones first)."""
        work = await unanswered(store, conv)
        if not work.pending:
            return work.unsent
        now = store.clock.now()
        stale = timedelta(seconds=self.config.stale_after)
        fresh = [m for m in work.pending if now - _provider_time(m) <= stale]
        through = work.pending[-1].seq
        reply: Message | None = None
        if fresh:
            last = fresh[-1]
            joined = replace(last, content="\n".join(m.content for m in fresh))
            covers = {"covers": [m.seq for m in fresh]}
            reply = await respond_to(store, self.bot, turn, joined, conv.tenant, covers)
            if reply is not None and self.observer is not None:
                lag = (reply.created_at - _provider_time(fresh[0])).total_seconds()
                provider = (inbound_of(fresh[-1]) or {}).get("provider")
                self.observer.replied(str(provider), lag)
        else:
            log.info(
                "conversation %s: %d stale message(s) not answered", conv.id, len(work.pending)
            )
        # Recorded after every turn: a reply covers only up to its ``reply_to`` (stale or silent
        # turns have no reply at all), and the next turn reads the history from here on. A
        # crash before this write loses nothing: the reply itself says what it covers.
        if through > work.covered:
            await store.remember(
                conv.contact_id, COVERED_FACT + conv.id, through, tenant=conv.tenant,
                tier="critical",
            )  # fmt: skip
        unsent = list(work.unsent)
        if reply is not None and is_unsent_reply(reply):
            unsent.append(reply)
        return unsent
