"""``POST /v1/chat``: one bot turn (``threadkeep.bot.answer``), under the conversation's lease.

The user's message and the bot's reply are stored within one lease, so two messages arriving at
once for one conversation are answered one after the other, never interleaved. While the
conversation waits for a human agent the bot is silent (``reply`` null). When the store cannot be
reached before anything was stored, the bot still answers (from a throw-away in-memory
conversation) with ``persisted`` false; when it fails after the message was stored, the answer
is 503 naming the stored message, and a retry with the same ``Idempotency-Key`` completes it.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Request

import threadkeep
from threadkeep import BackendUnavailable
from threadkeep.bot import Bot, answer
from threadkeep.service.deps import BotDep, SettingsDep, TenantDep
from threadkeep.service.observe import note
from threadkeep.service.routers import errors
from threadkeep.service.runtime import StoreHolder
from threadkeep.service.schemas import ChatIn, ChatOut

__all__ = ["router"]

log = logging.getLogger("threadkeep.service")
router = APIRouter(prefix="/v1", tags=["chat"])


async def _unpersisted(bot: Bot, body: ChatIn, tenant: str) -> ChatOut:
    """Answer from a throw-away in-memory conversation: the user gets a reply, nothing is kept."""
    async with await threadkeep.open_async("memory://") as scratch:
        done = await answer(
            scratch, bot, body.message, tenant=tenant, contact_id=body.contact_id or "anonymous"
        )
    return ChatOut(
        conversation_id=body.conversation_id,
        reply=None if done.reply is None else done.reply.content,
        status=done.conversation.status,
        stage=done.conversation.stage,
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
    ``Idempotency-Key`` within the tenant, even after the conversation was closed) stores
    nothing and gets the reply stored the first time, with ``replayed`` true; if that reply was
    never stored, the bot answers now. The same key with a different message is a 422.
    """
    holder: StoreHolder = request.app.state.stores
    try:
        store = await holder.get()
        done = await answer(
            store,
            bot,
            body.message,
            tenant=tenant,
            conversation_id=body.conversation_id,
            contact_id=body.contact_id,
            channel=body.channel or "web",
            idempotency_key=idempotency_key,
            lease=settings.turn_lease,
            wait=settings.turn_wait,
        )
    except BackendUnavailable as exc:  # nothing was stored (TurnIncomplete is a 503 instead)
        log.warning(
            "store unreachable; answering without keeping the turn (conversation %s): %s",
            body.conversation_id,
            exc,
        )
        request.app.state.metrics.degraded_turns.labels(request.app.state.metrics.worker).inc()
        note(persisted=False)
        return await _unpersisted(bot, body, tenant)
    note(conversation_id=done.conversation.id)
    return ChatOut(
        conversation_id=done.conversation.id,
        reply=None if done.reply is None else done.reply.content,
        status=done.conversation.status,
        stage=done.conversation.stage,
        persisted=True,
        message_seq=done.message.seq,
        reply_seq=None if done.reply is None else done.reply.seq,
        replayed=done.replayed,
    )
