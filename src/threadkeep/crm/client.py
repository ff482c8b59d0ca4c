"""A thin GoHighLevel REST client: auth, ``Version`` header, rate limit, retries, token refresh.

- Every call sends ``Authorization: Bearer <token>``, ``Version`` and JSON headers.
- At most ``limit`` requests per ``window`` seconds per location (GoHighLevel allows 100 per
  10 s per app and location); calls beyond it wait for the window to slide.
- A 429, a 5xx or a network error is retried with exponential backoff and jitter (tenacity),
  honouring ``Retry-After``, until the attempts or the caller's deadline run out.
- A 401 with OAuth credentials refreshes the access token once and retries; the new refresh
  token (GoHighLevel rotates them) is handed to ``on_tokens`` so it survives a restart.
- Any other 4xx is a ``GhlRejected``: retrying the same request would fail the same way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from threadkeep import ThreadkeepError

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_VERSION",
    "GhlClient",
    "GhlError",
    "GhlRejected",
    "GhlUnavailable",
    "OAuthTokens",
]

log = logging.getLogger("threadkeep.crm")

DEFAULT_API_URL: Final = "https://services.leadconnectorhq.com"
#: The ``Version`` of the v2 contacts and opportunities endpoints.
DEFAULT_VERSION: Final = "2021-07-28"


class GhlError(ThreadkeepError):
    """A GoHighLevel call failed."""


class GhlUnavailable(GhlError):
    """GoHighLevel cannot be reached, keeps failing (5xx, 429), or refuses our token: later."""

    http_status = 503


class GhlRejected(GhlError):
    """GoHighLevel refused the request itself (a 4xx other than 401 and 429)."""

    http_status = 502

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    location: str
    body: Any
    params: dict[str, str] | None


class _Retry(Exception):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class OAuthTokens:
    """OAuth credentials of a GoHighLevel app; ``refresh_token`` is replaced at each refresh."""

    client_id: str
    client_secret: str
    refresh_token: str
    access_token: str = ""


class _Window:
    """A sliding-window limiter: at most ``limit`` requests in any ``window`` seconds.

    A request occupies its slot from when it starts until ``window`` seconds after it ended:
    GoHighLevel counts arrivals, and a request's arrival lies somewhere between the two.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.ends: list[float] = []  # when each counted request ended (inf: in flight)
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for a free slot and take it."""
        async with self.lock:
            while True:
                now = time.monotonic()
                self.ends = [e for e in self.ends if now - e < self.window]
                if len(self.ends) < self.limit:
                    self.ends.append(math.inf)
                    return
                soonest = min(self.ends)
                await asyncio.sleep(0.01 if soonest == math.inf else soonest + self.window - now)

    def release(self) -> None:
        """Mark the oldest request still in flight as ended now."""
        for i, end in enumerate(self.ends):
            if end == math.inf:
                self.ends[i] = time.monotonic()
                return


class GhlClient:
    """Calls GoHighLevel's REST API for one app (one token or one set of OAuth credentials).

    Args:
        base_url: the API's base URL (``GHL_API_URL``).
        token: a Private Integration token or an access token; None with ``oauth``.
        oauth: OAuth credentials; their access token is refreshed on a 401.
        on_tokens: called with new OAuth tokens after a refresh (to keep them durably).
        version: the ``Version`` header.
        limit: requests per ``window`` seconds per location.
        window: the rate limit's window in seconds.
        attempts: tries of one call before giving up (429, 5xx, network errors).
        timeout: seconds one HTTP request may take.
        backoff: the first retry's wait in seconds (doubling, with jitter, up to 30 s).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        token: str | None = None,
        oauth: OAuthTokens | None = None,
        on_tokens: Callable[[OAuthTokens], Awaitable[None]] | None = None,
        version: str = DEFAULT_VERSION,
        limit: int = 100,
        window: float = 10.0,
        attempts: int = 5,
        timeout: float = 10.0,
        backoff: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token or (oauth.access_token if oauth else "")
        self.oauth = oauth
        self.on_tokens = on_tokens
        self.version = version
        self.limit = limit
        self.window = window
        self.attempts = attempts
        self.timeout = timeout
        self.backoff = backoff
        self._windows: dict[str, _Window] = {}
        self._http = httpx.AsyncClient(timeout=timeout)
        self._refresh_lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        location: str,
        json: Any = None,
        params: dict[str, str] | None = None,
        deadline: float | None = None,
    ) -> Any:
        """Make one API call, within the rate limit, retried as the module docstring says.

        Args:
            method: the HTTP method.
            path: the path under the base URL (``/contacts/abc``).
            location: the GoHighLevel location the call is for (its rate limit applies).
            json: the JSON body.
            params: query parameters.
            deadline: a ``time.monotonic()`` after which no retry is started.

        Returns:
            The response's JSON (None for an empty body).

        Raises:
            GhlUnavailable: unreachable, still failing after the retries, or the token is
                refused (and cannot be refreshed, or was refreshed already).
            GhlRejected: a 4xx other than 401 and 429.
        """
        call = _Call(method, path, location, json, params)
        refreshed = False
        while True:
            try:
                return await self._with_retries(call, deadline)
            except _Unauthorized as exc:
                if self.oauth is None or refreshed:
                    raise GhlUnavailable(f"GoHighLevel refused the token: {exc}") from None
                await self._refresh(exc.token)
                refreshed = True

    async def _with_retries(self, call: _Call, deadline: float | None) -> Any:
        fallback = wait_exponential(multiplier=self.backoff, max=30.0) + wait_random(
            0, self.backoff
        )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Retry) and exc.retry_after is not None:
                return min(exc.retry_after, 60.0)
            return float(fallback(state))

        def stop(state: RetryCallState) -> bool:
            if stop_after_attempt(self.attempts)(state):
                return True
            return deadline is not None and time.monotonic() + wait(state) >= deadline

        retrying = AsyncRetrying(
            stop=stop, wait=wait, retry=retry_if_exception_type(_Retry), reraise=True
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(call)
        except _Retry as exc:
            raise GhlUnavailable(
                f"GoHighLevel {call.method} {call.path} kept failing: {exc}"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, call: _Call) -> Any:
        """One HTTP request within the location's rate limit; errors sorted for the retries."""
        window = self._windows.setdefault(call.location, _Window(self.limit, self.window))
        await window.acquire()
        token = self.token
        headers = {
            "Authorization": f"Bearer {token}",
            "Version": self.version,
            "Accept": "application/json",
        }
        try:
            response = await self._http.request(
                call.method,
                self.base_url + call.path,
                json=call.body,
                params=call.params,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}", None) from None
        finally:
            window.release()
        if response.status_code == 401:
            raise _Unauthorized(response.text[:200], token)
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retry(f"HTTP {response.status_code}", _retry_after(response))
        if response.status_code >= 400:
            raise GhlRejected(
                f"GoHighLevel refused {call.method} {call.path}: HTTP {response.status_code} "
                f"{response.text[:300]}",
                response.status_code,
            )
        return response.json() if response.content else None

    async def _refresh(self, stale_token: str) -> None:
        assert self.oauth is not None
        async with self._refresh_lock:
            if self.token != stale_token:
                return  # another call refreshed it meanwhile
            try:
                response = await self._http.post(
                    self.base_url + "/oauth/token",
                    data={
                        "client_id": self.oauth.client_id,
                        "client_secret": self.oauth.client_secret,
                        "grant_type": "refresh_token",
                        "refresh_token": self.oauth.refresh_token,
                    },
                    headers={"Accept": "application/json"},
                )
            except httpx.HTTPError as exc:
                raise GhlUnavailable(f"cannot refresh the GoHighLevel token: {exc}") from None
            if response.status_code != 200:
                raise GhlUnavailable(
                    f"GoHighLevel refused the token refresh: HTTP {response.status_code} "
                    f"{response.text[:200]}"
                )
            data = response.json()
            self.oauth = OAuthTokens(
                self.oauth.client_id,
                self.oauth.client_secret,
                str(data.get("refresh_token") or self.oauth.refresh_token),
                str(data["access_token"]),
            )
            self.token = self.oauth.access_token
            log.info("GoHighLevel access token refreshed")
            if self.on_tokens is not None:
                await self.on_tokens(self.oauth)


class _Unauthorized(Exception):
    def __init__(self, message: str, token: str) -> None:
        super().__init__(message)
        self.token = token


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
