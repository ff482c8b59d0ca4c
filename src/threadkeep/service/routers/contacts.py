"""Contacts: erase everything the store keeps about one, with a receipt."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from threadkeep.service.deps import StoreDep, TenantDep
from threadkeep.service.routers import crm, errors
from threadkeep.service.schemas import ErasureOut

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["contacts"])

ContactId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=256,
        description="the contact (phone number, CRM id …)",
        examples=["+15550100"],
    ),
]


@router.delete(
    "/contacts/{contact_id}",
    response_model=ErasureOut,
    responses=errors(),
    summary="Erase a contact",
)
async def erase_contact(
    request: Request, tenant: TenantDep, store: StoreDep, contact_id: ContactId
) -> ErasureOut:
    """Erase every conversation (expired ones too) and fact of the contact; return the receipt.

    The conversations' messages, states and events go in one transaction (one script on
    Redis); the GoHighLevel sync's snapshot of the contact goes right after. Agents only; a
    contact with nothing stored gets an empty receipt (200), so a retry is harmless.
    """
    receipt = await store.delete_contact(contact_id, tenant=tenant)  # not logged: personal data
    snapshots = await crm.forget_contact(request.app, store, tenant, contact_id)
    return ErasureOut.of(receipt, snapshots)
