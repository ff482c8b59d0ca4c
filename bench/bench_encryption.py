"""Encryption at rest: the same store with and without keys (AES-256-GCM), calls alternating.

Run: `python -m bench bench_encryption` or `python -m bench.bench_encryption [--backends
sqlite,redis,postgres] [-n N]`. Redis and PostgreSQL are the local servers (127.0.0.1), each
run in a prefix/schema of its own that is removed at the end.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

import threadkeep
from bench._util import Result, compare, say, table
from threadkeep import Encryption

N = 2000  # timed calls per operation and side
KEYS = Encryption(keys={"k2": b"2" * 32, "k1": b"1" * 32}, current="k2")
OLD = Encryption(keys={"k1": b"1" * 32}, current="k1")
TEXT = "hello, I would like to sell my house on Elm street; it has three bedrooms and a garden"
STATE = {"stage": "Q2", "price": 450_000, "motivation": "relocating", "notes": "x" * 200}
URLS = {
    "redis": "redis://127.0.0.1:6379/0?prefix=tk-bench-enc-{run}",
    "postgres": "postgresql://postgres@127.0.0.1:5432/test?schema=tk_bench_enc_{run}",
}


class Side:
    """One store (plain or sealed) with a conversation of 20 messages and a state."""

    def __init__(self, url: str, encryption: Encryption | None) -> None:
        self.store = threadkeep.open(url, encryption=encryption)
        self.conv = self.store.start(f"bench-{uuid.uuid4().hex[:8]}", tenant="bench").id
        for _ in range(20):
            self.store.append(self.conv, "user", TEXT)
        self.version = self.store.save_state(self.conv, STATE)

    def append(self) -> None:
        self.store.append(self.conv, "user", TEXT)

    def window(self) -> object:
        return self.store.context(self.conv)

    def save(self) -> None:
        self.version = self.store.save_state(self.conv, STATE, expected_version=self.version)

    def load(self) -> object:
        return self.store.load_state(self.conv).value


def _rotation(url: str, label: str) -> Result:
    """Values re-encrypted per second by reencrypt(): 50 conversations of 20 messages + state."""
    tenant = f"rot-{uuid.uuid4().hex[:8]}"
    with threadkeep.open(url, encryption=OLD) as old:
        for i in range(50):
            conv = old.start(f"c{i}", tenant=tenant)
            old.append_many(conv.id, [("user", TEXT)] * 20)
            old.save_state(conv.id, STATE)
    with threadkeep.open(url, encryption=KEYS) as store:
        start = time.perf_counter()
        report = store.reencrypt(tenant=tenant)
        seconds = time.perf_counter() - start
    per = seconds / max(report.rewritten, 1) * 1e6
    return Result(
        f"{label} reencrypt ({report.rewritten} values)", report.rewritten, seconds, per, per
    )


def run(backend: str, n: int, url: str) -> None:
    plain, sealed = Side(url, None), Side(url, KEYS)
    say(f"[{backend}] measuring (plain and encrypted calls alternate, {n} each)")
    rows: list[tuple[Result, Result | None, str]] = []
    for name, fn_plain, fn_sealed in (
        ("append", plain.append, sealed.append),
        ("window read (20)", plain.window, sealed.window),
        ("state save", plain.save, sealed.save),
        ("state load", plain.load, sealed.load),
    ):
        base, enc = compare(
            (f"{backend} {name}", lambda i, f=fn_plain: f()),
            (f"{backend} {name} encrypted", lambda i, f=fn_sealed: f()),
            n,
        )
        rows.append((enc, base, ""))
    rows.append((_rotation(url, backend), None, "p50 column: µs per value"))
    plain.store.close()
    sealed.store.close()
    table(f"encryption at rest: {backend}", rows)


def _cleanup(backend: str, url: str) -> None:
    if backend == "redis":
        import redis

        client = redis.Redis.from_url(url.split("?")[0])
        prefix = url.split("prefix=")[1]
        keys = list(client.scan_iter(match=prefix + "{*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    elif backend == "postgres":
        import psycopg

        schema = url.split("schema=")[1]
        with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("-n", type=int, default=N)
    args = parser.parse_args(argv)
    run_id = uuid.uuid4().hex[:8]
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                run(backend, args.n, f"sqlite:///{tmp}/enc.db")
            continue
        url = URLS[backend].format(run=run_id)
        try:
            run(backend, args.n, url)
        except threadkeep.BackendUnavailable as exc:
            say(f"[{backend}] skipped: {exc}")
        finally:
            _cleanup(backend, url)


if __name__ == "__main__":
    main()
