"""Redis benchmark: the threadkeep Redis store beside raw redis-py doing the same atomic work
(the same commands in one MULTI/EXEC pipeline) and beside LangChain's RedisChatMessageHistory.

Run: `make bench` or `python -m bench.bench_redis [--url redis://127.0.0.1:6379/0] [-n 3000]`.
LangChain comes from the `bench` extra (`langchain-community`: `langchain-redis` needs the
RediSearch module, which a plain Redis server lacks). Every key made here is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import redis

import threadkeep
from bench._util import Result, compare, say, table

TEXT = "hello, I would like to sell my house on Elm street"
WINDOW = 20
LONG = 10_000
TTL_US = 7 * 86_400 * 1_000_000
IDLE_US = 30 * 60 * 1_000_000
PROCESSES = 4
PER_PROCESS = 500


def _now_us() -> int:
    return time.time_ns() // 1000


# ---- the three contenders -----------------------------------------------------------------


class StoreOps:
    """threadkeep's Redis store (one Lua script per append, one per window read)."""

    label = "threadkeep"

    def __init__(self, url: str, prefix: str) -> None:
        self.store = threadkeep.open(f"{url}?prefix={prefix}")

    def new(self) -> str:
        return self.store.start(f"bench-{uuid.uuid4().hex[:8]}", tenant="bench").id

    def append(self, cid: str, text: str = TEXT) -> None:
        self.store.append(cid, "user", text)

    def window(self, cid: str) -> list[dict[str, str]]:
        window: list[dict[str, str]] = self.store.context(cid)
        return window

    def contents(self, cid: str) -> list[str]:
        out: list[str] = []
        while page := self.store.messages(cid, after=len(out), limit=1000):
            out += [m.content for m in page]
        return out

    def close(self) -> None:
        self.store.close()


class RawOps:
    """Raw redis-py: the store's append and window read as one MULTI/EXEC pipeline each.

    The append sends the commands the store's script runs: read the record (HGETALL) and look
    up the internal retry key (HGET); seq and count; conversation fields; the message; the
    retry key and its queue; five index entries; TTLs on the six conversation keys and the
    three per-tenant/contact indexes; event number; event. Without a script it cannot use what
    it reads before writing, so its message carries no seq and nothing is checked. The window
    read is the script's HMGET + LRANGE.
    """

    label = "raw redis-py"

    def __init__(self, url: str, prefix: str) -> None:
        self.r = redis.Redis.from_url(url, decode_responses=True)
        self.base = prefix + "{" + prefix + "}:raw:"

    def new(self) -> str:
        cid = uuid.uuid4().hex
        now = _now_us()
        self.r.hset(
            self.base + "c:" + cid,
            mapping={"id": cid, "tn": "bench", "st": "active", "act": now, "seq": 0, "cnt": 0,
                     "exp": now + TTL_US, "win": WINDOW},
        )  # fmt: skip
        return cid

    def append(self, cid: str, text: str = TEXT) -> None:
        b, now = self.base, _now_us()
        expires = now + TTL_US
        body = f"user\n{now}\n\n{{}}\n{text}"  # the store's message encoding
        retry_key = "\t" + uuid.uuid4().hex
        pipe = self.r.pipeline(transaction=True)
        pipe.hgetall(b + "c:" + cid)
        pipe.hget(b + "i:" + cid, retry_key)
        pipe.hincrby(b + "c:" + cid, "seq", 1)
        pipe.hincrby(b + "c:" + cid, "cnt", 1)
        pipe.hset(b + "c:" + cid, mapping={"st": "active", "act": now, "exp": expires,
                                           "idl": now + IDLE_US})  # fmt: skip
        pipe.rpush(b + "m:" + cid, body)
        pipe.hset(b + "i:" + cid, retry_key, body)
        pipe.rpush(b + "rq:" + cid, retry_key)
        pipe.zadd(b + "t:bench", {cid: now})
        pipe.zadd(b + "ts:active:bench", {cid: now})
        pipe.zadd(b + "k:5:bench:" + cid, {cid: now})
        pipe.zadd(b + "exp", {cid: expires})
        pipe.zadd(b + "idle", {cid: now + IDLE_US})
        at = expires // 1000 + 3_600_000
        for part in ("c:", "m:", "i:", "iq:", "rq:", "s:"):
            pipe.pexpireat(b + part + cid, at)
        for index in ("t:bench", "ts:active:bench", "k:5:bench:" + cid):
            pipe.pexpireat(b + index, at + 86_400_000)
        pipe.incr(b + "evn")
        pipe.xadd(
            b + "ev",
            {"k": "message.appended", "t": "bench", "c": cid, "d": '{"seq":0}', "a": now},
            maxlen=10_000,
            approximate=True,
        )
        pipe.execute()

    def window(self, cid: str) -> list[dict[str, str]]:
        pipe = self.r.pipeline(transaction=True)
        pipe.hmget(self.base + "c:" + cid, "exp", "win")
        pipe.lrange(self.base + "m:" + cid, -WINDOW, -1)
        (expires, _), entries = pipe.execute()
        assert int(expires) > _now_us()
        split = (e.split("\n", 4) for e in entries)
        return [{"role": p[0], "content": p[4]} for p in split]

    def contents(self, cid: str) -> list[str]:
        entries = cast(list[str], self.r.lrange(self.base + "m:" + cid, 0, -1))
        return [e.split("\n", 4)[4] for e in entries]

    def close(self) -> None:
        self.r.close()


