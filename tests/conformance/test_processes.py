"""Many real processes on one store: concurrent appends, concurrent resume, a SIGKILLed writer.

These run on every backend that several processes can share (``shared_store_url``); the
children are spawned interpreters that open the store by URL, like separate workers would.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import Counter, defaultdict
from multiprocessing.connection import Connection
from typing import Any
from uuid import uuid4

import pytest

import threadkeep

pytestmark = pytest.mark.slow

PROCESSES = 4
APPENDS_PER_PROCESS = 500
CONVERSATIONS = 10
CONTACTS = 20

_SPAWN = multiprocessing.get_context("spawn")


def _append_many(url: str, ids: list[str], worker: int, barrier: Any, out: Connection) -> None:
    """Append APPENDS_PER_PROCESS messages round-robin over ``ids``; send back what was acked."""
    acked: list[tuple[str, int, str]] = []
    with threadkeep.open(url) as store:
        barrier.wait(timeout=60)
        for n in range(APPENDS_PER_PROCESS):
            conv_id = ids[n % len(ids)]
            msg = store.append(conv_id, "user", f"w{worker}-n{n}")
            acked.append((conv_id, msg.seq, msg.content))
    out.send(acked)
    out.close()


def _resume_all(url: str, tenant: str, contacts: list[str], barrier: Any, out: Connection) -> None:
    """Resume every contact as soon as all processes are ready; send back the ids got."""
    with threadkeep.open(url) as store:
        barrier.wait(timeout=60)
        out.send([store.resume(c, tenant=tenant).id for c in contacts])
    out.close()


def _append_until_killed(url: str, conv_id: str, out: Connection) -> None:
    """Append forever, reporting each acknowledged message's seq right after it returns."""
    with threadkeep.open(url) as store:
        n = 0
        while True:
            msg = store.append(conv_id, "user", f"n{n}")
            out.send((msg.seq, msg.content))
            n += 1


def _all_messages(store: threadkeep.Store, conv_id: str) -> list[threadkeep.Message]:
    """Read a whole history page by page (a page holds at most 1000)."""
    msgs: list[threadkeep.Message] = []
    while page := store.messages(conv_id, after=msgs[-1].seq if msgs else 0, limit=1000):
        msgs.extend(page)
    return msgs


def _run(target: Any, args_for: list[tuple[Any, ...]]) -> list[Any]:
    """Start one process per args tuple (each gets a barrier and a pipe); return what each sent."""
    barrier = _SPAWN.Barrier(len(args_for))
    pipes = [_SPAWN.Pipe(duplex=False) for _ in args_for]
    procs = [
        _SPAWN.Process(target=target, args=(*args, barrier, send))
        for args, (_, send) in zip(args_for, pipes, strict=True)
    ]
    for p in procs:
        p.start()
    results = []
    for p, (recv, send) in zip(procs, pipes, strict=True):
        send.close()
        assert recv.poll(100), "a child process sent nothing within 100 s"
        results.append(recv.recv())
        p.join(30)
        assert p.exitcode == 0, f"a child process exited with {p.exitcode}"
    return results


def test_concurrent_appends_from_many_processes(shared_store_url: str) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    with threadkeep.open(shared_store_url) as store:
        ids = [store.start(f"c-{uuid4()}", tenant=tenant).id for _ in range(CONVERSATIONS)]

    acked = _run(_append_many, [(shared_store_url, ids, w) for w in range(PROCESSES)])

    acked_by_conv: dict[str, dict[int, str]] = defaultdict(dict)
    for per_worker in acked:
        for conv_id, seq, content in per_worker:
            assert seq not in acked_by_conv[conv_id], f"seq {seq} of {conv_id} acked twice"
            acked_by_conv[conv_id][seq] = content
    with threadkeep.open(shared_store_url) as store:
        total = 0
        for conv_id in ids:
            msgs = _all_messages(store, conv_id)
            seqs = [m.seq for m in msgs]
            assert seqs == list(range(1, len(msgs) + 1)), "seq has gaps or is out of order"
            # What each append was told is what is stored: nothing lost, nothing duplicated.
            assert {m.seq: m.content for m in msgs} == acked_by_conv[conv_id]
            contents = Counter(m.content for m in msgs)
            assert max(contents.values()) == 1
            # Each worker appended in its own order, so its messages keep that order in seq.
            for worker in range(PROCESSES):
                mine = [
                    int(m.content.split("-n")[1])
                    for m in msgs
                    if m.content.startswith(f"w{worker}-")
                ]
                assert mine == sorted(mine)
            assert store.get(conv_id, tenant=tenant).message_count == len(msgs)
            total += len(msgs)
    assert total == PROCESSES * APPENDS_PER_PROCESS


