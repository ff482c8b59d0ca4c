"""Opening stores of a URL through either API: the sync Store, or an AsyncStore behind a facade
with the Store's call shapes (through an anyio blocking portal), so no test is written twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from typing import Any

import anyio.from_thread

import threadkeep

__all__ = ["store_factory"]


class _AsyncFacade:
    """Expose an AsyncStore with the sync Store's call shapes, through a blocking portal."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, store: threadkeep.AsyncStore):
        self._portal = portal
        self._store = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            async def run() -> Any:
                return await attr(*args, **kwargs)

            return self._portal.call(run)

        return call

    def __enter__(self) -> _AsyncFacade:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._portal.call(self._store.aclose)

    def events(self, **kwargs: Any) -> Iterator[threadkeep.Event]:
        async def collect() -> list[threadkeep.Event]:
            return [event async for event in self._store.events(**kwargs)]

        return iter(self._portal.call(collect))

    def turn(self, conversation_id: str, **kwargs: Any) -> AbstractContextManager[Any]:
        @asynccontextmanager
        async def wrapped() -> AsyncIterator[_AsyncTurnFacade]:
            async with self._store.turn(conversation_id, **kwargs) as turn:
                yield _AsyncTurnFacade(self._portal, turn)

        return self._portal.wrap_async_context_manager(wrapped())


class _AsyncTurnFacade:
    def __init__(self, portal: anyio.from_thread.BlockingPortal, turn: threadkeep.AsyncTurn):
        self._portal = portal
        self._turn = turn
        self.conversation_id = turn.conversation_id
        self.token = turn.token

    def append(self, *args: Any, **kwargs: Any) -> threadkeep.Message:
        async def run() -> threadkeep.Message:
            return await self._turn.append(*args, **kwargs)

        return self._portal.call(run)

    def append_many(self, *args: Any, **kwargs: Any) -> list[threadkeep.Message]:
        async def run() -> list[threadkeep.Message]:
            return await self._turn.append_many(*args, **kwargs)

        return self._portal.call(run)

    def _append_read(self, *args: Any) -> tuple[threadkeep.Message, threadkeep.Conversation | None]:
        async def run() -> tuple[threadkeep.Message, threadkeep.Conversation | None]:
            return await self._turn._append_read(*args)

        return self._portal.call(run)


@contextmanager
def store_factory(
    api: str, url: str, clock: threadkeep.ManualClock
) -> Iterator[Callable[..., Any]]:
    """Yield ``make(**open_kwargs)`` opening stores of ``url`` through the ``api`` given.

    ``api`` is ``"sync"`` (a Store) or ``"async"`` (an AsyncStore behind the sync facade);
    every store opened is closed at the end.
    """
    opened: list[Any] = []
    with anyio.from_thread.start_blocking_portal() as portal:

        def factory(**kwargs: Any) -> Any:
            kwargs.setdefault("clock", clock)
            if api == "sync":
                store: Any = threadkeep.open(url, **kwargs)
            else:

                async def open_it() -> threadkeep.AsyncStore:
                    return await threadkeep.open_async(url, **kwargs)

                store = _AsyncFacade(portal, portal.call(open_it))
            opened.append(store)
            return store

        try:
            yield factory
        finally:
            for store in opened:
                store.close()
