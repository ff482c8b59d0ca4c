"""Redis exceptions mapped once, and the retry policy both drivers follow.

Connection errors and timeouts are retried with exponential backoff and jitter, within the
call's deadline; then (or at once for errors retrying cannot fix) a threadkeep error is raised
``from`` the driver's exception, so nothing from redis-py leaks to callers.
"""

from __future__ import annotations

import random
import time
from typing import NoReturn

from redis import exceptions as rex

from threadkeep._exceptions import BackendError, BackendUnavailable

__all__ = ["Attempts"]

_BASE = 0.05  # first pause, seconds
_CAP = 1.0  # longest pause, seconds

#: Errors after which the same request may be sent again. Scripts are safe to resend: an
#: append carries an internal idempotency key and a state save a call token.
_RETRYABLE = (rex.ConnectionError, rex.TimeoutError)
#: Subclasses of the above that retrying does not fix.
_FINAL = (rex.AuthenticationError, rex.AuthorizationError)


class Attempts:
    """The attempts of one request: how long to pause before the next one, or give up.

    Args:
        host: host:port, for messages (never the password).
        retries: how many times a failed request is sent again.
        timeout: seconds after the first attempt when no new attempt starts.
    """

    def __init__(self, host: str, retries: int, timeout: float) -> None:
        self.host = host
        self.retries = retries
        self.deadline = time.monotonic() + timeout
        self.failures = 0

    def pause(self, exc: Exception) -> float:
        """Return how long to sleep before sending the request again.

        Raises:
            BackendUnavailable: the server cannot be reached (retries or time used up).
            BackendError: any other failure of Redis.
        """
        if not isinstance(exc, rex.RedisError):
            raise exc
        if not isinstance(exc, _RETRYABLE) or isinstance(exc, _FINAL):
            self.fail(exc)
        self.failures += 1
        remaining = self.deadline - time.monotonic()
        if self.failures > self.retries or remaining <= 0:
            self.fail(exc)
        delay = min(_CAP, _BASE * 2 ** (self.failures - 1))
        return float(min(remaining, delay * random.uniform(0.5, 1.0)))

    def fail(self, exc: Exception) -> NoReturn:
        """Raise the threadkeep error for ``exc``.

        Raises:
            BackendUnavailable: connection errors, timeouts, authentication failures.
            BackendError: any other failure of Redis.
        """
        cause = f"{type(exc).__name__}: {exc}"
        if self.failures:
            cause += f" (after {self.failures} attempt{'s' if self.failures > 1 else ''})"
        if isinstance(exc, _RETRYABLE):
            raise BackendUnavailable("redis", self.host, cause) from exc
        raise BackendError(f"redis at {self.host} failed: {cause}") from exc
