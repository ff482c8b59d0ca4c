"""A conversation's versioned state: ``ETag`` is the version, ``If-Match`` guards saves."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Response
from pydantic import BaseModel, ValidationError

from threadkeep import InvalidInput, ThreadkeepError
from threadkeep.service.deps import BotDep, StoreDep, TenantDep
from threadkeep.service.observe import note
from threadkeep.service.routers import errors
from threadkeep.service.routers.conversations import ConversationId
from threadkeep.service.schemas import StateIn, StateOut, StateProblem

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["state"])

_ETAG = re.compile(r'^\s*(?:W/)?"?(\d{1,18})"?\s*$')
_ETAG_HEADER: dict[str, Any] = {
    "ETag": {"description": 'the state version, quoted: "3"', "schema": {"type": "string"}}
}


class PreconditionRequired(ThreadkeepError):
    """A state save without ``If-Match``: it would overwrite a version nobody has seen."""

    http_status = 428


class StateInvalid(InvalidInput):
    """A state that does not fit the bot's state schema.

    Attributes:
        rule: the rule that failed (pydantic's error type, e.g. ``int_parsing``).
    """

    def __init__(self, problem: StateProblem) -> None:
        super().__init__(
            f"state field {problem.field}: {problem.message} (rule: {problem.rule}); "
            "nothing was saved",
            field=problem.field,
        )
        self.rule = problem.rule


def state_model(bot: object) -> type[BaseModel] | None:
    """The pydantic model a bot declares for its state (``state_model``), or None: free-form."""
    model = getattr(bot, "state_model", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def problems_of(model: type[BaseModel] | None, value: Any) -> list[StateProblem]:
    """Return where ``value`` does not fit ``model`` (nothing when there is no model)."""
    if model is None or value is None:
        return []
    try:
        model.model_validate(value)
    except ValidationError as exc:
        return [
            StateProblem(
                field=".".join(str(p) for p in e["loc"]) or "value",
                rule=e["type"],
                message=e["msg"],
            )
            for e in exc.errors()
        ]
    return []


def etag(version: int) -> str:
    """Return the ETag of a state version."""
    return f'"{version}"'


def parse_if_match(value: str | None) -> int | None:
    """Return the version an ``If-Match`` header names (None: ``*``, any version).

    Raises:
        PreconditionRequired: no header (a first save sends ``If-Match: "0"``).
        InvalidInput: the header is not a version such as ``"3"``.
    """
    if value is None:
        raise PreconditionRequired(
            'send If-Match with the version you read (its ETag; "0" for a first save), '
            'or "*" to overwrite whatever is there'
        )
    if value.strip() == "*":
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
    tenant: TenantDep,
    store: StoreDep,
    bot: BotDep,
    conversation_id: ConversationId,
    response: Response,
) -> StateOut:
    """Return the current state and its version (also as ``ETag``); version 0: none saved.

    ``problems`` lists where the stored value does not fit the bot's state schema.
    """
    note(conversation_id=conversation_id)
    snap = await store.load_state(conversation_id, tenant=tenant)
    response.headers["ETag"] = etag(snap.version)
    return StateOut.of(snap, problems_of(state_model(bot), snap.value))


@router.get(
    "/conversations/{conversation_id}/state/schema",
    responses=errors(404),
    summary="The JSON Schema of the state",
)
async def get_state_schema(
    tenant: TenantDep, store: StoreDep, bot: BotDep, conversation_id: ConversationId
) -> dict[str, Any]:
    """Return the JSON Schema the bot declares for its state (404 when the state is free-form).

    Fields the bot keeps for itself are ``readOnly``; money fields have ``format: money``.
    """
    await store.get(conversation_id, tenant=tenant)
    model = state_model(bot)
    if model is None:
        raise HTTPException(404, "this service's bot declares no state schema: state is free-form")
    return model.model_json_schema()


@router.put(
    "/conversations/{conversation_id}/state",
    response_model=StateOut,
    responses={200: {"headers": _ETAG_HEADER}, **errors(404, 409, 412, 413, 428)},
    summary="Save the state",
)
async def put_state(
    tenant: TenantDep,
    store: StoreDep,
    bot: BotDep,
    conversation_id: ConversationId,
    body: StateIn,
    response: Response,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            max_length=64,
            description='the version this change is based on ("0": none yet; "*": any); '
            "412 when it is not current, 428 when missing",
            examples=['"3"'],
        ),
    ] = None,
) -> StateOut:
    """Save a new state version, only if ``If-Match`` is still the current version.

    When the bot declares a state schema the value is checked against it first (422 naming the
    field and the rule; nothing saved).
    """
    note(conversation_id=conversation_id)
    if if_match is None:
        await store.get(conversation_id, tenant=tenant)  # 404 comes before 428
    expected = parse_if_match(if_match)
    found = problems_of(state_model(bot), body.value)
    if found:
        raise StateInvalid(found[0])
    version = await store.save_state(
        conversation_id, body.value, expected_version=expected, tenant=tenant
    )
    snap = await store.load_state(conversation_id, version=version, tenant=tenant)
    response.headers["ETag"] = etag(snap.version)
    return StateOut.of(snap)
