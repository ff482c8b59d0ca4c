"""One chat turn's cost, in-process: store operations, Python function calls and CPU per turn.

    python -m bench.chat_turn <store URL> [--turns 200] [--mode conv|keyed|append|pair]
        [--layers] [--top N] [--dump FILE]

The service's ASGI app (echo bot, one API key) is called directly, without a server or an HTTP
client, so only the app's own work is counted: ``conv`` posts turns to one given conversation
without a key (the overhead phase of ``bench.load``), ``keyed`` posts a contact's turns with an
``Idempotency-Key`` (its load phase; 50 contacts in turn), ``append`` posts keyed appends to one
conversation (``POST /v1/conversations/{id}/messages``), ``pair`` does what one session of the
load does: a keyed chat turn, then a keyed append (a "turn" here is that pair). After 50
warm-up turns it counts the
store operations by name (through the service's ``TimedBackend``) and the function calls that
cProfile sees in the event loop's thread (deterministic; a SQLite store's statements run in a
worker thread and are not among them), and times the turns' CPU (``process_time``; noisy on a
shared machine). On PostgreSQL it also counts what the backend's ``_wire.Wire`` sends per
turn: statements (``pg_statements_per_turn``, BEGIN, COMMIT and NOTIFY included), round trips
(``pg_round_trips_per_turn``) and the transactions the server commits
(``pg_commits_per_turn``, as ``pg_stat_database.xact_commit`` counts them). Use a store of
its own: the ``keyed`` turns leave facts behind.

``--layers`` splits the profile's calls and own time by where the code lives (ours: the
service, the bot, the store core, the backend; theirs: the driver, asyncio, Starlette/FastAPI,
pydantic, prometheus_client, the rest), ``--top N`` lists the N functions of most own time,
``--dump FILE`` writes the profile for ``pstats``/``snakeviz``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import json
import os
import pstats
import sys
import time
from collections.abc import MutableMapping
from typing import Any

from threadkeep.service import observe
from threadkeep.service.app import create_app
from threadkeep.service.settings import ServiceSettings

KEY = "turn-key"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--mode", choices=("conv", "keyed", "append", "pair"), default="conv")
    parser.add_argument("--layers", action="store_true", help="calls and own time by layer")
    parser.add_argument("--top", type=int, default=0, help="the N functions of most own time")
    parser.add_argument("--dump", help="write the profile to this file")
    parser.add_argument(
        "--plain", action="store_true", help="no profiler: CPU per turn without its overhead"
    )
    args = parser.parse_args(argv)
    counts: collections.Counter[str] = collections.Counter()
    execute = observe.TimedBackend.execute

    async def counting(self: observe.TimedBackend, op: Any) -> Any:
        counts[op.name] += 1
        return await execute(self, op)

    observe.TimedBackend.execute = counting  # type: ignore[method-assign]
    statements = _count_statements() if args.url.startswith("postgresql") else None
    settings = ServiceSettings(
        store=args.url, bot="echo", api_keys=f"bench:{KEY}", rate_limit=0, log_level="WARNING"
    )
    app = create_app(settings)

    async def post(
        body: dict[str, Any], key: str | None = None, path: str = "/v1/chat", expect: int = 200
    ) -> bytes:
        payload = json.dumps(body).encode()
        headers = [(b"host", b"bench"), (b"authorization", f"Bearer {KEY}".encode()),
                   (b"content-type", b"application/json"),
                   (b"content-length", str(len(payload)).encode())]  # fmt: skip
        if key is not None:
            headers.append((b"idempotency-key", key.encode()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": path,
                 "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
                 "state": {}}  # fmt: skip
        sent: list[MutableMapping[str, Any]] = []
        given = False

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await asyncio.Event().wait()  # never disconnects
            raise AssertionError("unreachable")

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        body_out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        if status != expect:
            raise RuntimeError(f"{path} failed: {status} {body_out[:200]!r}")
        return body_out

    async def run() -> dict[str, Any]:
        async with app.router.lifespan_context(app):
            first = json.loads(await post({"message": "hi", "contact_id": "c0"}))
            conversation = first["conversation_id"]

            appended = f"/v1/conversations/{conversation}/messages"

            async def turn(i: int) -> None:
                key = f"key-{os.getpid()}-{i}"
                if args.mode == "conv":
                    await post({"message": f"m{i}", "conversation_id": conversation})
                elif args.mode == "append":
                    await post({"role": "user", "content": f"a{i}"}, key, appended, 201)
                else:
                    body = {"message": f"k{i}", "contact_id": f"c{i % 50}"}
                    answer = json.loads(await post(body, key=key))
                    if args.mode == "pair":  # the load's session: the append goes after it
                        path = f"/v1/conversations/{answer['conversation_id']}/messages"
                        await post({"role": "user", "content": key}, f"{key}-a", path, 201)

            for i in range(50):
                await turn(i)
            counts.clear()
            if statements is not None:
                statements.clear()
            if args.plain:
                cpu0 = time.process_time()
                for i in range(50, 50 + args.turns):
                    await turn(i)
                cpu = time.process_time() - cpu0
                n = args.turns
                return {
                    "mode": args.mode,
                    "turns": n,
                    "store_ops_per_turn": round(sum(counts.values()) / n, 2),
                    **_statements_per_turn(statements, n),
                    "cpu_us_per_turn": round(cpu / n * 1e6),
                }
            profile = cProfile.Profile()
            cpu0 = time.process_time()
            profile.enable()
            for i in range(50, 50 + args.turns):
                await turn(i)
            profile.disable()
            cpu = time.process_time() - cpu0
            stats = pstats.Stats(profile)
            calls = stats.total_calls  # type: ignore[attr-defined]
            n = args.turns
            if args.dump:
                stats.dump_stats(args.dump)
            extra: dict[str, Any] = {}
            if args.layers:
                extra["layers"] = layers(stats, n)
            if args.top:
                extra["top"] = top(stats, n, args.top)
            return {
                "mode": args.mode,
                "turns": n,
                "store_ops_per_turn": round(sum(counts.values()) / n, 2),
                "store_ops": {k: round(v / n, 2) for k, v in sorted(counts.items())},
                **_statements_per_turn(statements, n),
                "python_calls_per_turn": round(calls / n),
                "cpu_us_per_turn_profiled": round(cpu / n * 1e6),
                **extra,
            }

    sys.stdout.write(json.dumps(asyncio.run(run())) + "\n")
    return 0


def _count_statements() -> collections.Counter[str]:
    """Count what the PostgreSQL backend's ``Wire`` sends: statements, round trips, commits.

    Statements by their first word (BEGIN, COMMIT and the NOTIFY's SELECT included), each
    ``exchange`` as a round trip (``~round trips``), and the transactions the server commits
    (``~commits``), as ``pg_stat_database.xact_commit`` counts them: each BEGIN, and each
    Sync that ends statements sent outside BEGIN … COMMIT (an implicit transaction: a write
    of one exchange, a statement sent alone in autocommit, the NOTIFY after a commit); a
    statement sent alone by the simple protocol is one too.
    """
    from threadkeep.backends.postgres._wire import Wire

    statements: collections.Counter[str] = collections.Counter()
    send, send_alone, sync = Wire.send, Wire.send_alone, Wire.sync
    exchange = Wire.exchange_async
    #: per wire: [inside BEGIN … COMMIT, statements outside it since the last Sync]
    state: dict[int, list[bool]] = collections.defaultdict(lambda: [False, False])

    def first_word(query: str) -> str:
        words = query.split(None, 1)
        return words[0].strip("('\"").upper() if words else "?"

    def counting(self: Wire, query: str, params: Any, binary: bool) -> int:
        statements[first_word(query)] += 1
        framing = state[id(self)]
        if query == "BEGIN":
            statements["~commits"] += 1
            framing[0] = True
        elif query == "COMMIT":
            framing[0] = False
        elif not framing[0]:
            framing[1] = True
        return send(self, query, params, binary)

    def counting_sync(self: Wire) -> None:
        framing = state[id(self)]
        if framing[1]:
            statements["~commits"] += 1
            framing[1] = False
        sync(self)

    def counting_alone(self: Wire, query: str, params: Any) -> int:
        if not params:  # with parameters it goes through ``send`` and ``sync``: counted there
            statements[first_word(query)] += 1
            statements["~commits"] += 1
        return send_alone(self, query, params)

    async def counting_exchange(self: Wire) -> Any:
        statements["~round trips"] += 1
        return await exchange(self)

    Wire.send = counting  # type: ignore[method-assign]
    Wire.sync = counting_sync  # type: ignore[method-assign]
    Wire.send_alone = counting_alone  # type: ignore[method-assign]
    Wire.exchange_async = counting_exchange  # type: ignore[method-assign]
    return statements


def _statements_per_turn(statements: collections.Counter[str] | None, n: int) -> dict[str, Any]:
    if statements is None:
        return {}
    sent = sum(v for k, v in statements.items() if not k.startswith("~"))
    return {
        "pg_statements_per_turn": round(sent / n, 2),
        "pg_round_trips_per_turn": round(statements["~round trips"] / n, 2),
        "pg_commits_per_turn": round(statements["~commits"] / n, 2),
        "pg_statements": {
            k: round(v / n, 2) for k, v in sorted(statements.items()) if not k.startswith("~")
        },
    }


#: Where a function's code lives, by a part of its file's path: first match wins.
LAYERS = (
    ("service", "threadkeep/service/"),
    ("bot", "threadkeep/bot/"),
    ("backend", "threadkeep/backends/"),
    ("core", "threadkeep/"),  # the store, models, rules, serde
    ("redis-py", "/redis/"),
    ("psycopg", "/psycopg"),
    ("asyncio", "/asyncio/"),
    ("starlette+fastapi", "/starlette/"),
    ("starlette+fastapi", "/fastapi/"),
    ("pydantic", "/pydantic"),
    ("prometheus", "/prometheus_client/"),
    ("json", "/json/"),
)


def _layer(filename: str) -> str:
    if "/bench/" in filename:
        return "bench (the caller)"
    return next((name for name, part in LAYERS if part in filename), "other Python")


def layers(stats: pstats.Stats, n: int) -> dict[str, dict[str, float]]:
    """Calls and own time (µs, with the profiler's overhead) per turn, by layer.

    A builtin (C) function counts in the layer of its callers, shared as their calls of it.
    """
    by: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for (filename, _, _), (_, calls, own, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if filename != "~" or not callers:
            shares = {_layer(filename): 1.0}
        else:
            total = sum(c[1] for c in callers.values()) or 1
            shares = collections.Counter()
            for (caller_file, _, _), c in callers.items():
                shares[_layer(caller_file)] += c[1] / total
        for name, share in shares.items():
            entry = by[name]
            entry[0] += calls * share
            entry[1] += own * share
    ordered = sorted(by.items(), key=lambda item: -item[1][1])
    return {k: {"calls": round(c / n, 1), "own_us": round(t / n * 1e6, 1)} for k, (c, t) in ordered}


def top(stats: pstats.Stats, n: int, count: int) -> list[str]:
    """The ``count`` functions of most own time: calls and own µs per turn, where."""
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:count]  # type: ignore[attr-defined]
    return [
        f"{calls / n:7.1f} calls {own / n * 1e6:8.1f} us  {pstats.func_std_string(func)}"
        for func, (_, calls, own, _, _) in rows
    ]


if __name__ == "__main__":
    sys.exit(main())
