"""Metrics and request logs: Prometheus counters and histograms, one log line per request.

Each app has its own registry (so tests may build many apps in one process); with several
workers each worker reports its own numbers, labelled by ``worker`` (its process id).
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["Metrics", "TimedBackend", "access_log", "request_info"]

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
        self.worker = str(os.getpid())

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(method, route, str(status), self.worker).inc()
        self.request_seconds.labels(method, route, self.worker).observe(seconds)

    def observe_store(self, op: str, outcome: str, seconds: float | None) -> None:
        """Count one store operation."""
        self.store_ops.labels(op, outcome, self.worker).inc()
        if seconds is not None:
            self.store_seconds.labels(op, self.worker).observe(seconds)


class TimedBackend:
    """Wraps an AsyncBackend: each call is counted and timed into ``metrics``."""

    def __init__(self, backend: Any, metrics: Metrics) -> None:
        self._backend = backend
        self._metrics = metrics

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._backend, name)
        if not callable(method):
            return method  # type: ignore[no-any-return]
        metrics = self._metrics
        timed = name != "read_events"

        @functools.wraps(method)
        async def call(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                result = await method(*args)
            except BaseException as exc:
                metrics.observe_store(name, type(exc).__name__, None)
                raise
            metrics.observe_store(name, "ok", time.perf_counter() - start if timed else None)
            return result

        return call


def log_request(fields: dict[str, Any]) -> None:
    """Write one request's log line (JSON)."""
    level = logging.WARNING if fields.get("status", 0) >= 500 else logging.INFO
    access_log.log(level, json.dumps(fields, separators=(",", ":"), default=str))
