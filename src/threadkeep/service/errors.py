"""Errors become JSON ``{"error": {"type", "message"}}`` here, and nowhere else.

Every threadkeep error carries its ``http_status``, so one handler maps them all; the service's
own refusals (401, 403, 413, 429) are ThreadkeepErrors too. Validation errors name the field and the
rule that failed.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from threadkeep import BackendUnavailable, ThreadkeepError

__all__ = [
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "Unauthorized",
    "error_body",
    "install",
]

log = logging.getLogger("threadkeep.service")


class Unauthorized(ThreadkeepError):
    """The request has no API key, or one that is not configured."""

    http_status = 401


class Forbidden(ThreadkeepError):
    """The service has no API keys and serves loopback clients only."""

    http_status = 403


class NotFound(ThreadkeepError):
    """Nothing here for this caller (a visitor token on a route for agents)."""

    http_status = 404


class PayloadTooLarge(ThreadkeepError):
    """The request body is larger than the configured limit."""

    http_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")
        self.limit = limit


def error_body(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    """Return the JSON body of an error response."""
    return {"error": {"type": kind, "message": message, **extra}}


#: Attributes of an error that its JSON body carries (TurnIncomplete names the stored message).
_DETAILS = ("field", "rule", "conversation_id", "message_seq", "key_id")


def _headers(exc: ThreadkeepError) -> dict[str, str] | None:
    if exc.http_status == 401:
        return {"WWW-Authenticate": "Bearer"}
    retry_after = getattr(exc, "retry_after", None)  # 429 (RateLimited)
    return {"Retry-After": str(retry_after)} if isinstance(retry_after, int) else None


async def _threadkeep_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ThreadkeepError)
    status = exc.http_status
    extra: dict[str, Any] = {}
    for name in _DETAILS:
        value = getattr(exc, name, None)
        if isinstance(value, str | int) and not isinstance(value, bool):
            extra[name] = value
    if status >= 500:
        level = logging.WARNING if isinstance(exc, BackendUnavailable) else logging.ERROR
        log.log(level, "%s %s failed: %s", request.method, request.url.path, exc)
    return JSONResponse(
        error_body(type(exc).__name__, str(exc), **extra), status, headers=_headers(exc)
    )


def _rule(error: Any) -> str:
    return str(error.get("type", "invalid"))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": ".".join(str(p) for p in e.get("loc", ())),
            "rule": _rule(e),
            "message": str(e.get("msg", "invalid")),
        }
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": "", "rule": "invalid", "message": "invalid"}
    message = f"{first['field']}: {first['message']} (rule: {first['rule']})"
    body = error_body(
        "ValidationError", message, field=first["field"], rule=first["rule"], errors=errors
    )
    return JSONResponse(body, 422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
    return JSONResponse(
        error_body(kind, str(exc.detail)), exc.status_code, headers=dict(exc.headers or {})
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s crashed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("InternalError", "internal error; see the server log"), 500)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(ThreadkeepError, _threadkeep_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
