"""What the app holds while it runs: the store (opened lazily, retried) and the bot."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import threadkeep
from threadkeep import AsyncStore, BackendError, Encryption, Limits, Retention
from threadkeep.backends import AsyncBackend
from threadkeep.service.observe import Metrics, TimedBackend

__all__ = ["StoreHolder"]

log = logging.getLogger("threadkeep.service")

#: Schemes whose readiness probe has a connection of its own (``StoreHolder.ping``).
_PROBED_APART = frozenset({"redis", "rediss", "postgresql", "postgres"})
#: Of those, the ones whose requests' store is not pinged after it: a pooled connection that
#: the server closed is replaced by the request that meets it (the PostgreSQL backend checks
#: its pool and retries), so that ping told nothing the probe's own did not, and under load it
#: waited for a pooled connection like any request (503 when the pool was busy).
_PROBED_ALONE = frozenset({"postgresql", "postgres"})


class StoreHolder:
    """Opens the AsyncStore on first use; if the store cannot be reached, tries again later.

    The service starts even while its store is down (``/readyz`` says so) and recovers without
    a restart once the store is back.
    """

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        limits: Limits | None = None,
        retention: Retention | None = None,
        encryption: Encryption | None = None,
    ) -> None:
        self.url = url
        self.limits = limits
        self.retention = retention
        self.encryption = encryption
        self.redacted = threadkeep.redact_url(url)
        self._metrics = metrics
        self._store: AsyncStore | None = None
        self._lock = asyncio.Lock()
        self._prober: AsyncStore | None = None

    @property
    def store(self) -> AsyncStore | None:
        """The open store, or None while it has not been opened."""
        return self._store

    async def get(self) -> AsyncStore:
        """Return the open store, opening it first if needed.

        Raises:
            BackendError: the store cannot be reached (BackendUnavailable) or refuses us.
            InvalidInput: the store URL is malformed.
        """
        if self._store is not None:
            return self._store
        async with self._lock:
            if self._store is None:
                self._store = await threadkeep.open_async(
                    self.url, limits=self.limits, retention=self.retention,
                    instrument=self._timed, encryption=self.encryption,
                )  # fmt: skip
                log.info("store %s opened", self.redacted)
            return self._store

    async def ping(self, timeout: float) -> None:  # noqa: ASYNC109 - the probe's one attempt
        """Check that the store answers now: the readiness probe (``/readyz``).

        The store is opened first if it was not yet. On Redis and PostgreSQL a ping first goes
        through a connection of its own (a second store handle, made once, with a pool of one)
        with one attempt of at most ``timeout`` seconds, so while the server is away the probe
        fails at once instead of retrying with pauses of up to 1 s through the requests' pool.
        On Redis, only once that answers is the requests' store pinged (ready means they can be
        served; a connection of theirs that the server closed is replaced there, not by the
        next request). On PostgreSQL the probe's ping is the answer: the requests' calls
        replace a closed pooled connection themselves (the pool is checked and the call
        retried), and a ping through their pool would wait behind them for a connection, so a
        busy but healthy worker would look unready.

        Raises:
            BackendError: the store cannot be reached (BackendUnavailable) or refuses us.
            InvalidInput: the store URL is malformed.
        """
        store = await self.get()
        scheme = urlsplit(self.url).scheme
        if scheme in _PROBED_APART:
            if self._prober is None:
                self._prober = threadkeep.open_async(
                    self.url, instrument=self._timed, retries=0, timeout=timeout, pool_size=1
                )
            await self._prober.ping()
            if scheme in _PROBED_ALONE:
                return
        await store.ping()

    def _timed(self, backend: AsyncBackend) -> AsyncBackend:
        return TimedBackend(backend, self._metrics)

    async def try_open(self) -> None:
        """Open the store now if it can be reached; log a warning if not."""
        try:
            await self.get()
        except BackendError as exc:  # BackendUnavailable, or a server refusing us
            log.warning("store unreachable at start-up; will retry on each request: %s", exc)

    async def aclose(self) -> None:
        """Close the store, if it was opened."""
        prober, self._prober = self._prober, None
        if prober is not None:
            await prober.aclose()
        store, self._store = self._store, None
        if store is not None:
            await store.aclose()
            log.info("store %s closed", self.redacted)
