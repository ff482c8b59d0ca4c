"""An AsyncStore's per-loop pool never holds up the end of its event loop.

``asyncio.run`` and ``asyncio.Runner`` end a loop by cancelling its tasks and waiting for all of
them, then finalizing async generators. A psycopg pool worker caught the cancellation that
landed in its connection attempt and waited for work again, so the loop's end waited for it
forever (the OpenAI Agents SDK's suite hung at pytest-asyncio's teardown). Each loop below runs
in a thread of its own, so a hang fails the test within its bound instead of blocking pytest.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import threadkeep
from tests._servers import wait_until
from tests.backends.postgres._helpers import sessions, url_of

pytestmark = pytest.mark.postgres

#: psycopg-pool waits 5 s for its workers when closing: well past that means a hang
BOUND = 15.0


def _ends_within(seconds: float, main: Callable[[], Coroutine[Any, Any, None]]) -> float:
    """Run ``main()`` in an ``asyncio.Runner`` of its own thread; return how long the whole
    run took, teardown included, or fail when it has not ended after ``seconds``."""
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with asyncio.Runner() as runner:
                runner.run(main())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            done.set()

    started = time.monotonic()
    threading.Thread(target=run, name="loop-under-test", daemon=True).start()
    if not done.wait(seconds):
        pytest.fail(f"the event loop's teardown did not end within {seconds} s")
    assert errors == []
    return time.monotonic() - started


@pytest.fixture
def store(schema: str) -> Any:
    async def open_it() -> threadkeep.AsyncStore:
        return await threadkeep.open_async(url_of(schema))

    opened = asyncio.run(open_it())
    yield opened
    asyncio.run(opened.aclose())


@pytest.mark.parametrize("spins", [1, 3, 10])
def test_teardown_with_calls_in_flight_ends(store: Any, spins: int) -> None:
    """Calls still in flight when the loop ends (the pool opening its connections): the
    teardown cancels them and the pool's workers mid-connect, and ends at once."""

    async def main() -> None:
        # more calls than the pool's one connection (it grows), left running when main ends
        pending = [asyncio.create_task(store.start(f"c-{uuid.uuid4()}")) for _ in range(4)]
        for _ in range(spins):  # let the first call open the pool and its workers connect
            await asyncio.sleep(0)
        assert pending

    assert _ends_within(BOUND, main) < 5.0  # not even psycopg-pool's wait for its workers


def test_teardown_after_calls_closes_the_pool(store: Any, schema: str) -> None:
    """A loop whose calls have all returned: its pool's sessions close with it."""

    async def main() -> None:
        conv = await store.start(f"c-{uuid.uuid4()}")
        await store.append(conv.id, "user", "hi")
        assert sessions(schema)  # the loop's pool holds a session

    _ends_within(BOUND, main)
    wait_until("the loop's pool to close its sessions", lambda: not sessions(schema), 10)


def test_store_still_works_in_later_loops(store: Any) -> None:
    """A loop torn down mid-call leaves the store usable from the next loop."""

    async def interrupted() -> None:
        pending = asyncio.create_task(store.start(f"c-{uuid.uuid4()}"))
        await asyncio.sleep(0)
        assert not pending.done()

    async def complete() -> None:
        conv = await store.start(f"c-{uuid.uuid4()}")
        await store.append(conv.id, "user", "hi")
        assert [m.content for m in await store.messages(conv.id)] == ["hi"]

    for main in (interrupted, complete, interrupted, complete):
        _ends_within(BOUND, main)