def test_concurrent_resume_makes_one_conversation_per_contact(shared_store_url: str) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    contacts = [f"c-{uuid4()}" for _ in range(CONTACTS)]
    # Each process takes the contacts in another order, so the races are many and varied.
    orders = [contacts[i:] + contacts[:i] for i in range(0, PROCESSES * 5, 5)]
    got = _run(_resume_all, [(shared_store_url, tenant, order) for order in orders])

    by_contact: dict[str, set[str]] = defaultdict(set)
    for order, ids in zip(orders, got, strict=True):
        for c, conv_id in zip(order, ids, strict=True):
            by_contact[c].add(conv_id)
    assert all(len(v) == 1 for v in by_contact.values()), "a contact got two conversations"
    with threadkeep.open(shared_store_url) as store:
        page = store.list(tenant=tenant, limit=100)
        assert len(page.items) == CONTACTS
        assert {c.contact_id for c in page.items} == set(contacts)


def test_sigkilled_writer_loses_no_acknowledged_append(shared_store_url: str) -> None:
    with threadkeep.open(shared_store_url) as store:
        conv_id = store.start(f"c-{uuid4()}").id

    recv, send = _SPAWN.Pipe(duplex=False)
    proc = _SPAWN.Process(target=_append_until_killed, args=(shared_store_url, conv_id, send))
    proc.start()
    send.close()
    acked: dict[int, str] = {}
    try:
        while len(acked) < 200:
            assert recv.poll(60), "the writer stopped reporting appends"
            seq, content = recv.recv()
            acked[seq] = content
    finally:
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    # Whatever was in flight when the writer died may or may not have landed; what it was told
    # is stored must be there, and the store must open and take appends afterwards.
    with threadkeep.open(shared_store_url) as store:
        stored = {m.seq: m.content for m in _all_messages(store, conv_id)}
        assert all(stored.get(seq) == content for seq, content in acked.items())
        assert sorted(stored) == list(range(1, len(stored) + 1))
        msg = store.append(conv_id, "user", "after the crash")
        assert msg.seq == len(stored) + 1


def _append_one_later(url: str, conv_id: str, barrier: Any, out: Connection) -> None:
    """Wait until the parent follows the events, then append one message from this process."""
    with threadkeep.open(url) as store:
        barrier.wait(timeout=60)
        out.send(store.append(conv_id, "user", "from another process").seq)
    out.close()


def test_events_reach_a_follower_in_another_process(shared_store_url: str) -> None:
    tenant = f"t-{uuid4().hex[:8]}"
    with threadkeep.open(shared_store_url) as store:
        conv_id = store.start(f"c-{uuid4()}", tenant=tenant).id
        last = list(store.events(tenant=tenant))[-1].id
        barrier = _SPAWN.Barrier(2)
        recv, send = _SPAWN.Pipe(duplex=False)
        proc = _SPAWN.Process(
            target=_append_one_later, args=(shared_store_url, conv_id, barrier, send)
        )
        proc.start()
        send.close()
        barrier.wait(timeout=60)
        got = next(iter(store.events(tenant=tenant, after=last, timeout=30)), None)
        assert recv.recv() == 1
        proc.join(30)
    assert got is not None, "the follower saw no event within 30 s"
    assert (got.kind, got.conversation_id) == ("message.appended", conv_id)
