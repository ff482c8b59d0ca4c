"""Dependencies of the routes: settings, the caller's tenant, the store and the bot."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from threadkeep import AsyncStore
from threadkeep.bot import Bot
from threadkeep.service.errors import Forbidden, Unauthorized
from threadkeep.service.observe import note
from threadkeep.service.runtime import StoreHolder
from threadkeep.service.settings import ServiceSettings, is_loopback

__all__ = ["BotDep", "SettingsDep", "StoreDep", "TenantDep", "tenant_of"]

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
        # EventSource cannot send headers; only the events stream takes the key in its URL.
        key = request.query_params.get("api_key")
    return key


async def tenant_of(request: Request) -> str:
    """Return the caller's tenant, from its API key (or ``default`` on a keyless loopback setup).

    Raises:
        Unauthorized: keys are configured and the request has none, or an unknown one.
        Forbidden: no keys are configured and the client is not on a loopback address.
    """
    keys: dict[str, str] = request.app.state.api_keys
    if not keys:
        client = request.client.host if request.client else None
        if not is_loopback(client):
            raise Forbidden(
                "this service has no API keys configured and serves loopback clients only; "
                "set THREADKEEP_API_KEYS to serve other clients"
            )
        tenant = DEFAULT_TENANT
    else:
        given = _bearer(request)
        if given is None:
            raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
        found = None
        for key, key_tenant in keys.items():
            if hmac.compare_digest(key.encode(), given.encode()):
                found = key_tenant
        if found is None:
            raise Unauthorized("the API key is not valid")
        tenant = found
    note(tenant=tenant)
    return tenant


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
StoreDep = Annotated[AsyncStore, Depends(get_store)]
BotDep = Annotated[Bot, Depends(get_bot)]
