"""Messages of a conversation: append (idempotent with ``Idempotency-Key``) and read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from threadkeep import InvalidInput, Message
from threadkeep.service.deps import CallerDep, IdempotencyKey, StoreDep, TenantDep
from threadkeep.service.observe import note
from threadkeep.service.routers import errors
from threadkeep.service.routers.conversations import ConversationId
from threadkeep.service.schemas import AppendIn, MessageList, MessageOut
from threadkeep.service.visitors import visible

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["messages"])


@router.post(
    "/conversations/{conversation_id}/messages",
    status_code=201,
    response_model=MessageOut,
    responses=errors(404, 409, 413),
    summary="Append a message",
)
async def append_message(
    tenant: TenantDep,
    store: StoreDep,
    conversation_id: ConversationId,
    body: AppendIn,
    idempotency_key: IdempotencyKey = None,
) -> MessageOut:
    """Store a message without calling the bot (an agent's reply, a webhook's message …).

    A replay with the same ``Idempotency-Key`` stores nothing and returns the original message;
    the same key with a different message (role, content, metadata or payload) is a 422.
    """
    note(conversation_id=conversation_id)
    message = await store.append(
        conversation_id,
        body.role,
        body.content,
        metadata=body.metadata,
        idempotency_key=idempotency_key,
        tenant=tenant,
        payload=body.payload,
    )
    if message.replayed:
        _check_same(message, body)
    return MessageOut.of(message)


def _check_same(stored: Message, body: AppendIn) -> None:
    """Refuse a replayed key that comes with another message than the one it stored."""
    sent = {
        "role": body.role,
        "content": body.content,
        "metadata": body.metadata or {},
        "payload": body.payload,
    }
    differ = [name for name, value in sent.items() if getattr(stored, name) != value]
    if differ:
        raise InvalidInput(
            f"this Idempotency-Key was already used for a different message (seq {stored.seq} "
            f"of conversation {stored.conversation_id}; its {' and '.join(differ)} differ); "
            "use a new key for a new message",
            field="Idempotency-Key",
        )


@router.get(
    "/conversations/{conversation_id}/messages",
    response_model=MessageList,
    responses=errors(404),
    summary="Read messages",
)
async def read_messages(
    caller: CallerDep,
    store: StoreDep,
    conversation_id: ConversationId,
    last: Annotated[int | None, Query(ge=1, le=1000, description="the newest N")] = None,
    after: Annotated[int | None, Query(ge=0, description="those after this seq")] = None,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="at most N (with after)")] = None,
    before: Annotated[int | None, Query(ge=0, description="the newest before this seq")] = None,
) -> MessageList:
    """Return messages oldest first: the newest ``last``, or ``limit`` after or before a seq.

    ``before`` pages backwards: the newest ``limit`` messages with a lower seq. A visitor token
    reads its own conversation only, and only people's words (``user``, ``assistant``,
    ``agent``; never ``system`` or ``tool`` messages, tool calls or other items), without their
    metadata or payload: a page may then hold fewer than ``last``/``limit`` items (``seq``
    tells where it ends).
    """
    note(conversation_id=conversation_id)
    caller.check(conversation_id)
    items = await store.messages(
        conversation_id, last=last, after=after, limit=limit, tenant=caller.tenant,
        before=before,
    )  # fmt: skip
    if caller.visitor is None:
        return MessageList(items=[MessageOut.of(m) for m in items])
    return MessageList(items=[MessageOut.of(m, visitor=True) for m in items if visible(m)])
