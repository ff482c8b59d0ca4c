"""Guidance: what to do next in a conversation, for its current playbook stage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

import threadkeep
from threadkeep.playbooks.guidance import Guidance
from threadkeep.service.deps import StoreDep, TenantDep
from threadkeep.service.observe import note
from threadkeep.service.routers import errors
from threadkeep.service.routers.conversations import ConversationId
from threadkeep.service.routers.playbooks import playbooks_of

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["playbooks"])


@router.get(
    "/conversations/{conversation_id}/guidance",
    response_model=Guidance,
    responses=errors(404),
    summary="Guidance for the conversation's stage",
)
async def get_guidance(
    tenant: TenantDep,
    store: StoreDep,
    request: Request,
    conversation_id: ConversationId,
    playbook: Annotated[
        str | None,
        Query(max_length=64, description="a playbook name (default: the tenant's)"),
    ] = None,
) -> Guidance:
    """Return what to do next in the conversation's current stage.

    Objectives, unanswered questions, objections seen with their handling, critical actions,
    transition criteria met and missing, and three suggested replies. With
    ``ANTHROPIC_API_KEY`` set, an LLM rewords the suggestions (``reworded``: true); when it
    fails or is slow the rules' words are kept.
    """
    note(conversation_id=conversation_id)
    books = playbooks_of(request)
    book = books.named(playbook, tenant) if playbook else books.for_tenant(tenant)
    return await threadkeep.guidance(
        store, conversation_id, book, tenant=tenant, phraser=request.app.state.guidance_phraser
    )