def _langchain() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # langchain-community announces its sunset on import
        from langchain_community.chat_message_histories import RedisChatMessageHistory
        from langchain_core.messages import HumanMessage
    return RedisChatMessageHistory, HumanMessage


class LangChainOps:
    """LangChain's RedisChatMessageHistory (LPUSH + EXPIRE; reads the whole list)."""

    label = "LangChain"

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix + ":lc:"
        self.history_class, self.message_class = _langchain()
        self.histories: dict[str, Any] = {}

    def _history(self, cid: str) -> Any:
        if cid not in self.histories:
            self.histories[cid] = self.history_class(
                cid, url=self.url, key_prefix=self.prefix, ttl=7 * 86_400
            )
        return self.histories[cid]

    def new(self) -> str:
        return uuid.uuid4().hex

    def append(self, cid: str, text: str = TEXT) -> None:
        self._history(cid).add_message(self.message_class(content=text))

    def window(self, cid: str) -> list[dict[str, str]]:
        messages = self._history(cid).messages[-WINDOW:]
        return [{"role": m.type, "content": str(m.content)} for m in messages]

    def contents(self, cid: str) -> list[str]:
        return [str(m.content) for m in self._history(cid).messages]

    def close(self) -> None:
        for history in self.histories.values():
            history.redis_client.close()


class NaiveJsonOps:
    """The hand-written helper from DESIGN.md: GET a JSON array, append, SET it back."""

    label = "naive JSON GET/SET"

    def __init__(self, url: str, prefix: str) -> None:
        self.r = redis.Redis.from_url(url, decode_responses=True)
        self.base = prefix + ":naive:"

    def new(self) -> str:
        return uuid.uuid4().hex

    def append(self, cid: str, text: str = TEXT) -> None:
        history = json.loads(self.r.get(self.base + cid) or "[]")
        history.append({"role": "user", "content": text})
        self.r.set(self.base + cid, json.dumps(history))

    def contents(self, cid: str) -> list[str]:
        return [m["content"] for m in json.loads(self.r.get(self.base + cid) or "[]")]

    def close(self) -> None:
        self.r.close()


KINDS: dict[str, Callable[[str, str], Any]] = {
    "threadkeep": StoreOps,
    "raw": RawOps,
    "langchain": LangChainOps,
    "naive": NaiveJsonOps,
}


# ---- concurrent appends -----------------------------------------------------------------


def _writer(kind: str, url: str, prefix: str, cid: str, worker: int, start_at: float) -> None:
    ops = KINDS[kind](url, prefix)
    while time.time() < start_at:
        time.sleep(0.001)
    for i in range(PER_PROCESS):
        ops.append(cid, f"w{worker}-{i}")
    ops.close()


