"""The /v1 routers, one module per resource, and the error responses they document."""

from __future__ import annotations

from typing import Any

from threadkeep.service.schemas import ErrorOut

__all__ = ["errors"]

_WHAT = {
    401: "no API key, or an unknown one",
    403: "no API keys are configured and the client is not on loopback",
    404: "absent, expired, or another tenant's",
    409: "illegal transition, closed conversation, or a turn in progress",
    410: "the Last-Event-ID fell out of the retained event log",
    412: "the state version is not the expected one (If-Match, or the bot's state changed)",
    413: "the request body is too large",
    422: "invalid input; the body names the field and the rule",
    428: "If-Match is required (the version the change is based on)",
    429: "too many requests from this API key or visitor; retry after Retry-After seconds",
    503: "the store cannot be reached",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Return the OpenAPI ``responses`` of these error codes (401, 403, 422, 429, 503 always)."""
    every = sorted({401, 403, 422, 429, 503, *codes})
    return {code: {"model": ErrorOut, "description": _WHAT[code]} for code in every}
