"""PostgreSQL outages: a private cluster stopped under traffic and started again."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import threadkeep
from tests._servers import PostgresCluster, free_port
from tests.backends.postgres._helpers import Traffic, check_outage, outage_url, read_all
from threadkeep import BackendUnavailable

pytestmark = pytest.mark.postgres


@pytest.mark.slow
def test_outage_unavailable_then_recovers(cluster: PostgresCluster) -> None:
    store = threadkeep.open(outage_url(cluster))
    try:
        conv = store.start(contact_id="c1")
        traffic = Traffic(lambda text: store.append(conv.id, "user", text))
        try:
            check_outage(
                cluster,
                traffic,
                lambda: store.get(conv.id),
                lambda: read_all(store.messages, conv.id),
            )
        finally:
            traffic.finish()
    finally:
        store.close()


@pytest.mark.slow
def test_async_outage_unavailable_then_recovers(cluster: PostgresCluster) -> None:
    import anyio.from_thread

    with anyio.from_thread.start_blocking_portal() as portal:

        async def open_it() -> threadkeep.AsyncStore:
            return await threadkeep.open_async(outage_url(cluster))

        store = portal.call(open_it)

        def call(name: str, *args: Any, **kwargs: Any) -> Any:
            async def run() -> Any:
                return await getattr(store, name)(*args, **kwargs)

            return portal.call(run)

        try:
            conv = call("start", "c1")
            traffic = Traffic(lambda text: call("append", conv.id, "user", text))
            try:
                check_outage(
                    cluster,
                    traffic,
                    lambda: call("get", conv.id),
                    lambda: read_all(lambda *a, **k: call("messages", *a, **k), conv.id),
                )
            finally:
                traffic.finish()
        finally:
            portal.call(store.aclose)


@pytest.mark.parametrize("api", ["sync", "async"])
def test_open_on_a_closed_port_fails_fast_naming_the_cause(api: str) -> None:
    """No server on the port: open() raises BackendUnavailable well within the 5 s timeout
    (it waited out the pool's whole timeout before), on one line naming the refusal, and
    leaves no pool thread behind."""
    url = f"postgresql://127.0.0.1:{free_port()}/test?schema=tk_closed"
    threads = threading.active_count()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        if api == "sync":
            threadkeep.open(url)
        else:
            asyncio.run(_open_async(url))
    assert time.monotonic() - started < 3.0
    message = str(info.value)
    assert "\n" not in message
    assert "Connection refused" in message
    assert threading.active_count() == threads


async def _open_async(url: str) -> None:
    await threadkeep.open_async(url)
