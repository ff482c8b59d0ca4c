"""The peer harness's W4 through the public API, with its tail split by kind of call.

Run: ``python -m bench.w4_latency --url sqlite:////tmp/x/w4.db`` (a file of its own: removed
first) or ``--url "postgresql://postgres@127.0.0.1:5432/db?schema=bench_w4"`` (a schema of
its own: dropped first). ``--procs 4 --appends 500 --conversations 10 --rounds 1`` are the
harness's shape: ``--procs`` spawned processes, each opening its own store, appending to a
warm-up conversation, meeting at a barrier, then ``--appends`` appends round-robin over the
``--conversations`` contacts ``w4-c00`` …, each contact's conversation found with
``resume(contact, tenant="bench")`` on the process's first append to it and cached after
(the harness's ``ThreadkeepAdapter``). ``--separate`` gives each process contacts of its own,
so no two processes write one conversation (what is left is the machine, not the row lock).
Before each round the contacts' conversations are resumed and deleted, as the harness's
``clear`` does, so the workers' resumes race to create them.

Prints, per round, p50 / p99 / max (ms) of all timed calls, of the first appends (``resume``
+ ``append``) and of the rest, the CPU of a timed call in the workers (and, for PostgreSQL on
this machine, in their server sessions, read from ``/proc``), and then checks what was
stored: every acknowledged message once, each process's messages in its order, ``seq`` 1..n
per conversation (any failure exits 1). Run the same command with ``PYTHONPATH`` at another
checkout's ``src`` to compare, interleaved.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import statistics
import sys
import time
from typing import Any

import threadkeep

TENANT = "bench"


def _worker(
    url: str, idx: int, appends: int, contacts: list[str], barrier: Any, out: Any, done: Any
) -> None:
    timed: list[tuple[bool, int]] = []  # (first append of its conversation here, ns)
    acked: list[str] = []
    with threadkeep.open(url) as store:
        ids: dict[str, str] = {}
        warm = store.resume("w4-warm", tenant=TENANT)
        store.append(warm.id, "user", "warm")  # connect before the start line
        barrier.wait(timeout=60)
        cpu = time.process_time()
        pc = time.perf_counter_ns
        for i in range(appends):
            contact = contacts[i % len(contacts)]
            tag = f"w{idx}:{i}"
            began = pc()
            cid = ids.get(contact)
            first = cid is None
            if cid is None:
                cid = ids[contact] = store.resume(contact, tenant=TENANT).id
            store.append(cid, "user" if i % 2 == 0 else "assistant", f"[{tag}] message {i}")
            timed.append((first, pc() - began))
            acked.append(tag)
        out.put((timed, acked, time.process_time() - cpu))
        done.wait(timeout=300)  # the server's CPU is read before the store's sessions end


def _ms(values: list[int]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return f"n={len(ordered)} p50 {at(0.5):.2f} p99 {at(0.99):.2f} max {ordered[-1] / 1e6:.2f}"


def _fresh(url: str) -> None:
    if url.startswith("sqlite:"):
        path = url.split("sqlite:///", 1)[1].split("?", 1)[0]
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    elif "schema=" in url:
        import psycopg

        schema = url.split("schema=", 1)[1].split("&", 1)[0]
        dsn = url.split("?", 1)[0]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _check(store: threadkeep.Store, contacts: list[str], acked: list[str]) -> list[str]:
    problems: list[str] = []
    found: collections.Counter[str] = collections.Counter()
    for c in contacts:
        conv = store.resume(c, tenant=TENANT)
        msgs: list[threadkeep.Message] = []
        while page := store.messages(conv.id, after=msgs[-1].seq if msgs else 0, limit=1000):
            msgs += page  # every message, a page at a time (a call reads at most 1,000)
        if [m.seq for m in msgs] != list(range(1, len(msgs) + 1)):
            problems.append(f"{c}: seq not 1..{len(msgs)}")
        last: dict[str, int] = {}
        for m in msgs:
            tag = m.content[1 : m.content.index("]")]
            found[tag] += 1
            w, i = tag.split(":")
            if int(i) < last.get(w, -1):
                problems.append(f"{c}: {tag} out of order")
            last[w] = int(i)
    lost = set(acked) - set(found)
    dup = sum(v - 1 for v in found.values() if v > 1)
    if lost or dup or set(found) - set(acked):
        problems.append(
            f"lost {len(lost)}, duplicated {dup}, unacked {len(set(found) - set(acked))}"
        )
    return problems


def _server_cpu(url: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL session of the URL's database (same machine)."""
    if not url.startswith("postgresql"):
        return {}
    import psycopg

    dsn = url.split("?", 1)[0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
        ]
    tick = os.sysconf("SC_CLK_TCK")
    cpu = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # another machine, or the session ended
            continue
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    return cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--appends", type=int, default=500)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument(
        "--separate",
        action="store_true",
        help="each process its own --conversations contacts (no two write one conversation)",
    )
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    _fresh(args.url)
    ctx = multiprocessing.get_context("spawn")
    bad = False
    with threadkeep.open(args.url) as store:
        for r in range(args.rounds):
            names = [f"w4-c{i:02d}" for i in range(args.conversations)]
            contacts = [
                [f"{c}-w{w}" for c in names] if args.separate else names for w in range(args.procs)
            ]
            every = sorted({c for mine in contacts for c in mine})
            for c in ["w4-warm", *every]:
                store.delete(store.resume(c, tenant=TENANT).id)
            barrier, out, done = ctx.Barrier(args.procs + 1), ctx.Queue(), ctx.Event()
            procs = [
                ctx.Process(
                    target=_worker,
                    args=(args.url, i, args.appends, contacts[i], barrier, out, done),
                )
                for i in range(args.procs)
            ]
            for p in procs:
                p.start()
            barrier.wait(timeout=120)
            server_before = _server_cpu(args.url)
            results = [out.get(timeout=300) for _ in procs]
            server_after = _server_cpu(args.url)
            done.set()
            for p in procs:
                p.join(timeout=30)
            timed = [t for res in results for t in res[0]]
            acked = [a for res in results for a in res[1]]
            first = [ns for is_first, ns in timed if is_first]
            rest = [ns for is_first, ns in timed if not is_first]
            problems = _check(store, every, acked)
            bad = bad or bool(problems)
            load = os.getloadavg()[0]
            n = len(timed)
            cpu = f"client CPU {sum(res[2] for res in results) / n * 1e6:.0f} us/call"
            if server_before:
                spent = sum(server_after.get(p, t) - t for p, t in server_before.items())
                cpu += f", server CPU {spent / n * 1e6:.0f} us/call"
            print(
                f"round {r + 1} (load {load:.1f}): all {_ms([ns for _, ns in timed])}; "
                f"first (resume+append) {_ms(first)}; rest {_ms(rest)}; "
                f"mean {statistics.mean(ns for _, ns in timed) / 1e3:.0f} us; {cpu}; "
                + ("; ".join(problems) if problems else "nothing lost, duplicated or reordered")
            )
            sys.stdout.flush()
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
