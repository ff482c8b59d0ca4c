"""A conversation's versioned state: ``ETag`` is the version, ``If-Match`` guards saves."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response

from threadkeep import InvalidInput
from threadkeep.service.deps import StoreDep, TenantDep
from threadkeep.service.observe import note
from threadkeep.service.routers import errors
from threadkeep.service.routers.conversations import ConversationId
from threadkeep.service.schemas import StateIn, StateOut

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["state"])

_ETAG = re.compile(r'^\s*(?:W/)?"?(\d{1,18})"?\s*$')
_ETAG_HEADER: dict[str, Any] = {
    "ETag": {"description": 'the state version, quoted: "3"', "schema": {"type": "string"}}
}


def etag(version: int) -> str:
    """Return the ETag of a state version."""
    return f'"{version}"'


def parse_if_match(value: str | None) -> int | None:
    """Return the version an ``If-Match`` header names (None: absent or ``*``).

    Raises:
        InvalidInput: the header is not a version such as ``"3"``.
    """
    if value is None or value.strip() == "*":
        return None
    match = _ETAG.match(value)
    if match is None:
        raise InvalidInput(
            f'If-Match {value!r} is not a state version; send the ETag you read, e.g. "3"',
            field="If-Match",
        )
    return int(match.group(1))


@router.get(
    "/conversations/{conversation_id}/state",
    response_model=StateOut,
    responses={200: {"headers": _ETAG_HEADER}, **errors(404)},
    summary="Read the state",
)
async def get_state(
    tenant: TenantDep, store: StoreDep, conversation_id: ConversationId, response: Response
) -> StateOut:
    """Return the current state and its version (also as ``ETag``); version 0: none saved."""
    note(conversation_id=conversation_id)
    snap = await store.load_state(conversation_id, tenant=tenant)
    response.headers["ETag"] = etag(snap.version)
    return StateOut.of(snap)


@router.put(
    "/conversations/{conversation_id}/state",
    response_model=StateOut,
    responses={200: {"headers": _ETAG_HEADER}, **errors(404, 409, 412, 413)},
    summary="Save the state",
)
async def put_state(
    tenant: TenantDep,
    store: StoreDep,
    conversation_id: ConversationId,
    body: StateIn,
    response: Response,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            max_length=64,
            description="the version this change is based on; 412 when it is not current",
            examples=['"3"'],
        ),
    ] = None,
) -> StateOut:
    """Save a new state version; with ``If-Match`` only if that is still the current version."""
    note(conversation_id=conversation_id)
    expected = parse_if_match(if_match)
    version = await store.save_state(
        conversation_id, body.value, expected_version=expected, tenant=tenant
    )
    snap = await store.load_state(conversation_id, version=version, tenant=tenant)
    response.headers["ETag"] = etag(snap.version)
    return StateOut.of(snap)
