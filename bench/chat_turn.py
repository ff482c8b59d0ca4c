"""One chat turn's cost, in-process: store operations, Python function calls and CPU per turn.

    python -m bench.chat_turn <store URL> [--turns 200] [--mode conv|keyed]

The service's ASGI app (echo bot, one API key) is called directly, without a server or an HTTP
client, so only the app's own work is counted: ``conv`` posts turns to one given conversation
without a key (the overhead phase of ``bench.load``), ``keyed`` posts a contact's turns with an
``Idempotency-Key`` (its load phase; 50 contacts in turn). After 50 warm-up turns it counts the
store operations by name (through the service's ``TimedBackend``) and the function calls that
cProfile sees in the event loop's thread (deterministic; a SQLite store's statements run in a
worker thread and are not among them), and times the turns' CPU (``process_time``; noisy on a
shared machine). Use a store of its own: the ``keyed`` turns leave facts behind.
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
    parser.add_argument("--mode", choices=("conv", "keyed"), default="conv")
    args = parser.parse_args(argv)
    counts: collections.Counter[str] = collections.Counter()
    execute = observe.TimedBackend.execute

    async def counting(self: observe.TimedBackend, op: Any) -> Any:
        counts[op.name] += 1
        return await execute(self, op)

    observe.TimedBackend.execute = counting  # type: ignore[method-assign]
    settings = ServiceSettings(
        store=args.url, bot="echo", api_keys=f"bench:{KEY}", rate_limit=0, log_level="WARNING"
    )
    app = create_app(settings)

    async def post(body: dict[str, Any], key: str | None = None) -> bytes:
        payload = json.dumps(body).encode()
        headers = [(b"host", b"bench"), (b"authorization", f"Bearer {KEY}".encode()),
                   (b"content-type", b"application/json"),
                   (b"content-length", str(len(payload)).encode())]  # fmt: skip
        if key is not None:
            headers.append((b"idempotency-key", key.encode()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/v1/chat",
                 "raw_path": b"/v1/chat", "query_string": b"", "root_path": "",
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
        if status != 200:
            raise RuntimeError(f"chat failed: {status} {body_out[:200]!r}")
        return body_out

    async def run() -> dict[str, Any]:
        async with app.router.lifespan_context(app):
            first = json.loads(await post({"message": "hi", "contact_id": "c0"}))
            conversation = first["conversation_id"]

            async def turn(i: int) -> None:
                if args.mode == "conv":
                    await post({"message": f"m{i}", "conversation_id": conversation})
                else:
                    body = {"message": f"k{i}", "contact_id": f"c{i % 50}"}
                    await post(body, key=f"key-{os.getpid()}-{i}")

            for i in range(50):
                await turn(i)
            counts.clear()
            profile = cProfile.Profile()
            cpu0 = time.process_time()
            profile.enable()
            for i in range(50, 50 + args.turns):
                await turn(i)
            profile.disable()
            cpu = time.process_time() - cpu0
            calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
            n = args.turns
            return {
                "mode": args.mode,
                "turns": n,
                "store_ops_per_turn": round(sum(counts.values()) / n, 2),
                "store_ops": {k: round(v / n, 2) for k, v in sorted(counts.items())},
                "python_calls_per_turn": round(calls / n),
                "cpu_us_per_turn_profiled": round(cpu / n * 1e6),
            }

    sys.stdout.write(json.dumps(asyncio.run(run())) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
