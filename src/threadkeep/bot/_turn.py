"""One bot turn, the same for ``POST /v1/chat`` and ``threadkeep chat``.

Under the conversation's turn lease: store the user's message, let the bot answer unless a person
has the conversation, store the reply (its metadata names the message it answers:
``reply_to``). "STOP", "unsubscribe" and the like close the conversation and record the opt-out
as the contact fact ``opted_out``; no bot answers that contact again until it writes "START".
A retried delivery (same ``idempotency_key``) stores nothing and gets the reply stored the first
time; when that reply was never stored, the bot answers now, once.

Retries are recognised across the tenant, not only inside one conversation: each keyed turn is
noted as a short-lived (``low`` tier, 24 h) fact of its contact, so a retry after an agent closed
the conversation, or an anonymous retry, finds the first delivery.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias

from threadkeep import (
    AsyncStore,
    AsyncTurn,
    BackendUnavailable,
    Conversation,
    InvalidInput,
    Message,
    Status,
    ThreadkeepError,
)
from threadkeep.bot._consent import OPT_IN_REPLY, OPT_OUT_FACT, OPT_OUT_REPLY, consent

__all__ = [
    "Answer",
    "Bot",
    "Reply",
    "TurnIncomplete",
    "answer",
    "fact_is_internal",
    "opted_out",
    "respond_to",
]

#: Facts whose key starts with this are threadkeep's own notes, not what a contact told us.
INTERNAL_FACT: Final = "_"
_KEY_FACT: Final = "_chat_turn:"
_LOOK_AHEAD: Final = 50  # messages read after a replayed one to find its reply (or a page's)


#: What a bot's ``respond`` returns: the reply text; or items, each ``(role, content)`` or
#: ``(role, content, options)`` as for ``Store.append_many`` (the tool calls and tool results of
#: the turn, each stored as its own message, then the reply); or None to stay silent.
Reply: TypeAlias = str | Sequence[tuple[Any, ...]] | None


class Bot(Protocol):
    """Anything that can answer one turn of a conversation."""

    async def respond(
        self, store: AsyncStore, conversation: Conversation, message: Message
    ) -> Reply:
        """Return the reply to ``message`` (already stored): text, items, or None (silent)."""
        ...


@dataclass(frozen=True, slots=True)
class Answer:
    """What one turn did.

    Attributes:
        conversation: the conversation after the turn.
        message: the user's stored message.
        reply: the bot's stored reply; None while a person has the conversation, or when the
            bot chose to stay silent.
        replayed: whether this was a retried delivery (nothing new was stored for the message).
    """

    conversation: Conversation
    message: Message
    reply: Message | None
    replayed: bool = False


class TurnIncomplete(ThreadkeepError):
    """The store failed in the middle of a turn, after (or while) the user's message was stored.

    Retry with the same idempotency key: the message is not stored twice, and the bot answers
    it if its reply was not stored.

    Attributes:
        conversation_id: the conversation holding the message.
        message_seq: the stored message's seq; None when the store failed while storing it (it
            may or may not have been stored).
    """

    http_status = 503

    def __init__(self, conversation_id: str, message_seq: int | None, cause: BaseException) -> None:
        if message_seq is None:
            what = f"while the message was being stored in conversation {conversation_id}"
            what += " (it may or may not have been stored)"
        else:
            what = f"after message {message_seq} of conversation {conversation_id} was stored"
        super().__init__(
            f"the store failed during the turn {what} ({cause}); retry with the same "
            "Idempotency-Key"
        )
        self.conversation_id = conversation_id
        self.message_seq = message_seq


def fact_is_internal(key: str) -> bool:
    """Return whether a contact fact is threadkeep's own note (hidden from people and bots)."""
    return key.startswith(INTERNAL_FACT)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def anonymous_contact(idempotency_key: str | None) -> str:
    """Return a contact id for a visitor who gave none (the same for retries of one key)."""
    if idempotency_key is None:
        return f"anon-{secrets.token_hex(8)}"
    return f"anon-{_digest(idempotency_key)}"


