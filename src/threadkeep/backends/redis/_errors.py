"""Redis exceptions mapped once, and the retry policy both drivers follow.

Connection errors and timeouts are retried with redis-py's ``ExponentialWithJitterBackoff``
pauses, at most ``retries`` times, never pausing past the call's ``timeout`` and never starting
an attempt after it; then (or at once, for errors retrying cannot fix) a threadkeep error is
raised ``from`` the driver's exception, so nothing from redis-py leaks to callers. The drivers
make a call's ``Attempts`` only once its first attempt failed (``Attempts.after``): a call that
succeeds at once builds no retry objects.

Resending a request is safe: an append carries an internal idempotency key, a state save, a
lease and a delete carry a call token, a create finds its own row, and the other scripts are
reads or leave nothing to repeat.
"""

from __future__ import annotations

import time
from typing import NoReturn

from redis import exceptions as rex
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from threadkeep._exceptions import BackendError, BackendUnavailable

__all__ = ["RETRYABLE", "Attempts"]

_BASE = 0.05  # the n-th pause is uniform in [0, _BASE * 2**n) seconds …
_CAP = 1.0  # … and never longer than this

#: Errors after which the same request may be sent again.
RETRYABLE: tuple[type[rex.RedisError], ...] = (rex.ConnectionError, rex.TimeoutError)
#: Subclasses of the above that retrying does not fix.
_FINAL = (rex.AuthenticationError, rex.AuthorizationError)


class _UntilDeadline(ExponentialWithJitterBackoff):
    """redis-py's exponential backoff with jitter, never pausing past the call's deadline."""

    def __init__(self, deadline: float) -> None:
        super().__init__(cap=_CAP, base=_BASE)
        self.deadline = deadline

    def compute(self, failures: int) -> float:
        """Return the pause before the next attempt, cut at the deadline."""
        return max(0.0, min(super().compute(failures), self.deadline - time.monotonic()))


class Attempts:
    """One request's attempts: stops the retries once the deadline passed, then maps the error.

    Args:
        host: host:port, for messages (never the password).
        retries: how many times a failed request is sent again.
        timeout: seconds after the first attempt when no new attempt starts.
        started: when the first attempt started (``time.monotonic()``; default: now).
    """

    def __init__(
        self, host: str, retries: int, timeout: float, started: float | None = None
    ) -> None:
        self.host = host
        self.deadline = (time.monotonic() if started is None else started) + timeout
        self.failures = 0
        self.backoff = _UntilDeadline(self.deadline)
        self.retries = retries

    def retry(self) -> Retry:
        """Return redis-py's retry loop for this call (blocking)."""
        return Retry(self.backoff, self.retries, RETRYABLE)

    def failed(self, exc: Exception) -> None:
        """Count a failed attempt; re-raise ``exc`` when no other attempt may follow."""
        self.failures += 1
        if isinstance(exc, _FINAL) or time.monotonic() >= self.deadline:
            raise exc

    def after(self, exc: Exception) -> float:
        """Count a failed attempt; return the pause before the next one.

        What redis-py's ``Retry.call_with_retry`` does between two attempts, with ``failed``
        as its handler: ``exc`` (one of ``RETRYABLE``) is re-raised when no attempt may follow.
        """
        self.failed(exc)
        if self.failures > self.retries:
            raise exc
        return self.backoff.compute(self.failures)

    def fail(self, exc: rex.RedisError) -> NoReturn:
        """Raise the threadkeep error for ``exc``.

        Raises:
            BackendUnavailable: connection errors, timeouts, authentication failures.
            BackendError: any other failure of Redis.
        """
        cause = f"{type(exc).__name__}: {exc}"
        if self.failures > 1:
            cause += f" (after {self.failures} attempts)"
        if isinstance(exc, RETRYABLE):
            raise BackendUnavailable("redis", self.host, cause) from exc
        raise BackendError(f"redis at {self.host} failed: {cause}") from exc
