"""Liveness, readiness and Prometheus metrics (no API key needed)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from threadkeep import ThreadkeepError
from threadkeep.service.errors import error_body
from threadkeep.service.runtime import StoreHolder
from threadkeep.service.schemas import ErrorOut

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """Answer as long as the process serves requests, whatever the store does."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the store answers",
    responses={503: {"model": ErrorOut, "description": "the store cannot be reached"}},
)
async def readyz(request: Request) -> JSONResponse:
    """Return 200 when the store answers a ping, 503 while it does not."""
    holder: StoreHolder = request.app.state.stores
    timeout = request.app.state.settings.ready_timeout
    try:
        async with asyncio.timeout(timeout):
            await holder.ping(timeout)
    except (ThreadkeepError, TimeoutError) as exc:
        message = str(exc) or f"the store did not answer within {timeout} s"
        body = error_body("StoreNotReady", message, store=holder.redacted)
        return JSONResponse(body, 503)
    return JSONResponse({"status": "ready", "store": holder.redacted})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Return this worker's metrics in the Prometheus text format."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
