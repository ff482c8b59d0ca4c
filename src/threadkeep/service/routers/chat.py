"""``POST /v1/chat``: one bot turn, under the conversation's turn lease.

The user's message and the bot's reply are stored within one lease, so two messages arriving at
once for one conversation are answered one after the other, never interleaved. While the
conversation waits for a human agent the bot is silent (``reply`` null). When the store cannot be
reached the bot still answers (from a throw-away in-memory conversation) with ``persisted``
false, and a warning is logged.
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Header, Request

import threadkeep
from threadkeep._exceptions import BackendUnavailable
from threadkeep._models import Conversation, Message
from threadkeep._rules.lifecycle import Status
from threadkeep._store import AsyncStore
from threadkeep.bot import Bot
from threadkeep.service.deps import BotDep, SettingsDep, TenantDep
from threadkeep.service.observe import note
from threadkeep.service.routers import errors
from threadkeep.service.runtime import StoreHolder
from threadkeep.service.schemas import ChatIn, ChatOut
from threadkeep.service.settings import ServiceSettings

__all__ = ["router"]

log = logging.getLogger("threadkeep.service")
router = APIRouter(prefix="/v1", tags=["chat"])


async def _conversation(store: AsyncStore, body: ChatIn, tenant: str) -> Conversation:
    if body.conversation_id is not None:
        return await store.get(body.conversation_id, tenant=tenant)
    contact = body.contact_id or f"anon-{secrets.token_hex(8)}"
    return await store.resume(contact, tenant=tenant, channel=body.channel or "web")


async def _replayed(store: AsyncStore, message: Message, tenant: str) -> ChatOut | None:
    """The answer a retried delivery gets: the reply stored after the original message.

    None when nothing follows the message (the first delivery failed before its reply was
    stored): then the bot answers now.
    """
    following = await store.messages(
        message.conversation_id, after=message.seq, limit=1, tenant=tenant
    )
    if not following:
        return None
    reply = following[0] if following[0].role == "assistant" else None
    conv = await store.get(message.conversation_id, tenant=tenant)
    return ChatOut(
        conversation_id=conv.id,
        reply=None if reply is None else reply.content,
        status=conv.status,
        stage=conv.stage,
        persisted=True,
        message_seq=message.seq,
        reply_seq=None if reply is None else reply.seq,
        replayed=True,
    )


async def _turn(
    store: AsyncStore,
    bot: Bot,
    body: ChatIn,
    tenant: str,
    settings: ServiceSettings,
    idempotency_key: str | None,
) -> ChatOut:
    conv = await _conversation(store, body, tenant)
    note(conversation_id=conv.id)
    lease = settings.turn_lease
    async with store.turn(conv.id, lease=lease, timeout=settings.turn_wait, tenant=tenant) as turn:
        started = store.clock.now()
        message = await turn.append("user", body.message, idempotency_key=idempotency_key)
        if idempotency_key is not None and message.created_at < started:
            replayed = await _replayed(store, message, tenant)
            if replayed is not None:
                return replayed
        conv = await store.get(conv.id, tenant=tenant)
        reply = None
        if conv.status != Status.WAITING_AGENT:
            reply = await bot.respond(store, conv, message)
        reply_seq = None
        if reply is not None:
            reply_seq = (await turn.append("assistant", reply)).seq
        conv = await store.get(conv.id, tenant=tenant)
    return ChatOut(
        conversation_id=conv.id,
        reply=reply,
        status=conv.status,
        stage=conv.stage,
        persisted=True,
        message_seq=message.seq,
        reply_seq=reply_seq,
    )


async def _unpersisted(bot: Bot, body: ChatIn, tenant: str) -> ChatOut:
    """Answer from a throw-away in-memory conversation: the user gets a reply, nothing is kept."""
    async with await threadkeep.open_async("memory://") as scratch:
        conv = await scratch.start(body.contact_id or "anonymous", tenant=tenant)
        message = await scratch.append(conv.id, "user", body.message, tenant=tenant)
        conv = await scratch.get(conv.id, tenant=tenant)
        reply = await bot.respond(scratch, conv, message)
        conv = await scratch.get(conv.id, tenant=tenant)
    return ChatOut(
        conversation_id=body.conversation_id,
        reply=reply,
        status=conv.status,
        stage=conv.stage,
        persisted=False,
    )


@router.post(
    "/chat",
    response_model=ChatOut,
    responses=errors(404, 409, 412, 413),
    summary="One bot turn",
)
async def chat(
    request: Request,
    tenant: TenantDep,
    body: ChatIn,
    bot: BotDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=256,
            description="a retried delivery with the same key gets the first answer again",
            examples=["wamid.HBgL123"],
        ),
    ] = None,
) -> ChatOut:
    """Store the user's message, let the bot answer, store the reply.

    Without ``conversation_id`` the contact's open conversation is resumed (or one is started,
    atomically). A second message for a conversation whose turn is in progress waits up to
    ``THREADKEEP_TURN_WAIT`` seconds, then gets 409. A retried delivery (same
    ``Idempotency-Key``, same conversation) stores nothing, calls no bot and gets the reply
    stored the first time, with ``replayed`` true.
    """
    holder: StoreHolder = request.app.state.stores
    try:
        store = await holder.get()
        return await _turn(store, bot, body, tenant, settings, idempotency_key)
    except BackendUnavailable as exc:
        log.warning(
            "store unreachable; answering without keeping the turn (conversation %s): %s",
            body.conversation_id,
            exc,
        )
        request.app.state.metrics.degraded_turns.labels(request.app.state.metrics.worker).inc()
        note(persisted=False)
        return await _unpersisted(bot, body, tenant)