async def answer(
    store: AsyncStore,
    bot: Bot,
    text: str,
    *,
    tenant: str = "default",
    conversation_id: str | None = None,
    contact_id: str | None = None,
    channel: str | None = None,
    idempotency_key: str | None = None,
    lease: float = 30.0,
    wait: float = 5.0,
) -> Answer:
    """Store ``text`` as the user's message and let ``bot`` answer it, under the turn lease.

    Args:
        store: the store.
        bot: the bot that answers.
        text: the user's message.
        tenant: the tenant.
        conversation_id: continue this conversation; else the contact's open one (or a new one).
        contact_id: the contact (without ``conversation_id``); None: an anonymous visitor.
        channel: the channel of a conversation this turn starts.
        idempotency_key: a retried delivery with the same key gets the first answer again.
        lease: seconds the turn lease lasts if this worker dies.
        wait: seconds to wait for another worker's turn on the conversation.

    Returns:
        The stored message, the stored reply (if any) and the conversation after the turn.

    Raises:
        InvalidInput: an empty message, or ``idempotency_key`` used for a different message.
        ConversationNotFound: ``conversation_id`` is absent, expired or another tenant's.
        ConversationClosed: ``conversation_id`` is closed.
        TurnInProgress: another worker held the turn for longer than ``wait``.
        TurnIncomplete: the store failed while or after the message was stored (or, for a
            retried delivery, after the first delivery stored it).
        BackendUnavailable: the store failed before this call wrote anything.
    """
    if not text.strip():
        raise InvalidInput("the message is empty", field="message")
    limit = store.limits.max_content_bytes
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise InvalidInput(f"the message is larger than {limit} bytes", field="message")
    conv: Conversation | None = None
    contact: str | None = None
    if idempotency_key is not None:
        if conversation_id is not None:
            # the key's note is a fact of the conversation's contact
            conv = await store.get(conversation_id, tenant=tenant)
            contact = conv.contact_id
        else:
            contact = contact_id or anonymous_contact(idempotency_key)
        earlier = await _noted(store, contact, idempotency_key, tenant)
        if earlier is not None:
            return await _replay(store, bot, earlier, text, tenant, lease, wait)
    if conversation_id is None:
        conv = await store.resume(
            contact or contact_id or anonymous_contact(None), tenant=tenant, channel=channel
        )
        conversation_id, contact = conv.id, conv.contact_id
    # Without a key, a given conversation is not read first: taking its lease finds it (or
    # raises ConversationNotFound), and the message's append answers it as of that append.
    message: Message | None = None
    writing = False  # from here on, a failure may have stored the message
    try:
        async with store.turn(conversation_id, lease=lease, timeout=wait, tenant=tenant) as turn:
            writing = True
            # the conversation as of the message, under the lease (one op with the append;
            # read after it where the backend could not tell, once the message is known)
            message, seen = await turn._append_read("user", text, idempotency_key)
            conv = seen or await store.get(conversation_id, tenant=tenant)
            if idempotency_key is not None:
                assert contact is not None
                await _note(store, contact, idempotency_key, message, tenant)
            replayed = message.replayed  # this key was stored before: a retried delivery
            after: Conversation | None = None
            if replayed:
                _check_same(message, text)
                reply = await _stored_reply(store, message, tenant)
                if reply is None:
                    reply, after = await _respond(store, bot, turn, message, conv, tenant)
            else:
                reply, after = await _respond(store, bot, turn, message, conv, tenant)
        # the conversation as the turn left it: as of the reply, where the reply's append was
        # the turn's last write and told it (giving the lease back changes nothing it shows)
        conv = after or await store.get(conversation_id, tenant=tenant)
    except BackendUnavailable as exc:
        if not writing:
            raise  # nothing of this turn was written
        raise TurnIncomplete(
            conversation_id, None if message is None else message.seq, exc
        ) from exc
    return Answer(conv, message, reply, replayed)


async def opted_out(store: AsyncStore, contact_id: str, *, tenant: str = "default") -> bool:
    """Return whether the contact said "STOP" (and not "START" since): no bot may message it."""
    facts = await store.recall(contact_id, OPT_OUT_FACT, tenant=tenant)
    return bool(facts) and facts[0].value is True


async def respond_to(
    store: AsyncStore,
    bot: Bot,
    turn: AsyncTurn,
    message: Message,
    tenant: str,
    metadata: Mapping[str, Any] | None = None,
) -> Message | None:
    """Let the bot answer ``message`` (already stored) under ``turn``; store the reply.

    The reply's metadata names the message it answers (``reply_to``: its seq), plus
    ``metadata`` when given. The bot is silent while a person has the conversation and to a
    contact who opted out. "STOP" (and the like) records the opt-out as a contact fact,
    confirms it once and closes the conversation; "START" from a contact who opted out lifts it.
    """
    conv = await store.get(message.conversation_id, tenant=tenant)
    reply, _ = await _respond(store, bot, turn, message, conv, tenant, metadata, tell=False)
    return reply


