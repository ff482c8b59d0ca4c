"""PostgreSQL events: followers wait on LISTEN/NOTIFY; the async store end to end."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import threadkeep
from tests._servers import wait_until
from tests.backends.postgres._helpers import SHARED, listening, url_of

pytestmark = pytest.mark.postgres


def test_events_wait_wakes_on_notify(schema: str) -> None:
    """A reader waits on LISTEN (an idle session, no polling) and wakes on the NOTIFY.

    The wait is an hour: only the notification can end it before pytest's timeout.
    """
    store = threadkeep.open(url_of(schema))
    try:
        conv = store.start(contact_id="c1")
        last = [e.id for e in store.events(timeout=0)][-1]
        got: list[Any] = []
        reader = threading.Thread(
            target=lambda: got.append(next(store.events(after=last, timeout=3600)))
        )
        reader.start()
        wait_until("the reader to LISTEN", lambda: listening(schema))
        assert not got
        store.append(conv.id, "user", "hi")
        reader.join(100)
        assert [e.kind for e in got] == ["message.appended"]
    finally:
        store.close()


def test_async_store_round_trip(schema: str) -> None:
    async def main() -> None:
        store = await threadkeep.open_async(f"{SHARED}?schema={schema}")
        try:
            conv = await store.start(contact_id="c1")
            await store.append(conv.id, "user", "hello")
            msgs = await store.messages(conv.id)
            assert [m.content for m in msgs] == ["hello"]
            last = [e.id async for e in store.events(timeout=0)][-1]

            async def later() -> None:
                await asyncio.sleep(0.3)
                await store.append(conv.id, "user", "again")

            task = asyncio.create_task(later())
            kinds = []
            async for event in store.events(after=last, timeout=3600):  # NOTIFY ends it
                kinds.append(event.kind)
                break
            await task
            assert kinds == ["message.appended"]
        finally:
            await store.aclose()

    asyncio.run(main())
