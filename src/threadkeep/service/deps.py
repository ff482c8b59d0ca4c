"""Dependencies of the routes: settings, the caller (an agent's tenant, or a visitor), store, bot.

Routes that take ``TenantDep`` are for agents only: a visitor token gets 404 there, so a new
router is closed to visitors unless it asks for ``CallerDep`` and checks the conversation.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from threadkeep import AsyncStore, ConversationNotFound
from threadkeep.bot import Bot
from threadkeep.service.errors import Forbidden, NotFound, Unauthorized
from threadkeep.service.observe import note
from threadkeep.service.runtime import StoreHolder
from threadkeep.service.settings import HASHED, ServiceSettings, hash_key, is_loopback
from threadkeep.service.visitors import Visitor, VisitorTokens

__all__ = [
    "BotDep",
    "Caller",
    "CallerDep",
    "IdempotencyKey",
    "PublicCallerDep",
    "SettingsDep",
    "StoreDep",
    "TenantDep",
    "caller_of",
    "public_caller_of",
    "tenant_of",
]

#: The tenant of every request while no API key is configured (loopback clients only).
DEFAULT_TENANT = "default"


async def get_app_settings(request: Request) -> ServiceSettings:
    """Return the settings the app was built with."""
    settings: ServiceSettings = request.app.state.settings
    return settings


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    key = request.headers.get("x-api-key")
    if key is None and request.url.path == "/v1/events":
        # EventSource cannot send headers; only the events stream takes a key in its URL.
        key = request.query_params.get("api_key") or request.query_params.get("visitor_token")
    return key


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: an agent (an API key: the whole tenant) or a visitor (one conversation).

    Attributes:
        tenant: the tenant the request acts in.
        visitor: the visitor's scope; None for an agent.
    """

    tenant: str
    visitor: Visitor | None = None

    def check(self, conversation_id: str) -> None:
        """Refuse a visitor a conversation that is not its own.

        Raises:
            ConversationNotFound: the visitor's token is for another conversation (404).
        """
        if self.visitor is not None and not self.visitor.allows(conversation_id):
            raise ConversationNotFound(conversation_id)


def _key_tenant(request: Request, given: str) -> tuple[str, str] | None:
    """Return the configured key that ``given`` matches, and its tenant.

    Every configured key is compared, in constant time; a ``sha256:`` entry (see
    ``threadkeep api-key``) is compared with the hash of ``given``.
    """
    keys: dict[str, str] = request.app.state.api_keys
    digest = hash_key(given)
    found = None
    for key, key_tenant in keys.items():
        candidate = digest if key.startswith(HASHED) else given
        if hmac.compare_digest(key.encode(), candidate.encode()):
            found = key, key_tenant
    return found


def _resolve(request: Request, *, anonymous: bool) -> Caller:
    """Return the caller of ``request``; ``anonymous``: a visitor without a token is let in.

    Raises:
        Unauthorized: keys are configured and the request has none, or an unknown one.
        Forbidden: no keys are configured and the client is not on a loopback address.
    """
    keys: dict[str, str] = request.app.state.api_keys
    tokens: VisitorTokens | None = request.app.state.visitor_tokens
    given = _bearer(request)
    visitor: Visitor | None = None
    if given is not None:
        matched = _key_tenant(request, given) if keys else None
        if matched is not None:
            request.app.state.key_limits.take(matched[0], "API key")
            return Caller(matched[1])
        visitor = tokens.read(given) if tokens is not None else None
        if visitor is None:
            raise Unauthorized("the API key or visitor token is not valid (or it expired)")
    elif not keys and is_loopback(request.client.host if request.client else None):
        return Caller(DEFAULT_TENANT)  # the keyless local mode: loopback clients are agents
    elif tokens is not None and anonymous:
        visitor = Visitor(request.app.state.settings.public_tenant)
    elif not keys:
        raise Forbidden(
            "this service has no API keys configured and serves loopback clients only; "
            "set THREADKEEP_API_KEYS to serve other clients"
        )
    else:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    request.state.visitor = visitor
    client = request.client.host if request.client else "unknown"
    request.app.state.visitor_limits.take(visitor.contact_id or f"address {client}", "visitor")
    return Caller(visitor.tenant, visitor)


async def caller_of(request: Request) -> Caller:
    """Return the caller: an agent, or a visitor holding a token (see ``Caller``)."""
    caller = _resolve(request, anonymous=False)
    note(tenant=caller.tenant, visitor=caller.visitor is not None)
    return caller


async def public_caller_of(request: Request) -> Caller:
    """Return the caller; with public chat also a visitor without a token yet.

    Such a visitor may send a first message (``POST /v1/chat``) and open the events stream,
    where it sees nothing until its token names a conversation.
    """
    caller = _resolve(request, anonymous=True)
    note(tenant=caller.tenant, visitor=caller.visitor is not None)
    return caller


async def tenant_of(request: Request) -> str:
    """Return the tenant of an agent: routes for agents only (a visitor token gets 404).

    Raises:
        Unauthorized: keys are configured and the request has none, or an unknown one.
        Forbidden: no keys are configured and the client is not on a loopback address.
        NotFound: the caller holds a visitor token (404: nothing here is a visitor's).
    """
    caller = _resolve(request, anonymous=False)
    if caller.visitor is not None:
        raise NotFound("not found")
    note(tenant=caller.tenant)
    return caller.tenant


async def get_store(request: Request) -> AsyncStore:
    """Return the open store.

    Raises:
        BackendUnavailable: the store cannot be reached (503).
    """
    holder: StoreHolder = request.app.state.stores
    return await holder.get()


async def get_bot(request: Request) -> Bot:
    """Return the app's chat bot."""
    bot: Bot = request.app.state.bot
    return bot


SettingsDep = Annotated[ServiceSettings, Depends(get_app_settings)]
TenantDep = Annotated[str, Depends(tenant_of)]
CallerDep = Annotated[Caller, Depends(caller_of)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=256,
        description="a retried delivery with the same key is stored once and gets the first "
        "answer (the first message) again",
        examples=["wamid.HBgL123"],
    ),
]
PublicCallerDep = Annotated[Caller, Depends(public_caller_of)]
StoreDep = Annotated[AsyncStore, Depends(get_store)]
BotDep = Annotated[Bot, Depends(get_bot)]
