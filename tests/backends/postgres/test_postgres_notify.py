"""PostgreSQL NOTIFY payloads (migration 11): a write wakes only the followers that can see it.

The followers here wait without the one-second re-read (``UNNOTIFIED_WAIT`` patched to an
hour), so every read after the first was woken by a notification: the count of a follower's
reads is the count of its wakes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import threadkeep
from tests._servers import wait_until
from tests.backends.postgres._helpers import connect, listening, schema_at_version, url_of
from threadkeep._url import StoreURL
from threadkeep.backends.postgres import aio, sync
from threadkeep.backends.postgres._conn import ConnectionOptions
from threadkeep.backends.postgres._schema import EMIT, NOTIFY

pytestmark = pytest.mark.postgres

#: A tenant name a payload must carry as it is (quotes, a backslash, the separator, not ASCII).
ODD = "b'\"\\ t:* é"
#: A version-10 writer's NOTIFY statement (its payload is empty).
OLD_NOTIFY = (
    "SELECT pg_notify(%(chan)s, '') FROM (SELECT current_setting('threadkeep.emitted', true) "
    "= 'on' AS emitted, set_config('threadkeep.emitted', '', false)) s WHERE s.emitted"
)


@pytest.fixture(autouse=True)
def _notified_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "UNNOTIFIED_WAIT", 3600.0)
    monkeypatch.setattr(aio, "UNNOTIFIED_WAIT", 3600.0)


def _channel(schema: str) -> str:
    return ConnectionOptions(StoreURL.parse(url_of(schema))).channel


def _count_reads(backend: Any) -> dict[str | None, int]:
    """Count the backend's event reads by the tenant they follow (None: every tenant)."""
    reads: dict[str | None, int] = {}
    flows = backend._flows
    follow = flows.follow_events

    def counted(op: Any) -> Any:
        reads[op.tenant] = reads.get(op.tenant, 0) + 1
        return follow(op)

    flows.follow_events = counted
    return reads


def _notify(schema: str, payload: str) -> None:
    with connect(schema, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (_channel(schema), payload))


def _appended(got: list[tuple[str, str]]) -> int:
    return sum(kind == "message.appended" for _, kind in got)


def _done(tenant: str | None, got: list[tuple[str, str]]) -> bool:
    """A follower's last event: ODD's write (tenant a's follower: its 20th append)."""
    return _appended(got) == 20 if tenant == "a" else got[-1][0] == ODD


def _check_wakes(
    schema: str,
    reads: dict[str | None, int],
    write: Callable[[str], Any],
    got: dict[str | None, list[tuple[str, str]]],
) -> None:
    """The followers of ``ODD``, of tenant ``a`` and of every tenant wait (one read each):
    writes in ``a`` wake only ``a``'s and every tenant's; ``ODD``'s sleeps through 20 of them
    and through a payload naming ``a``; a payload naming no tenant (an older writer's '',
    the old flag's 'on', several tenants' '*', one unknown) wakes it; its write ends it.
    """
    wait_until("the followers to wait", lambda: listening(schema) and len(reads) == 3)
    wait_until("each follower's first read", lambda: all(n == 1 for n in reads.values()))
    for _ in range(20):
        write("a")
    wait_until("the follower of a to see a's writes", lambda: _appended(got["a"]) == 20)
    wait_until("the follower of every tenant too", lambda: _appended(got[None]) == 20)
    before = reads[None]
    _notify(schema, "t:a")
    wait_until("the follower of every tenant to read again", lambda: reads[None] > before)
    assert reads[ODD] == 1  # never woken by a's writes
    for n, payload in enumerate(["", "on", "*", "?"], start=2):  # older writers, several, unknown
        _notify(schema, payload)
        wait_until(f"{payload!r} to wake {ODD!r}'s follower", lambda: reads[ODD] == n)  # noqa: B023
    write(ODD)
    wait_until("the follower of ODD to see its write", lambda: len(got[ODD]) == 1)


def _check_got(got: dict[str | None, list[tuple[str, str]]]) -> None:
    """Each follower saw its scope's events, in order, and nothing else."""
    assert [t for t, _ in got[ODD]] == [ODD]
    assert {t for t, _ in got["a"]} == {"a"} and _appended(got["a"]) == 20
    assert got[None] == got["a"] + got[ODD]


def test_a_tenant_follower_sleeps_through_other_tenants_writes(schema: str) -> None:
    """Sync store: see ``_check_wakes``."""
    got: dict[str | None, list[tuple[str, str]]] = {ODD: [], "a": [], None: []}
    with threadkeep.open(url_of(schema)) as store:
        conv = {t: store.start(contact_id="c", tenant=t) for t in (ODD, "a")}
        last = [e.id for e in store.events(timeout=0)][-1]
        reads = _count_reads(store._backend)

        def follow(tenant: str | None) -> None:
            for event in store.events(tenant=tenant, after=last, timeout=60):
                got[tenant].append((event.tenant, event.kind))
                if _done(tenant, got[tenant]):
                    return

        threads = [threading.Thread(target=follow, args=(t,)) for t in (ODD, "a", None)]
        for t in threads:
            t.start()
        _check_wakes(schema, reads, lambda t: store.append(conv[t].id, "user", "hi"), got)
        for t in threads:
            t.join(60)
    _check_got(got)


