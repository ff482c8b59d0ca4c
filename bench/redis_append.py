"""Redis: an append's cost (the harness's W1 append), counted on the client and on the server.

Run: ``python -m bench.redis_append [--mode time|calls|callgrind|server|server-callgrind]
[-n N] [--op append|read] [--raw]``. A private ``redis-server`` (loopback, a free port,
nothing persisted; ``--redis-server`` names the binary) holds a store (``prefix=bench``) with
one conversation resumed as the peer harness's adapter does (``resume("c1",
tenant="bench")``), after another conversation made the event log full (10,000 events, the
default ``events_kept``: the harness's W1 makes 20,000); it gets 200 messages of 200 bytes
(no caller key, as W1 appends), then
200 warm-up calls of ``--op`` (``append``: ``append(cid, role, 200 bytes)``; ``read``:
``messages(cid, last=20)``). ``--raw``: the floor instead, the peer harness's ``raw-redis``
code on a client of its own (a ``MULTI`` pipeline of ``RPUSH`` of the JSON message, ``LTRIM``,
``EXPIRE``; ``LRANGE -20 -1`` and ``json.loads`` for a read).

Modes, each over ``n`` calls after the warm-up:

- ``time``: wall p50 µs and client CPU µs per call (``process_time``); noisy, alternate runs;
- ``calls``: Python function calls per call (cProfile);
- ``callgrind``: ``math.gcd``, ``n`` calls, ``math.lcm``, for ``valgrind --tool=callgrind
  --zero-before=math_gcd --dump-before=math_lcm`` (the second dump's total over ``n`` is the
  client instructions per call);
- ``server``: the commands the server ran per call (``INFO commandstats`` after ``CONFIG
  RESETSTAT``: every command a script runs counts there too), and its µs per ``EVALSHA``
  (noisy; ``usec_per_call``);
- ``server-callgrind``: the server under ``valgrind --tool=callgrind --instr-atstart=no``
  (``--hz 1``), instrumentation on around the ``n`` calls only (``callgrind_control``):
  server instructions per call (deterministic).

One JSON line per run. Run with ``PYTHONPATH`` at another checkout's ``src`` to compare.
"""

from __future__ import annotations

import argparse
import cProfile
import glob
import json
import math
import os
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import redis

import threadkeep

#: The harness's message size (``Params.msg_bytes``) and its raw adapter's list cap and TTL.
MSG_BYTES = 200
RAW_CAP = 100_000
RAW_TTL_S = 86_400


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _content(i: int) -> str:
    head = f"[c1:{i}] "
    return head + ("word " * MSG_BYTES)[: MSG_BYTES - len(head)]


class _Server:
    """A private redis-server (optionally under callgrind, instrumentation off)."""

    def __init__(self, binary: str, directory: str, callgrind: bool) -> None:
        self.port = _free_port()
        self.directory = directory
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", directory]
        command += ["--save", "", "--appendonly", "no"]
        if callgrind:
            command = [
                "valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={directory}/callgrind.%p", *command, "--hz", "1",
            ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.client = redis.Redis(port=self.port, decode_responses=True)
        deadline = time.monotonic() + (60 if callgrind else 10)
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.process.pid)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(60)


def _store_call(url: str, op: str) -> tuple[Callable[[], object], Callable[[], None]]:
    store = threadkeep.open(url)
    # the log made full first: 10,000 events (the default events_kept) in another conversation
    other = store.resume("c0", tenant="bench").id
    for _ in range(10):
        store.append_many(other, [("user", "x")] * 1000)
    cid = store.resume("c1", tenant="bench").id
    for i in range(200):
        store.append(cid, "user" if i % 2 == 0 else "assistant", _content(i))
    if op == "read":
        return (lambda: store.messages(cid, last=20)), store.close
    counter = iter(range(200, 10**9))

    def append() -> object:
        i = next(counter)
        return store.append(cid, "user" if i % 2 == 0 else "assistant", _content(i))

    return append, store.close


