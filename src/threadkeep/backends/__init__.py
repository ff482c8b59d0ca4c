"""Backend registry: one line per backend, imported lazily when its scheme is opened.

A backend is a class taking a ``StoreURL`` and satisfying ``Backend`` or ``AsyncBackend``
(``_protocol``): ``execute(op: Op[R]) -> Result[R]``, ``ping`` and ``close``. The
``TYPE_CHECKING`` block below has mypy check every in-tree one. A wrapper for metrics or tracing
(``open(url, instrument=…)``) implements the same three methods around another backend.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, TypeVar, cast

from threadkeep._exceptions import InvalidInput
from threadkeep._rules.flows import pauses
from threadkeep._rules.ops import EventsOp, Op, Outcome, Result
from threadkeep._url import StoreURL
from threadkeep.backends._common import POLL
from threadkeep.backends._protocol import AsyncBackend, Backend

__all__ = [
    "ASYNC_REGISTRY",
    "REGISTRY",
    "AsyncBackend",
    "Backend",
    "Op",
    "Result",
    "ThreadedAsyncBackend",
    "load_async",
    "load_sync",
]

R = TypeVar("R")

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

#: scheme → the pip extra that installs its driver.
EXTRAS: Final = MappingProxyType({"redis": "redis", "rediss": "redis", "postgresql": "postgres"})

if TYPE_CHECKING:  # mypy checks each in-tree backend against its Protocol
    from threadkeep.backends.memory import MemoryBackend
    from threadkeep.backends.postgres.aio import AsyncPostgresBackend
    from threadkeep.backends.postgres.sync import PostgresBackend
    from threadkeep.backends.redis.aio import AsyncRedisBackend
    from threadkeep.backends.redis.sync import RedisBackend
    from threadkeep.backends.sqlite.backend import SQLiteBackend

    _memory: type[Backend] = MemoryBackend
    _sqlite: type[Backend] = SQLiteBackend
    _redis: type[Backend] = RedisBackend
    _postgres: type[Backend] = PostgresBackend
    _async_redis: type[AsyncBackend] = AsyncRedisBackend
    _async_postgres: type[AsyncBackend] = AsyncPostgresBackend


def _import(registry: MappingProxyType[str, str], url: StoreURL) -> Callable[[StoreURL], object]:
    if url.scheme not in registry:
        raise InvalidInput(
            f"{url.scheme}:// stores are not available in this version of threadkeep; "
            f"available: {', '.join(sorted(REGISTRY))}",
            field="url",
        )
    module_name, _, class_name = registry[url.scheme].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = EXTRAS.get(url.scheme, "all")
        raise InvalidInput(
            f"{url.scheme}:// stores need an extra package ({exc.name} is missing): "
            f"pip install 'threadkeep[{extra}]'",
            field="url",
        ) from exc
    return cast(Callable[[StoreURL], object], getattr(module, class_name))


def load_sync(url: StoreURL) -> Backend:
    """Open the synchronous backend for ``url``.

    Raises:
        InvalidInput: unknown scheme or missing driver package.
        BackendUnavailable: the store cannot be reached.
    """
    return cast(Backend, _import(REGISTRY, url)(url))


def load_async(url: StoreURL) -> AsyncBackend:
    """Open the asynchronous backend for ``url`` (a threaded sync one if none is native).

    Raises:
        InvalidInput: unknown scheme or missing driver package.
        BackendUnavailable: the store cannot be reached.
    """
    if url.scheme in ASYNC_REGISTRY:
        return cast(AsyncBackend, _import(ASYNC_REGISTRY, url)(url))
    return ThreadedAsyncBackend(load_sync(url))


class ThreadedAsyncBackend:
    """Runs each op of a synchronous backend in a worker thread (``asyncio.to_thread``).

    SQLite and the memory backend need nothing more: their ops are short and thread-safe.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def execute(self, op: Op[R]) -> Result[R]:
        """Carry out ``op`` in a worker thread; a wait for events polls from the event loop.

        A waiting reader (an SSE client, say) must not hold one of the few default-executor
        threads for seconds, or a handful of them would stall every other store call.
        """
        if not isinstance(op, EventsOp) or op.wait <= 0:
            return await asyncio.to_thread(self._backend.execute, op)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + op.wait
        now = replace(op, wait=0.0)
        for pause in pauses(*POLL):
            result = await asyncio.to_thread(self._backend.execute, now)
            remaining = deadline - loop.time()
            if result.value or result.outcome is not Outcome.OK or remaining <= 0:
                return cast(Result[R], result)
            await asyncio.sleep(min(pause, remaining))
        raise AssertionError("unreachable: pauses() never ends")

    async def ping(self) -> None:
        """See Backend.ping."""
        await asyncio.to_thread(self._backend.ping)

    async def close(self) -> None:
        """See Backend.close."""
        await asyncio.to_thread(self._backend.close)