def test_a_tenant_follower_sleeps_through_other_tenants_writes_async(schema: str) -> None:
    """Async store: see ``_check_wakes`` (the writes from a thread of their own)."""
    got: dict[str | None, list[tuple[str, str]]] = {ODD: [], "a": [], None: []}
    writer = threadkeep.open(url_of(schema))

    async def main() -> None:
        async with threadkeep.open_async(url_of(schema)) as store:
            conv = {t: await store.start(contact_id="c", tenant=t) for t in (ODD, "a")}
            last = [e.id async for e in store.events(timeout=0)][-1]
            reads = _count_reads(store._backend)

            async def follow(tenant: str | None) -> None:
                async for event in store.events(tenant=tenant, after=last, timeout=60):
                    got[tenant].append((event.tenant, event.kind))
                    if _done(tenant, got[tenant]):
                        return

            tasks = [asyncio.create_task(follow(t)) for t in (ODD, "a", None)]
            await asyncio.to_thread(
                _check_wakes,
                schema,
                reads,
                lambda t: writer.append(conv[t].id, "user", "hi"),
                got,
            )
            await asyncio.wait_for(asyncio.gather(*tasks), 60)

    try:
        asyncio.run(main())
    finally:
        writer.close()
    _check_got(got)


@pytest.fixture
def notes(schema: str) -> Iterator[Callable[[], list[str]]]:
    """The payloads the store's channel received so far (a LISTEN session of the test's)."""
    with connect(schema, autocommit=True) as listener:
        listener.execute(f"LISTEN {_channel(schema)}")

        def received() -> list[str]:
            return [n.payload for n in listener.notifies(timeout=0.5, stop_after=1)]

        yield received


def test_the_payload_names_the_writes_tenant(schema: str, notes: Any) -> None:
    """One tenant's write (any characters) sends ``t:<tenant>``; a transaction logging two
    tenants' events sends ``*``; the flag and the payload are cleared after each NOTIFY."""
    with threadkeep.open(url_of(schema)) as store:
        conv = store.start(contact_id="c", tenant=ODD)
        assert notes() == [f"t:{ODD}"]
        store.append(conv.id, "user", "hi")
        assert notes() == [f"t:{ODD}"]
    channel = _channel(schema)
    with connect(schema, autocommit=True) as conn:
        with conn.transaction():
            for n, tenant in enumerate(["a", "b"]):
                event = {"kind": "k", "tenant": tenant, "cid": "x", "data": "{}", "at": 1}
                conn.execute(EMIT, {**event, "keep": 10**6, "n": n})
        conn.execute(NOTIFY, {"chan": channel})
        assert notes() == ["*"]
        conn.execute(NOTIFY, {"chan": channel})  # nothing logged since: no notification
        assert notes() == []


def test_resume_notifies_only_when_it_created_the_conversation(schema: str, notes: Any) -> None:
    """resume() that creates the conversation wakes its tenant's followers (after its commit,
    a round trip of its own); one that finds the open conversation logged nothing and sends
    no NOTIFY at all, sync and async."""
    with threadkeep.open(url_of(schema)) as store:
        created = store.resume("c", tenant=ODD)
        assert notes() == [f"t:{ODD}"]
        assert store.resume("c", tenant=ODD).id == created.id
        assert notes() == []
    sent: list[str] = []

    async def main() -> None:
        astore = await threadkeep.open_async(url_of(schema))
        try:
            await astore.resume("d", tenant="a")
            sent.extend(notes())
            await astore.resume("d", tenant="a")
            sent.extend(notes())
        finally:
            await astore.aclose()

    asyncio.run(main())
    assert sent == ["t:a"]


def test_a_version_10_writer_still_wakes_everyone_on_a_schema_at_11(
    schema: str, notes: Any
) -> None:
    """During a rolling upgrade an older writer's NOTIFY (it tests the flag, sends '') still
    fires after a write on the upgraded schema, and a schema upgraded from 10 sends payloads."""
    with connect(schema, autocommit=True) as conn:
        schema_at_version(conn, schema, 10)
    with threadkeep.open(url_of(schema)) as store:  # migrates to 11 and 12
        conv = store.start(contact_id="c", tenant="a")
        assert notes() == ["t:a"]
    channel = _channel(schema)
    with connect(schema, autocommit=True) as conn:
        with conn.transaction():
            event = {"kind": "k", "tenant": "a", "cid": conv.id, "data": "{}", "at": 1}
            conn.execute(EMIT, {**event, "keep": 10**6, "n": 0})
        conn.execute(OLD_NOTIFY, {"chan": channel})
        assert notes() == [""]