def concurrent(kind: str, url: str, prefix: str) -> tuple[str, int, int, int, float]:
    """Append from PROCESSES processes at once; count lost and duplicated messages."""
    ops = KINDS[kind](url, prefix)
    cid = ops.new()
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0
    workers = [
        ctx.Process(target=_writer, args=(kind, url, prefix, cid, w, start_at))
        for w in range(PROCESSES)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.time() - start_at
    stored = Counter(ops.contents(cid))
    expected = {f"w{w}-{i}" for w in range(PROCESSES) for i in range(PER_PROCESS)}
    lost = len(expected - set(stored))
    duplicated = sum(n - 1 for n in stored.values() if n > 1)
    ops.close()
    return ops.label, len(expected), lost, duplicated, len(expected) / elapsed


# ---- the run ------------------------------------------------------------------------------


def _fill(ops: Any, size: int) -> str:
    cid: str = ops.new()
    for i in range(size):
        ops.append(cid, f"message number {i} with some realistic length text")
    return cid


def run(url: str, n: int) -> None:
    prefix = f"tk-bench-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url)
    try:
        store, raw, lc = StoreOps(url, prefix), RawOps(url, prefix), LangChainOps(url, prefix)
        say(f"[redis] filling histories of {WINDOW} and {LONG:,} messages for each contender")
        short = {o.label: _fill(o, WINDOW) for o in (store, raw, lc)}
        long = {o.label: _fill(o, LONG) for o in (store, raw, lc)}
        appends = {o.label: o.new() for o in (store, raw, lc)}

        def op(ops: Any, what: str, conv: dict[str, str]) -> tuple[str, Callable[[int], object]]:
            cid = conv[ops.label]
            fn = ops.append if what == "append" else ops.window
            return f"{ops.label} {what}", lambda i: fn(cid)

        rows: list[tuple[Result, Result | None, str]] = []
        for what, conv, label in (
            ("append", appends, "append"),
            ("window", short, f"window read ({WINDOW} of {WINDOW})"),
            ("window", long, f"window read ({WINDOW} of {LONG:,})"),
        ):
            say(f"[redis] measuring {label}")
            ours, base = compare(op(store, what, conv), op(raw, what, conv), n)
            ours.name, base.name = f"threadkeep {label}", f"raw MULTI/EXEC {label}"
            rows.append((ours, base, "target ≤ 1.5×"))
            # LangChain reads the whole list: at 10,000 messages fewer calls keep the run short
            n_lc = n if conv is not long else max(30, n // 50)
            ours2, theirs = compare(op(store, what, conv), op(lc, what, conv), n_lc)
            ours2.name, theirs.name = f"threadkeep {label}", f"LangChain {label}"
            rows.append((ours2, theirs, "vs LangChain (< 1× is faster)"))
            rows.append((theirs, None, ""))
        table("Redis: threadkeep vs raw redis-py (MULTI/EXEC) vs LangChain", rows)
        growth_long, growth_short = compare(
            ("threadkeep append @10k", lambda i: store.append(long["threadkeep"])),
            ("threadkeep append @20", lambda i: store.append(short["threadkeep"])),
            n,
        )
        table("History growth: append at 10,000 vs 20 messages", [(growth_long, growth_short, "")])
        for o in (store, raw, lc):
            o.close()

        say(f"[redis] {PROCESSES} processes × {PER_PROCESS} concurrent appends, each contender")
        out = sys.stdout
        out.write(f"\n## {PROCESSES}-process concurrent append to one conversation\n\n")
        out.write("| contender | messages sent | lost | duplicated | appends/s (all processes) |\n")
        out.write("|---|---:|---:|---:|---:|\n")
        for kind in ("threadkeep", "raw", "langchain", "naive"):
            label, sent, lost, dup, rate = concurrent(kind, url, prefix)
            out.write(f"| {label} | {sent:,} | {lost:,} | {dup:,} | {rate:,.0f} |\n")
        out.flush()
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("-n", type=int, default=3000, help="timed calls per operation")
    args = parser.parse_args(argv)
    run(args.url, args.n)


if __name__ == "__main__":
    main()