async def _respond(
    store: AsyncStore,
    bot: Bot,
    turn: AsyncTurn,
    message: Message,
    conv: Conversation,
    tenant: str,
    metadata: Mapping[str, Any] | None = None,
    tell: bool = True,
) -> tuple[Message | None, Conversation | None]:
    """respond_to, given the conversation as of ``message`` (read under ``turn``).

    Returns the reply and, where the reply's append was the turn's last write and told it,
    the conversation as that append left it (else None: the caller reads it). ``tell`` False:
    the caller has no use for it (a plain append stores the reply).
    """
    if conv.status == Status.CLOSED:
        return None, None
    said = consent(message.content)
    silenced = await opted_out(store, conv.contact_id, tenant=tenant)
    if said == "stop" or (said == "start" and silenced):
        stop = said == "stop"
        await store.remember(conv.contact_id, OPT_OUT_FACT, stop, tenant=tenant, tier="critical")
        reply = None
        if not silenced or not stop:  # confirm once; nothing more to a contact who opted out
            words = OPT_OUT_REPLY if stop else OPT_IN_REPLY
            meta = {**(metadata or {}), "reply_to": message.seq, "consent": said}
            reply = await turn.append("assistant", words, metadata=meta)
        if stop:
            await store.close_conversation(conv.id, tenant=tenant)
        return reply, None
    if conv.status == Status.WAITING_AGENT or silenced:
        return None, None
    answered = await bot.respond(store, conv, message)
    if not answered:
        return None, None
    extra = dict(metadata or {})
    if isinstance(answered, str):
        meta = {**extra, "reply_to": message.seq}
        if not tell:
            return await turn.append("assistant", answered, metadata=meta), None
        return await turn._append_read("assistant", answered, None, meta)
    stored = await turn.append_many([_replying(item, message.seq, extra) for item in answered])
    return (_the_reply(stored) if stored else None), None


def _replying(item: tuple[Any, ...], seq: int, extra: Mapping[str, Any]) -> tuple[Any, ...]:
    """An item with ``reply_to`` added to its metadata (each message of a turn names it)."""
    if not isinstance(item, tuple | list) or len(item) not in (2, 3):
        return tuple(item)  # append_many names what is wrong with it
    options = dict(item[2]) if len(item) == 3 and isinstance(item[2], Mapping) else {}
    options["metadata"] = {**extra, **(options.get("metadata") or {}), "reply_to": seq}
    return (item[0], item[1], options)


def _the_reply(messages: Sequence[Message]) -> Message:
    """Of one turn's messages, the reply: the last the assistant said in words."""
    said = [m for m in messages if m.role == "assistant" and m.content]
    return said[-1] if said else messages[-1]


def _check_same(message: Message, text: str) -> None:
    if message.content != text:
        raise InvalidInput(
            f"this Idempotency-Key was already used for a different message (seq "
            f"{message.seq} of conversation {message.conversation_id}); use a new key for a "
            "new message",
            field="Idempotency-Key",
        )


async def _stored_reply(store: AsyncStore, message: Message, tenant: str) -> Message | None:
    """The reply stored for ``message`` (see ``_the_reply``, among its ``reply_to``), or None."""
    following = await store.messages(
        message.conversation_id,
        after=message.seq,
        limit=min(_LOOK_AHEAD, store.limits.max_page),
        tenant=tenant,
    )
    return _reply_among(following, message)


def _reply_among(following: Sequence[Message], message: Message) -> Message | None:
    """The reply to ``message`` among the messages after it (see ``_the_reply``), or None."""
    replies = [m for m in following if m.metadata.get("reply_to") == message.seq]
    return _the_reply(replies) if replies else None


async def _note(store: AsyncStore, contact: str, key: str, message: Message, tenant: str) -> None:
    value = {"conversation_id": message.conversation_id, "seq": message.seq}
    await store.remember(contact, _KEY_FACT + _digest(key), value, tenant=tenant, tier="low")


async def _noted(store: AsyncStore, contact: str, key: str, tenant: str) -> dict[str, Any] | None:
    facts = await store.recall(contact, _KEY_FACT + _digest(key), tenant=tenant)
    if not facts or not isinstance(facts[0].value, dict):
        return None
    return facts[0].value


async def _replay(
    store: AsyncStore,
    bot: Bot,
    earlier: dict[str, Any],
    text: str,
    tenant: str,
    lease: float,
    wait: float,
) -> Answer:
    """Answer a retried delivery from what the first one stored (the bot answers if needed).

    Raises:
        TurnIncomplete: the store failed (the message stays stored, as the first delivery left it).
    """
    conv_id, seq = str(earlier["conversation_id"]), int(earlier["seq"])
    try:
        # the message and those after it, where its reply is: one read (a page's worth)
        ahead = min(1 + _LOOK_AHEAD, store.limits.max_page)
        found = await store.messages(conv_id, after=seq - 1, limit=ahead, tenant=tenant)
        if not found or found[0].seq != seq:  # trimmed by max_messages: nothing to replay
            raise InvalidInput(
                f"the message of this Idempotency-Key is no longer kept (conversation {conv_id})",
                field="Idempotency-Key",
            )
        message = found[0]
        _check_same(message, text)
        reply = _reply_among(found[1:], message)
        conv = await store.get(conv_id, tenant=tenant)
        if reply is None and conv.status not in (Status.WAITING_AGENT, Status.CLOSED):
            async with store.turn(conv_id, lease=lease, timeout=wait, tenant=tenant) as turn:
                reply = await _stored_reply(store, message, tenant)  # another retry may have won
                if reply is None:
                    reply = await respond_to(store, bot, turn, message, tenant)
            conv = await store.get(conv_id, tenant=tenant)
        return Answer(conv, message, reply, replayed=True)
    except BackendUnavailable as exc:
        raise TurnIncomplete(conv_id, seq, exc) from exc
