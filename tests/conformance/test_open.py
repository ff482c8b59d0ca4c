"""Opening a store: the two async forms, the instrumentation hook, the default URL."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import pytest

import threadkeep


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
    """Wraps a backend and counts the calls made through it."""

    def __init__(self, backend: Any, calls: list[str]) -> None:
        self._backend, self._calls = backend, calls

    def __getattr__(self, name: str) -> Any:
        self._calls.append(name)
        return getattr(self._backend, name)


def test_instrument_wraps_the_backend(store_url: str) -> None:
    calls: list[str] = []
    with threadkeep.open(store_url, instrument=lambda b: _Counting(b, calls)) as store:
        store.start(f"c-{uuid4()}")
    assert "create" in calls

    async def main() -> None:
        wrap = lambda b: _Counting(b, calls)  # noqa: E731
        async with threadkeep.open_async(store_url, instrument=wrap) as store:
            await store.start(f"c-{uuid4()}")

    calls.clear()
    asyncio.run(main())
    assert "create" in calls


def test_default_store_url_is_a_sqlite_file_in_the_working_directory() -> None:
    assert threadkeep.DEFAULT_STORE_URL == "sqlite:///./threadkeep.db"
