"""Opening a store: the two async forms, the instrumentation hook, the default URL."""

from __future__ import annotations

import asyncio
from typing import TypeVar
from uuid import uuid4

import pytest

import threadkeep
from threadkeep.backends import AsyncBackend, Backend, Op, Result

R = TypeVar("R")


def test_async_with_open_async_needs_no_await(store_url: str) -> None:
    async def main() -> threadkeep.AsyncStore:
        async with threadkeep.open_async(store_url) as store:
            conv = await store.start(f"c-{uuid4()}")
            assert (await store.get(conv.id)).id == conv.id
        return store

    store = asyncio.run(main())
    with pytest.raises(threadkeep.StoreClosed):
        asyncio.run(store.get("x"))


def test_awaited_open_async_still_works(store_url: str) -> None:
    async def main() -> None:
        store = await threadkeep.open_async(store_url)
        try:
            conv = await store.start(f"c-{uuid4()}")
            assert (await store.get(conv.id)).id == conv.id
        finally:
            await store.aclose()

    asyncio.run(main())


def test_an_unawaited_store_connects_on_first_use(store_url: str) -> None:
    async def main() -> None:
        store = threadkeep.open_async(store_url)
        try:
            conv, again = await asyncio.gather(
                store.start(f"c-{uuid4()}"), store.start(f"c-{uuid4()}")
            )
            assert conv.id != again.id
        finally:
            await store.aclose()

    asyncio.run(main())


def test_a_bad_url_is_refused_before_any_await() -> None:
    with pytest.raises(threadkeep.InvalidInput):
        threadkeep.open_async("nope://x")


class _Counting:
    """Wraps a backend and records the name of every op it carries out."""

    def __init__(self, backend: Backend, names: list[str]) -> None:
        self._backend, self._names = backend, names

    def execute(self, op: Op[R]) -> Result[R]:
        self._names.append(op.name)
        return self._backend.execute(op)

    def ping(self) -> None:
        self._backend.ping()

    def close(self) -> None:
        self._backend.close()


class _AsyncCounting:
    """The same, around an AsyncBackend."""

    def __init__(self, backend: AsyncBackend, names: list[str]) -> None:
        self._backend, self._names = backend, names

    async def execute(self, op: Op[R]) -> Result[R]:
        self._names.append(op.name)
        return await self._backend.execute(op)

    async def ping(self) -> None:
        await self._backend.ping()

    async def close(self) -> None:
        await self._backend.close()


def test_instrument_wraps_the_backend(store_url: str) -> None:
    names: list[str] = []
    with threadkeep.open(store_url, instrument=lambda b: _Counting(b, names)) as store:
        conv = store.start(f"c-{uuid4()}")
        store.append(conv.id, "user", "hi")
    assert names == ["create", "append"]

    async def main() -> None:
        wrap = lambda b: _AsyncCounting(b, names)  # noqa: E731
        async with threadkeep.open_async(store_url, instrument=wrap) as store:
            await store.context((await store.start(f"c-{uuid4()}")).id)

    names.clear()
    asyncio.run(main())
    assert names == ["create", "read_context"]


def test_default_store_url_is_a_sqlite_file_in_the_working_directory() -> None:
    assert threadkeep.DEFAULT_STORE_URL == "sqlite:///./threadkeep.db"
