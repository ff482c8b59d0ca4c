"""Metrics and request logs: Prometheus counters and histograms, one log line per request.

Each app has its own registry (so tests may build many apps in one process); with several
workers each worker reports its own numbers, labelled by ``worker`` (its process id).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from threadkeep.backends import AsyncBackend, Op, Result

__all__ = ["Metrics", "TimedBackend", "access_log", "request_info"]

T = TypeVar("T")
R = TypeVar("R")

access_log = logging.getLogger("threadkeep.access")

#: What the route learned about the request (tenant, conversation id) for its log line.
request_info: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "threadkeep_request_info", default=None
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def note(**fields: Any) -> None:
    """Add ``fields`` to the current request's log line."""
    info = request_info.get()
    if info is not None:
        info.update(fields)


class Metrics:
    """The service's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        worker = ["worker"]
        self.requests = Counter(
            "threadkeep_http_requests",
            "HTTP requests answered, by method, route and status",
            ["method", "route", "status", *worker],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "threadkeep_http_request_duration_seconds",
            "HTTP request latency (SSE streams: until the stream ends)",
            ["method", "route", *worker],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.store_ops = Counter(
            "threadkeep_store_operations",
            "Store backend operations, by operation and outcome (ok or the error type)",
            ["op", "outcome", *worker],
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "threadkeep_store_operation_duration_seconds",
            "Store backend operation latency (event reads, which wait, are left out)",
            ["op", *worker],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.degraded_turns = Counter(
            "threadkeep_chat_unpersisted_turns",
            "Chat turns answered while the store was unreachable (not kept)",
            worker,
            registry=self.registry,
        )
        self.channel_deliveries = Counter(
            "threadkeep_channel_deliveries",
            "Inbound channel messages taken, by provider and outcome (stored or duplicate)",
            ["provider", "outcome", *worker],
            registry=self.registry,
        )
        self.channel_statuses = Counter(
            "threadkeep_channel_statuses",
            "Channel delivery status updates, by provider and outcome (applied, ignored …)",
            ["provider", "outcome", *worker],
            registry=self.registry,
        )
        self.channel_replies = Counter(
            "threadkeep_channel_replies",
            "Replies the channel processor sent, by provider",
            ["provider", *worker],
            registry=self.registry,
        )
        self.channel_send_failures = Counter(
            "threadkeep_channel_send_failures",
            "Replies that could not be sent, by provider and reason",
            ["provider", "reason", *worker],
            registry=self.registry,
        )
        self.channel_lag = Histogram(
            "threadkeep_channel_processor_lag_seconds",
            "From an inbound message's arrival at the provider to the reply being stored",
            ["provider", *worker],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.worker = str(os.getpid())
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._store_children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        children = self._request_children.get((method, route, status))
        if children is None:  # labels() takes a lock and builds a tuple: once per label set
            children = (
                self.requests.labels(method, route, str(status), self.worker),
                self.request_seconds.labels(method, route, self.worker),
            )
            self._request_children[(method, route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def replied(self, provider: str, lag_seconds: float) -> None:
        """Count one reply the channel processor sent (the processor's observer)."""
        self.channel_replies.labels(provider, self.worker).inc()
        self.channel_lag.labels(provider, self.worker).observe(max(lag_seconds, 0.0))

    def send_failed(self, provider: str, reason: str) -> None:
        """Count one reply that could not be sent (the processor's observer)."""
        self.channel_send_failures.labels(provider, reason, self.worker).inc()

    def observe_store(self, op: str, outcome: str, seconds: float | None) -> None:
        """Count one store operation."""
        children = self._store_children.get((op, outcome))
        if children is None:
            children = (
                self.store_ops.labels(op, outcome, self.worker),
                self.store_seconds.labels(op, self.worker),
            )
            self._store_children[(op, outcome)] = children
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)


class TimedBackend:
    """Wraps an AsyncBackend: each op is counted and timed into ``metrics``, by op name.

    Event reads are counted but not timed: they wait for events by design.
    """

    def __init__(self, backend: AsyncBackend, metrics: Metrics) -> None:
        self._backend = backend
        self._metrics = metrics

    async def execute(self, op: Op[R]) -> Result[R]:
        """Carry out ``op`` on the wrapped backend, counting and timing it."""
        return await self._observe(op.name, not op.waits, self._backend.execute(op))

    async def ping(self) -> None:
        """See AsyncBackend.ping."""
        await self._observe("ping", True, self._backend.ping())

    async def close(self) -> None:
        """See AsyncBackend.close."""
        await self._backend.close()

    async def _observe(self, name: str, timed: bool, call: Awaitable[T]) -> T:
        start = time.perf_counter()
        try:
            result = await call
        except BaseException as exc:
            self._metrics.observe_store(name, type(exc).__name__, None)
            raise
        self._metrics.observe_store(name, "ok", time.perf_counter() - start if timed else None)
        return result


def log_request(fields: dict[str, Any]) -> None:
    """Write one request's log line (JSON)."""
    level = logging.WARNING if fields.get("status", 0) >= 500 else logging.INFO
    if access_log.isEnabledFor(level):  # no JSON for a line nobody logs
        access_log.log(level, json.dumps(fields, separators=(",", ":"), default=str))
