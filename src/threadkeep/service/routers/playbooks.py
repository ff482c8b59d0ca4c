"""Playbooks: the stages a tenant's conversations follow, as data."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from threadkeep.playbooks import SHIPPED, PlaybookSet
from threadkeep.service.deps import TenantDep
from threadkeep.service.routers import errors

__all__ = ["playbooks_of", "router"]

router = APIRouter(prefix="/v1", tags=["playbooks"])

_PLAYBOOK = {
    "description": "the playbook: ordered stages, each with objectives, key questions, "
    "objections with handling, success metrics, critical actions and transition criteria",
}


def playbooks_of(request: Request) -> PlaybookSet:
    """Return the service's playbooks (default and per tenant)."""
    books: PlaybookSet = request.app.state.playbooks
    return books


@router.get(
    "/playbooks",
    responses=errors(),
    summary="The playbooks this tenant can read",
)
async def list_playbooks(tenant: TenantDep, request: Request) -> dict[str, Any]:
    """Return ``{"current": name, "items": [names]}``: the tenant's playbook and the others."""
    current = playbooks_of(request).for_tenant(tenant).name
    return {"current": current, "items": sorted({current, *SHIPPED})}


@router.get(
    "/playbooks/{name}",
    responses={200: _PLAYBOOK, **errors(404)},
    summary="Read a playbook",
)
async def get_playbook(
    tenant: TenantDep,
    request: Request,
    name: Annotated[str, Path(min_length=1, max_length=64, examples=["realtor"])],
) -> dict[str, Any]:
    """Return a playbook by name (``current`` is the tenant's own); 404 when unknown."""
    books = playbooks_of(request)
    book = books.for_tenant(tenant) if name == "current" else books.named(name, tenant)
    return book.model_dump(mode="json")