def _raw_call(port: int, op: str) -> tuple[Callable[[], object], Callable[[], None]]:
    """The peer harness's raw-redis adapter (redis-py with hiredis, its own client)."""
    r = redis.Redis(port=port)
    key = "benchraw:m:c1"

    def append_many(msgs: list[tuple[str, str]]) -> None:
        p = r.pipeline(transaction=True)
        p.rpush(key, *[json.dumps({"role": role, "content": c}) for role, c in msgs])
        p.ltrim(key, -RAW_CAP, -1)
        p.expire(key, RAW_TTL_S)
        p.execute()

    for i in range(200):
        append_many([("user" if i % 2 == 0 else "assistant", _content(i))])
    if op == "read":

        def read_last() -> object:
            out = []
            for raw in r.lrange(key, -20, -1):
                d = json.loads(raw)
                out.append((d["role"], d["content"]))
            return out

        return read_last, r.close
    counter = iter(range(200, 10**9))

    def append() -> object:
        i = next(counter)
        append_many([("user" if i % 2 == 0 else "assistant", _content(i))])
        return None

    return append, r.close


def _measure(
    call: Callable[[], object], mode: str, n: int, server: _Server, keep: str | None
) -> dict[str, Any]:
    for _ in range(200):
        call()
    if mode == "time":
        clock, lat = time.perf_counter_ns, []
        cpu = time.process_time()
        for _ in range(n):
            start = clock()
            call()
            lat.append(clock() - start)
        cpu = time.process_time() - cpu
        return {
            "p50_us": round(statistics.median(lat) / 1000, 1),
            "client_cpu_us": round(cpu / n * 1e6, 1),
            "load": round(os.getloadavg()[0], 2),
        }
    if mode == "calls":
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(n):
            call()
        profile.disable()
        return {"python_calls": round(pstats.Stats(profile).total_calls / n, 1)}  # type: ignore[attr-defined]
    if mode == "callgrind":
        math.gcd(1, 1)
        for _ in range(n):
            call()
        math.lcm(1, 1)
        return {}
    if mode == "server":
        server.client.config_resetstat()
        for _ in range(n):
            call()
        stats = server.client.info("commandstats")
        calls = {
            k.removeprefix("cmdstat_"): v["calls"]
            for k, v in stats.items()
            if k != "cmdstat_config|resetstat"
        }
        usec = {k.removeprefix("cmdstat_"): v["usec_per_call"] for k, v in stats.items()}
        top = "evalsha" if "evalsha" in calls else "exec" if "exec" in calls else None
        return {
            "commands_per_call": round(sum(calls.values()) / n, 2),
            "commands": {k: round(v / n, 3) for k, v in sorted(calls.items())},
            "server_us_per_call": usec.get(top) if top else None,
        }
    # server-callgrind: instrumentation on around the n calls only
    server.control("-i", "on")
    server.control("-z")
    for _ in range(n):
        call()
    server.control("-d")
    server.control("-i", "off")
    return {"server_instructions_per_call": round(_dump_total(server.directory, keep) / n)}


def _dump_total(directory: str, keep: str | None) -> int:
    """The event total of the newest callgrind dump in ``directory`` (copied to ``keep``)."""
    newest = max(glob.glob(f"{directory}/callgrind.*"), key=os.path.getmtime)
    if keep:
        shutil.copyfile(newest, keep)
    with open(newest, encoding="utf-8") as dump:
        for line in dump:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {newest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    modes = ["time", "calls", "callgrind", "server", "server-callgrind"]
    parser.add_argument("--mode", choices=modes, default="time")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--op", choices=["append", "read"], default="append")
    parser.add_argument("--raw", action="store_true", help="the peer harness's raw-redis code")
    parser.add_argument("--keep", help="server-callgrind: copy the dump to this file")
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tk-redis-append-") as directory:
        server = _Server(args.redis_server, directory, args.mode == "server-callgrind")
        try:
            if args.raw:
                call, close = _raw_call(server.port, args.op)
            else:
                url = f"redis://127.0.0.1:{server.port}/0?prefix=bench"
                call, close = _store_call(url, args.op)
            try:
                report = _measure(call, args.mode, args.n, server, args.keep)
            finally:
                close()
        finally:
            server.stop()
    who = "raw-redis" if args.raw else "threadkeep"
    sys.stdout.write(json.dumps({"op": args.op, "who": who, "n": args.n, **report}) + "\n")


if __name__ == "__main__":
    main()
