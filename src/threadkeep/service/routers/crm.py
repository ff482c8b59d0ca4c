"""GoHighLevel: ``POST /v1/crm/ghl/webhook`` and the outbox worker the service runs.

The webhook verifies the signature over the raw body, refuses stale and repeated deliveries,
stores the event and only then answers 200. When the store cannot take it the answer is 429,
the only status GoHighLevel retries (any other failure loses the event). Without
``THREADKEEP_GHL_LOCATIONS`` the route answers 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from threadkeep import AsyncStore, BackendError, InvalidInput, StoreClosed
from threadkeep.service.errors import error_body
from threadkeep.service.runtime import StoreHolder
from threadkeep.service.settings import ServiceSettings

if TYPE_CHECKING:  # the crm modules (cryptography, httpx) load only when GoHighLevel is on
    from threadkeep.crm.ghl import GhlMap, Verifier
    from threadkeep.crm.sync import Outbox

__all__ = ["GhlRuntime", "forget_contact", "router", "setup", "start_outbox", "stop_outbox"]

log = logging.getLogger("threadkeep.crm")

router = APIRouter(prefix="/v1", tags=["crm"])

#: Seconds GoHighLevel is asked to wait (it retries a 429 about every 10 minutes anyway).
RETRY_AFTER = "600"


@dataclass
class GhlRuntime:
    """What the GoHighLevel routes and worker need, built once from the settings."""

    verifier: Verifier
    locations: dict[str, str]
    gmap: GhlMap
    max_age: float
    sync_tenant: str
    outbox: Outbox | None = None


def _pairs(text: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in text.replace(",", " ").split():
        left, sep, right = pair.partition(":")
        if not sep or not left or not right:
            raise InvalidInput(f"{what} takes locationId:tenant pairs, not {pair!r}", field=what)
        out[left] = right
    return out


def setup(app: FastAPI, settings: ServiceSettings, holder: StoreHolder) -> GhlRuntime | None:
    """Build the GoHighLevel runtime (None when ``GHL_LOCATIONS`` is empty).

    Raises:
        InvalidInput: a malformed key, map or location list, or an API key for the sync tenant.
    """
    locations = _pairs(settings.ghl_locations, "THREADKEEP_GHL_LOCATIONS")
    if not locations:
        return None
    from threadkeep.crm.client import GhlClient, OAuthTokens
    from threadkeep.crm.ghl import PUBLISHED_RSA_KEY, Verifier, load_map
    from threadkeep.crm.sync import Ledger, Outbox, oauth_saver

    if settings.ghl_sync_tenant in set(app.state.api_keys.values()) | set(locations.values()):
        raise InvalidInput(
            f"tenant {settings.ghl_sync_tenant!r} keeps the GoHighLevel sync's records; "
            "give it no API key and no location (or set THREADKEEP_GHL_SYNC_TENANT)",
            field="THREADKEEP_GHL_SYNC_TENANT",
        )
    rsa = settings.ghl_rsa_public_key
    verifier = Verifier(
        settings.ghl_public_key or None, PUBLISHED_RSA_KEY if rsa == "published" else rsa or None
    )
    runtime = GhlRuntime(
        verifier,
        locations,
        load_map(settings.ghl_map),
        settings.ghl_max_age,
        settings.ghl_sync_tenant,
    )
    oauth = None
    if settings.ghl_client_id and settings.ghl_client_secret and settings.ghl_refresh_token:
        oauth = OAuthTokens(
            settings.ghl_client_id, settings.ghl_client_secret, settings.ghl_refresh_token
        )
    if settings.ghl_token or oauth:

        async def ledger() -> Ledger:
            return Ledger(await holder.get(), settings.ghl_sync_tenant)

        client = GhlClient(
            settings.ghl_api_url,
            token=settings.ghl_token or None,
            oauth=oauth,
            on_tokens=oauth_saver(ledger),
            version=settings.ghl_version,
            limit=settings.ghl_rate_limit,
            window=settings.ghl_rate_window,
        )
        runtime.outbox = Outbox(
            holder.get,
            client,
            runtime.gmap,
            locations,
            tenant=settings.ghl_sync_tenant,
            retry=settings.ghl_retry,
        )
    return runtime


async def forget_contact(app: FastAPI, store: AsyncStore, tenant: str, contact_id: str) -> int:
    """Erase the sync's snapshots of a contact of ``tenant``; return how many went.

    The sync keeps them in its own tenant, one per location mapped to ``tenant``; without
    GoHighLevel there are none.
    """
    runtime: GhlRuntime | None = app.state.ghl
    if runtime is None:
        return 0
    from threadkeep.crm.sync import Ledger

    ledger = Ledger(store, runtime.sync_tenant)
    mapped = sorted(loc for loc, t in runtime.locations.items() if t == tenant)
    return sum([await ledger.forget(location, contact_id) for location in mapped])


def start_outbox(app: FastAPI) -> asyncio.Task[None] | None:
    """Start the outbox worker of a configured app (None when there is nothing to send)."""
    runtime: GhlRuntime | None = app.state.ghl
    if runtime is None or runtime.outbox is None:
        return None
    stop = asyncio.Event()
    app.state.ghl_stop = stop
    log.info("GoHighLevel outbox started for %d location(s)", len(runtime.locations))
    return asyncio.create_task(runtime.outbox.run(stop), name="ghl-outbox")


async def stop_outbox(app: FastAPI, task: asyncio.Task[None] | None) -> None:
    """Stop the outbox worker and close its HTTP client.

    The worker is cancelled even in the middle of a pass: what it had not recorded as
    delivered is sent again by the next worker (the outbox is level-triggered).
    """
    runtime: GhlRuntime | None = app.state.ghl
    if task is None or runtime is None or runtime.outbox is None:
        return
    app.state.ghl_stop.set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await runtime.outbox.client.aclose()


def _too_busy(message: str) -> JSONResponse:
    return JSONResponse(
        error_body("StoreUnavailable", message), 429, headers={"Retry-After": RETRY_AFTER}
    )


@router.post(
    "/crm/ghl/webhook",
    summary="GoHighLevel webhook",
    responses={
        200: {"description": "stored (or a repeated delivery, ignored)"},
        401: {"description": "the signature does not verify, or the timestamp is stale"},
        404: {"description": "GoHighLevel is not configured, or the location is not mapped"},
        422: {"description": "not a GoHighLevel event"},
        429: {"description": "the store cannot take it now; GoHighLevel retries"},
    },
)
async def ghl_webhook(request: Request) -> JSONResponse:
    """Take one signed GoHighLevel webhook: messages, contact changes, opportunity stages."""
    from threadkeep.crm.ghl import check_timestamp, digest, parse_event
    from threadkeep.crm.sync import Ledger, apply_event

    runtime: GhlRuntime | None = request.app.state.ghl
    if runtime is None:
        return JSONResponse(error_body("NotFound", "GoHighLevel is not configured"), 404)
    raw = await request.body()
    runtime.verifier.verify(raw, request.headers)
    event = parse_event(raw)
    check_timestamp(event, datetime.now(UTC), runtime.max_age)
    location = str(event.get("locationId") or "")
    tenant = runtime.locations.get(location)
    if tenant is None:
        return JSONResponse(
            error_body("NotFound", f"location {location!r} is not in THREADKEEP_GHL_LOCATIONS"),
            404,
        )
    delivery = str(event.get("webhookId") or digest(event))
    try:
        store = await request.app.state.stores.get()
        ledger = Ledger(store, runtime.sync_tenant)
        if await ledger.seen(location, delivery):
            return JSONResponse({"status": "duplicate", "webhookId": delivery})
        done = await apply_event(store, ledger, runtime.gmap, event, tenant)
        await ledger.mark_seen(location, delivery, event["type"])
    except (BackendError, StoreClosed) as exc:
        log.warning("GoHighLevel %s not stored (429, to be retried): %s", event["type"], exc)
        return _too_busy(f"the store cannot take the event now: {exc}")
    log.info("GoHighLevel %s %s: %s", event["type"], delivery, done)
    return JSONResponse({"status": "stored", "webhookId": delivery, "done": done})
