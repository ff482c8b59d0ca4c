"""Messages of a conversation: append (idempotent with ``Idempotency-Key``) and read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query

from threadkeep.service.deps import StoreDep, TenantDep
from threadkeep.service.observe import note
from threadkeep.service.routers import errors
from threadkeep.service.routers.conversations import ConversationId
from threadkeep.service.schemas import AppendIn, MessageList, MessageOut

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
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=256,
            description="a retried delivery with the same key returns the first message",
            examples=["wamid.HBgL123"],
        ),
    ] = None,
) -> MessageOut:
    """Store a message without calling the bot (an agent's reply, a webhook's message …).

    A replay with the same ``Idempotency-Key`` stores nothing and returns the original message.
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
    return MessageOut.of(message)


@router.get(
    "/conversations/{conversation_id}/messages",
    response_model=MessageList,
    responses=errors(404),
    summary="Read messages",
)
async def read_messages(
    tenant: TenantDep,
    store: StoreDep,
    conversation_id: ConversationId,
    last: Annotated[int | None, Query(ge=1, le=1000, description="the newest N")] = None,
    after: Annotated[int | None, Query(ge=0, description="those after this seq")] = None,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="at most N (with after)")] = None,
    before: Annotated[int | None, Query(ge=0, description="the newest before this seq")] = None,
) -> MessageList:
    """Return messages oldest first: the newest ``last``, or ``limit`` after or before a seq.

    ``before`` pages backwards: the newest ``limit`` messages with a lower seq.
    """
    note(conversation_id=conversation_id)
    items = await store.messages(
        conversation_id, last=last, after=after, limit=limit, tenant=tenant, before=before
    )
    return MessageList(items=[MessageOut.of(m) for m in items])
