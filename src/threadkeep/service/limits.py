"""Rate limits per API key and per visitor: token buckets, answered 429 with ``Retry-After``.

Each key (and each visitor: its contact, or the client's address before it has one) may make
``limit`` requests per ``window`` seconds, in bursts of up to ``limit``. The buckets live in the
worker's memory: with ``--workers N`` a client may make up to N times the limit, and a restart
forgets them. Behind a reverse proxy every visitor without a token has the proxy's address, so
set the visitor limit for the proxy's whole traffic there, or limit visitors at the proxy.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from threadkeep import ThreadkeepError

__all__ = ["RateLimited", "RateLimiter"]

#: Buckets kept before full (idle) ones are dropped.
_PRUNE_AT = 10_000


class RateLimited(ThreadkeepError):
    """Too many requests from one API key or one visitor; retry after ``retry_after`` seconds.

    Attributes:
        retry_after: whole seconds until a request will be accepted again.
    """

    http_status = 429

    def __init__(self, who: str, limit: int, window: float, retry_after: int) -> None:
        super().__init__(
            f"too many requests from this {who}: at most {limit} per {window:g} s; "
            f"retry after {retry_after} s"
        )
        self.retry_after = retry_after


class RateLimiter:
    """Token buckets of ``limit`` requests per ``window`` seconds, one per name (0: no limit)."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._rate = limit / window if limit else 0.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)
        self._lock = threading.Lock()
        self._prune_at = _PRUNE_AT

    def take(self, name: str, who: str) -> None:
        """Count one request of ``name``.

        Raises:
            RateLimited: its bucket is empty (429; ``who`` names the kind of caller).
        """
        if not self.limit:
            return
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(name, (float(self.limit), now))
            tokens = min(float(self.limit), tokens + (now - at) * self._rate)
            if tokens < 1.0:
                self._buckets[name] = (tokens, now)
                wait = max(1, math.ceil((1.0 - tokens) / self._rate))
                raise RateLimited(who, self.limit, self.window, wait)
            self._buckets[name] = (tokens - 1.0, now)
            if len(self._buckets) > self._prune_at:
                self._prune(now)

    def _prune(self, now: float) -> None:
        """Drop the buckets that have refilled: they hold nothing a new one would not."""
        full = [
            n for n, (t, at) in self._buckets.items() if t + (now - at) * self._rate >= self.limit
        ]
        for name in full:
            del self._buckets[name]
        self._prune_at = max(_PRUNE_AT, 2 * len(self._buckets))  # pruning stays amortised O(1)
