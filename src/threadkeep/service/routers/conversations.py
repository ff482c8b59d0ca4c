"""Conversations: start, list, read, erase, lifecycle and stage, and the tenant's counts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from threadkeep.service.deps import CallerDep, SettingsDep, StoreDep, TenantDep
from threadkeep.service.observe import note
from threadkeep.service.routers import errors
from threadkeep.service.schemas import (
    ConversationOut,
    ConversationPage,
    CountsOut,
    RetentionIn,
    StageIn,
    StartIn,
    StatusIn,
    StatusName,
    VisitorConversationOut,
)

__all__ = ["ConversationId", "router"]

router = APIRouter(prefix="/v1", tags=["conversations"])

ConversationId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        description="the conversation's id",
        examples=["01JDZ3V7K2M9X4QW8T6R5YB0NC"],
    ),
]


@router.post(
    "/conversations",
    status_code=201,
    response_model=ConversationOut,
    responses={
        201: {
            "headers": {
                "Location": {
                    "description": "the new conversation's path",
                    "schema": {"type": "string"},
                }
            }
        },
        **errors(413),
    },
    summary="Start a conversation",
)
async def start_conversation(
    tenant: TenantDep, store: StoreDep, settings: SettingsDep, body: StartIn, response: Response
) -> ConversationOut:
    """Start a new conversation (status ``new``) for a contact; ``Location`` names it.

    ``retention`` overrides the service's retention for this conversation: ``{"ttl": null}``
    keeps it until it is deleted, ``{"ttl": 2592000}`` 30 days after its last activity.
    """
    retention = None if body.retention is None else body.retention.over(settings.retention())
    conv = await store.start(
        body.contact_id,
        tenant=tenant,
        agent_id=body.agent_id,
        channel=body.channel,
        stage=body.stage,
        metadata=body.metadata,
        retention=retention,
    )
    note(conversation_id=conv.id)
    response.headers["Location"] = f"/v1/conversations/{conv.id}"
    return ConversationOut.of(conv)


@router.get(
    "/conversations",
    response_model=ConversationPage,
    responses=errors(),
    summary="List conversations",
)
async def list_conversations(
    tenant: TenantDep,
    store: StoreDep,
    status: Annotated[StatusName | None, Query()] = None,
    stage: Annotated[str | None, Query(max_length=128)] = None,
    contact_id: Annotated[str | None, Query(max_length=256)] = None,
    agent_id: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ConversationPage:
    """Return the tenant's live conversations, newest activity first, a page at a time."""
    page = await store.list(
        tenant=tenant,
        status=status,
        stage=stage,
        agent_id=agent_id,
        contact_id=contact_id,
        limit=limit,
        cursor=cursor,
    )
    return ConversationPage(
        items=[ConversationOut.of(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/counts",
    response_model=CountsOut,
    responses=errors(),
    summary="Count conversations by status and stage",
)
async def counts(tenant: TenantDep, store: StoreDep) -> CountsOut:
    """Return how many live conversations the tenant has, by status and by stage."""
    return CountsOut.of(await store.counts(tenant=tenant))


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationOut | VisitorConversationOut,
    responses=errors(404),
    summary="Read a conversation",
)
async def get_conversation(
    caller: CallerDep, store: StoreDep, conversation_id: ConversationId
) -> ConversationOut | VisitorConversationOut:
    """Return one conversation (404 when absent, expired or another tenant's).

    A visitor token reads its own conversation only, without stage, metadata, tenant or agent.
    """
    note(conversation_id=conversation_id)
    caller.check(conversation_id)
    conv = await store.get(conversation_id, tenant=caller.tenant)
    return VisitorConversationOut.of(conv) if caller.visitor else ConversationOut.of(conv)


@router.delete(
    "/conversations/{conversation_id}",
    status_code=204,
    response_class=Response,
    responses=errors(404),
    summary="Erase a conversation",
)
async def delete_conversation(
    tenant: TenantDep, store: StoreDep, conversation_id: ConversationId
) -> Response:
    """Erase the conversation: messages, state and its events."""
    note(conversation_id=conversation_id)
    await store.delete(conversation_id, tenant=tenant)
    return Response(status_code=204)


@router.post(
    "/conversations/{conversation_id}/status",
    response_model=ConversationOut,
    responses=errors(404, 409, 413),
    summary="Change the lifecycle status",
)
async def set_status(
    tenant: TenantDep, store: StoreDep, conversation_id: ConversationId, body: StatusIn
) -> ConversationOut:
    """Move the conversation to ``status`` (409 when the lifecycle forbids it).

    With ``agent_id`` (a take-over) that agent is also set on the conversation; the id is checked
    before anything changes.
    """
    note(conversation_id=conversation_id)
    changed = await store.set_status(conversation_id, body.status, tenant=tenant)
    if body.agent_id is not None and changed.agent_id != body.agent_id:
        changed = await store.assign(conversation_id, body.agent_id, tenant=tenant)
    return ConversationOut.of(changed)


@router.put(
    "/conversations/{conversation_id}/stage",
    response_model=ConversationOut,
    responses=errors(404, 409, 413),
    summary="Set the stage",
)
async def set_stage(
    tenant: TenantDep, store: StoreDep, conversation_id: ConversationId, body: StageIn
) -> ConversationOut:
    """Set the conversation's stage (null clears it)."""
    note(conversation_id=conversation_id)
    return ConversationOut.of(await store.set_stage(conversation_id, body.stage, tenant=tenant))


@router.put(
    "/conversations/{conversation_id}/retention",
    response_model=ConversationOut,
    responses=errors(404),
    summary="Change the retention",
)
async def set_retention(
    tenant: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    conversation_id: ConversationId,
    body: RetentionIn,
) -> ConversationOut:
    """Give the conversation its own retention (fields left out take the service's).

    Expiry is counted from the conversation's last activity under the new retention:
    ``{"ttl": null}`` keeps a quiet seller's transcript until it is deleted, ``{"ttl": 2592000}``
    keeps it 30 days after its last message. The change is not activity.
    """
    note(conversation_id=conversation_id)
    retention = body.over(settings.retention())
    return ConversationOut.of(await store.set_retention(conversation_id, retention, tenant=tenant))
