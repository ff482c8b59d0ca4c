"""Backend registry: one line per backend, imported lazily when its scheme is opened."""

from __future__ import annotations

import asyncio
import functools
import importlib
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, Final, cast

from threadkeep._exceptions import InvalidInput
from threadkeep._rules.ops import EventRow, EventsOp
from threadkeep._url import StoreURL
from threadkeep.backends._protocol import AsyncBackend, Backend

__all__ = ["ASYNC_REGISTRY", "REGISTRY", "ThreadedAsyncBackend", "load_async", "load_sync"]

#: scheme → "module:Class" of the synchronous backend.
REGISTRY: Final = MappingProxyType(
    {
        "memory": "threadkeep.backends.memory:MemoryBackend",
        "sqlite": "threadkeep.backends.sqlite.backend:SQLiteBackend",
        "redis": "threadkeep.backends.redis.sync:RedisBackend",
        "rediss": "threadkeep.backends.redis.sync:RedisBackend",
        "postgresql": "threadkeep.backends.postgres.sync:PostgresBackend",
    }
)

#: scheme → "module:Class" of a native async backend; others run the sync one in threads.
ASYNC_REGISTRY: Final = MappingProxyType(
    {
        "redis": "threadkeep.backends.redis.aio:AsyncRedisBackend",
        "rediss": "threadkeep.backends.redis.aio:AsyncRedisBackend",
        "postgresql": "threadkeep.backends.postgres.aio:AsyncPostgresBackend",
    }
)

_POLL = (0.02, 0.2)  # first and longest pause between polls for new events, seconds

#: scheme → the pip extra that installs its driver.
EXTRAS: Final = MappingProxyType({"redis": "redis", "rediss": "redis", "postgresql": "postgres"})


def _import(target: str, scheme: str) -> Callable[[StoreURL], Any]:
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = EXTRAS.get(scheme, "all")
        raise InvalidInput(
            f"{scheme}:// stores need an extra package ({exc.name} is missing): "
            f"pip install 'threadkeep[{extra}]'",
            field="url",
        ) from exc
    return cast(Callable[[StoreURL], Any], getattr(module, class_name))


def _target(registry: MappingProxyType[str, str], url: StoreURL) -> str:
    if url.scheme not in registry:
        raise InvalidInput(
            f"{url.scheme}:// stores are not available in this version of threadkeep; "
            f"available: {', '.join(sorted(REGISTRY))}",
            field="url",
        )
    return registry[url.scheme]


def load_sync(url: StoreURL) -> Backend:
    """Open the synchronous backend for ``url``.

    Raises:
        InvalidInput: unknown scheme or missing driver package.
        BackendUnavailable: the store cannot be reached.
    """
    return cast(Backend, _import(_target(REGISTRY, url), url.scheme)(url))


def load_async(url: StoreURL) -> AsyncBackend:
    """Open the asynchronous backend for ``url`` (a threaded sync one if none is native).

    Raises:
        InvalidInput: unknown scheme or missing driver package.
        BackendUnavailable: the store cannot be reached.
    """
    if url.scheme in ASYNC_REGISTRY:
        return cast(AsyncBackend, _import(ASYNC_REGISTRY[url.scheme], url.scheme)(url))
    return cast(AsyncBackend, ThreadedAsyncBackend(load_sync(url)))


class ThreadedAsyncBackend:
    """Runs each call of a synchronous backend in a worker thread (``asyncio.to_thread``).

    SQLite and the memory backend need nothing more: their calls are short and thread-safe.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def read_events(self, op: EventsOp, wait: float) -> list[EventRow] | None:
        """Poll without blocking a worker thread while waiting.

        A waiting reader (an SSE client, say) must not hold one of the few default-executor
        threads for seconds, or a handful of them would stall every other store call.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        pause = _POLL[0]
        while True:
            rows = await asyncio.to_thread(self._backend.read_events, op, 0.0)
            remaining = deadline - loop.time()
            if rows is None or rows or remaining <= 0:
                return rows
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, _POLL[1])

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._backend, name)

        @functools.wraps(method)
        async def call(*args: Any) -> Any:
            return await asyncio.to_thread(method, *args)

        return call
