"""Channel webhooks: ``/v1/channels/whatsapp`` (GET handshake, POST) and ``/v1/channels/twilio``.

Each POST reads the raw body, verifies its signature before anything is parsed or stored
(missing: 401, wrong: 403), stores every inbound message durably and once (the provider's
message id is the idempotency key), applies status updates, and only then answers 200 (Twilio:
``<Response/>``). When the store cannot take the delivery the answer is 503, so the provider
retries (Meta for up to 7 days; Twilio only if its connection retry is configured). No bot work
happens here: the processor answers later. A channel whose secret is not set answers 404.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from threadkeep import BackendError, StoreClosed
from threadkeep.channels import Delivery, twilio, whatsapp
from threadkeep.channels.config import ChannelConfig
from threadkeep.channels.inbox import store_inbound
from threadkeep.channels.outbound import Sender, apply_status
from threadkeep.service.errors import error_body
from threadkeep.service.settings import ServiceSettings

__all__ = ["router", "start_processor", "stop_processor"]

log = logging.getLogger("threadkeep.channels")
router = APIRouter(prefix="/v1/channels", tags=["channels"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "this channel is not configured"}
}
_SIGNED: dict[int | str, dict[str, Any]] = {
    401: {"description": "no signature header; nothing stored"},
    403: {"description": "the signature does not match; nothing stored"},
    503: {"description": "the store cannot take the delivery now; the provider retries"},
}


def start_processor(app: FastAPI) -> asyncio.Task[None] | None:
    """Start this worker's channel processor (None: no channel is on, or ``--no-worker``)."""
    settings: ServiceSettings = app.state.settings
    config: ChannelConfig = app.state.channels
    if not settings.channel_worker or not (config.whatsapp_on or config.twilio_on):
        return None
    from threadkeep.channels.processor import Processor

    stop = asyncio.Event()
    app.state.channel_stop = stop
    sender = Sender(config, observer=app.state.metrics)
    app.state.channel_sender = sender
    processor = Processor(
        app.state.stores.get, app.state.bot, config, outbound=sender, observer=app.state.metrics
    )
    log.info("channel processor started")
    return asyncio.create_task(processor.run(stop), name="channel-processor")


async def stop_processor(app: FastAPI, task: asyncio.Task[None] | None) -> None:
    """Stop the processor: the turns in flight finish (drain), nothing new starts."""
    if task is None:
        return
    app.state.channel_stop.set()
    await task
    await app.state.channel_sender.aclose()
    log.info("channel processor stopped")


def _off(name: str) -> JSONResponse:
    return JSONResponse(error_body("NotFound", f"the {name} channel is not configured"), 404)


async def _take(request: Request, delivery: Delivery, done: Response) -> Response:
    """Store the delivery's messages and apply its statuses; ``done`` once all are stored."""
    config: ChannelConfig = request.app.state.channels
    metrics = request.app.state.metrics
    for error in delivery.errors:
        log.warning("provider reported an error: %s", error.model_dump(exclude_none=True))
    try:
        store = await request.app.state.stores.get()
        for message in delivery.messages:
            tenant = config.tenant_for(message.provider, message.account)
            stored = await store_inbound(store, message, tenant)
            outcome = "duplicate" if stored is None or stored.replayed else "stored"
            metrics.channel_deliveries.labels(message.provider, outcome, metrics.worker).inc()
        for status in delivery.statuses:
            outcome = await apply_status(store, status)
            metrics.channel_statuses.labels(status.provider, outcome, metrics.worker).inc()
    except (BackendError, StoreClosed) as exc:
        log.warning("channel delivery not stored (503, the provider retries): %s", exc)
        return JSONResponse(
            error_body("StoreUnavailable", f"the store cannot take the delivery now: {exc}"), 503
        )
    return done


@router.get(
    "/whatsapp",
    response_class=PlainTextResponse,
    summary="WhatsApp webhook verification",
    responses={403: {"description": "wrong verify token or mode"}, **_NOT_FOUND},
)
async def whatsapp_handshake(request: Request) -> Response:
    """Answer Meta's verify-token handshake with ``hub.challenge`` as text/plain."""
    config: ChannelConfig = request.app.state.channels
    if not config.whatsapp_on or not config.whatsapp_verify_token:
        return _off("WhatsApp")
    challenge = whatsapp.handshake(dict(request.query_params), config.whatsapp_verify_token)
    if challenge is None:
        return PlainTextResponse("verification failed", 403)
    return PlainTextResponse(challenge)


@router.post(
    "/whatsapp",
    summary="WhatsApp webhook",
    responses={200: {"description": "stored"}, **_SIGNED, **_NOT_FOUND},
)
async def whatsapp_webhook(request: Request) -> Response:
    """Take one signed WhatsApp Cloud API webhook: messages, statuses and errors."""
    config: ChannelConfig = request.app.state.channels
    if not config.whatsapp_on:
        return _off("WhatsApp")
    raw = await request.body()
    whatsapp.verify(raw, request.headers, config.whatsapp_app_secret)
    delivery = whatsapp.parse(raw)
    return await _take(request, delivery, JSONResponse({"status": "ok"}))


def _signed_url(request: Request, config: ChannelConfig) -> str:
    """The URL Twilio signed: the public base URL, the path and the query as received."""
    if not config.public_url:
        return str(request.url)
    query = request.url.query
    return config.public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


def _twiml() -> Response:
    return Response(twilio.EMPTY_TWIML, media_type="text/xml")


@router.post(
    "/twilio",
    summary="Twilio inbound message webhook",
    response_class=Response,
    responses={200: {"description": "stored; `<Response/>`"}, **_SIGNED, **_NOT_FOUND},
)
async def twilio_webhook(request: Request) -> Response:
    """Take one signed Twilio inbound message (SMS or WhatsApp via Twilio)."""
    config: ChannelConfig = request.app.state.channels
    if not config.twilio_on:
        return _off("Twilio")
    raw = await request.body()
    twilio.verify(_signed_url(request, config), raw, request.headers, config.twilio_auth_token)
    delivery = twilio.parse_inbound(raw, datetime.now(UTC))
    return await _take(request, delivery, _twiml())


@router.post(
    "/twilio/status",
    summary="Twilio status callback",
    response_class=Response,
    responses={200: {"description": "applied; `<Response/>`"}, **_SIGNED, **_NOT_FOUND},
)
async def twilio_status(request: Request) -> Response:
    """Apply one signed Twilio delivery status callback."""
    config: ChannelConfig = request.app.state.channels
    if not config.twilio_on:
        return _off("Twilio")
    raw = await request.body()
    twilio.verify(_signed_url(request, config), raw, request.headers, config.twilio_auth_token)
    reference = request.query_params.get("ref")
    delivery = twilio.parse_status(raw, datetime.now(UTC), reference)
    return await _take(request, delivery, _twiml())
