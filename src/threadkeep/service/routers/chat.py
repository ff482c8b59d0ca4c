"""``POST /v1/chat``: one bot turn (``threadkeep.bot.answer``), under the conversation's lease.

The user's message and the bot's reply are stored within one lease, so two messages arriving at
once for one conversation are answered one after the other, never interleaved. While the
conversation waits for a human agent the bot is silent (``reply`` null). When the store cannot be
reached before this request wrote anything, the bot still answers (from a throw-away in-memory
conversation) with ``persisted`` false; when it fails while or after the message was written, the
answer is 503 ``TurnIncomplete`` naming the stored message (its seq is null when the write's
outcome is unknown), and a retry with the same ``Idempotency-Key`` completes it. Either way the
turn's lease is released (retried while the store is out, at most 5 s), or lapses by itself
after ``THREADKEEP_TURN_LEASE``.

With public chat on, a caller without an API key is a visitor (``threadkeep.service.visitors``):
its turn is in the public tenant, for its own contact only, and the answer carries a visitor
token for the conversation (agents get one too: a site's backend can hand it to its browser).
"""

from __future__ import annotations

import logging
import secrets

from fastapi import APIRouter, Request, Response

import threadkeep
from threadkeep import BackendUnavailable
from threadkeep.bot import Bot, answer
from threadkeep.service.deps import Caller, IdempotencyKey, PublicCallerDep
from threadkeep.service.observe import note
from threadkeep.service.routers import errors
from threadkeep.service.runtime import StoreHolder
from threadkeep.service.schemas import ChatIn, ChatOut
from threadkeep.service.settings import ServiceSettings
from threadkeep.service.visitors import VisitorTokens

__all__ = ["router"]

log = logging.getLogger("threadkeep.service")
router = APIRouter(prefix="/v1", tags=["chat"])


async def _unpersisted(
    bot: Bot, message: str, caller: Caller, conversation_id: str | None, contact: str | None
) -> ChatOut:
    """Answer from a throw-away in-memory conversation: the user gets a reply, nothing is kept."""
    async with await threadkeep.open_async("memory://") as scratch:
        done = await answer(
            scratch, bot, message, tenant=caller.tenant, contact_id=contact or "anonymous"
        )
    return ChatOut(
        conversation_id=conversation_id,
        reply=None if done.reply is None else done.reply.content,
        status=done.conversation.status,
        stage=None if caller.visitor else done.conversation.stage,
        persisted=False,
    )


def _visitor_turn(caller: Caller, body: ChatIn, tokens: VisitorTokens) -> tuple[str | None, str]:
    """Return the conversation and the contact of a visitor's turn.

    A visitor with a token continues its conversation, or (without ``conversation_id``) its
    contact's open one; a first message gets the contact of the browser's id, or a new one.

    Raises:
        ConversationNotFound: ``conversation_id`` is not the token's (404).
        InvalidInput: a browser id too short to be secret.
    """
    visitor = caller.visitor
    assert visitor is not None
    if body.conversation_id is not None:
        caller.check(body.conversation_id)  # a first message (no token) has no conversation
    if visitor.contact_id is not None:
        return body.conversation_id, visitor.contact_id
    browser = body.contact_id or secrets.token_hex(16)
    return None, tokens.contact_for(browser)


@router.post(
    "/chat",
    response_model=ChatOut,
    responses=errors(404, 409, 412, 413),
    summary="One bot turn",
)
async def chat(
    request: Request,
    caller: PublicCallerDep,
    body: ChatIn,
    idempotency_key: IdempotencyKey = None,
) -> ChatOut | Response:
    """Store the user's message, let the bot answer, store the reply.

    Without ``conversation_id`` the contact's open conversation is resumed (or one is started,
    atomically). A second message for a conversation whose turn is in progress waits up to
    ``THREADKEEP_TURN_WAIT`` seconds, then gets 409. A retried delivery (same
    ``Idempotency-Key`` within the tenant, even after the conversation was closed) stores
    nothing and gets the reply stored the first time, with ``replayed`` true; if that reply was
    never stored, the bot answers now. The same key with a different message is a 422.

    A visitor (public chat, no API key) may continue only the conversation of its
    ``visitor_token`` (else 404), or its contact's open one; on a first message
    ``contact_id`` is the browser's own random id (16+ characters), never a contact's id.
    """
    state = request.app.state  # the bot and the settings: read here, not as dependencies
    holder: StoreHolder = state.stores
    tokens: VisitorTokens | None = state.visitor_tokens
    bot: Bot = state.bot
    settings: ServiceSettings = state.settings
    conversation_id, contact, channel = body.conversation_id, body.contact_id, body.channel
    if caller.visitor is not None:
        assert tokens is not None  # visitors exist only with public chat
        conversation_id, contact = _visitor_turn(caller, body, tokens)
        channel = "web"
    try:
        store = await holder.get()
        done = await answer(
            store,
            bot,
            body.message,
            tenant=caller.tenant,
            conversation_id=conversation_id,
            contact_id=contact,
            channel=channel or "web",
            idempotency_key=idempotency_key,
            lease=settings.turn_lease,
            wait=settings.turn_wait,
        )
    except BackendUnavailable as exc:  # nothing was written (TurnIncomplete is a 503 instead)
        log.warning(
            "store unreachable; answering without keeping the turn (conversation %s): %s",
            body.conversation_id,
            exc,
        )
        request.app.state.metrics.degraded_turns.labels(request.app.state.metrics.worker).inc()
        note(persisted=False)
        return await _unpersisted(bot, body.message, caller, conversation_id, contact)
    note(conversation_id=done.conversation.id)
    out = ChatOut(
        conversation_id=done.conversation.id,
        reply=None if done.reply is None else done.reply.content,
        status=done.conversation.status,
        stage=None if caller.visitor else done.conversation.stage,
        visitor_token=None if tokens is None else tokens.issue(done.conversation),
        persisted=True,
        message_seq=done.message.seq,
        reply_seq=None if done.reply is None else done.reply.seq,
        replayed=done.replayed,
    )
    # the body FastAPI would write for ``response_model=ChatOut`` (the same JSON), without
    # validating the model a second time and going through ``jsonable_encoder``
    return Response(out.model_dump_json(), media_type="application/json")
