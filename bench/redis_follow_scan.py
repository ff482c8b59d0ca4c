"""What one waiting follower of another tenant costs Redis per write (server-side counts).

A library follower of tenant ``a`` (``store.events(tenant="a", timeout=None)``) waits while
another store appends ``--writes`` messages of tenant ``b`` one after another, on a private
``redis-server`` (loopback, a free port, nothing persisted), so ``INFO commandstats`` holds only
this run. Reports the scripts' calls and CPU (``EVALSHA``: the appends and the follower's
reads), the ``XRANGE`` calls the follower's reads made (scripts' commands count there too) and
the server's CPU; the same without a follower (``--no-follower``) is the appends' own share.

    .venv/bin/python -m bench.redis_follow_scan [--writes 3000] [--no-follower]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import redis

import threadkeep


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(writes: int, follower: bool) -> dict[str, Any]:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="tk-follow-scan-") as directory:
        server = subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port)]
            + ["--bind", "127.0.0.1", "--dir", directory, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        try:
            raw = redis.Redis(port=port, decode_responses=True)
            deadline = time.monotonic() + 10
            while True:
                try:
                    raw.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            return _measure(f"redis://127.0.0.1:{port}/0?prefix=scan", raw, writes, follower)
        finally:
            server.terminate()
            server.wait(10)


def _measure(url: str, raw: redis.Redis, writes: int, follower: bool) -> dict[str, Any]:
    writer = threadkeep.open(url)
    conv = writer.start("c-b", tenant="b")
    writer.append(conv.id, "user", "warm-up")
    cursor = [e.id for e in writer.events(timeout=0)][-1]
    library = threadkeep.open(url)

    def follow() -> None:
        try:
            for _ in library.events(tenant="a", after=cursor, timeout=None):
                return
        except Exception:  # the store closed under it at the end
            pass

    if follower:
        threading.Thread(target=follow, daemon=True).start()
        while raw.info("clients")["blocked_clients"] < 1:
            time.sleep(0.01)
    raw.config_resetstat()
    cpu = raw.info("cpu")
    began = time.monotonic()
    for i in range(writes):
        writer.append(conv.id, "user", f"m{i}")
    seconds = time.monotonic() - began
    time.sleep(0.2)  # the follower's last read
    stats = raw.info("commandstats")
    after = raw.info("cpu")
    writer.close()
    library.close()
    evalsha = stats.get("cmdstat_evalsha", {})
    return {
        "writes": writes,
        "follower": follower,
        "seconds": round(seconds, 2),
        "evalsha_calls": evalsha.get("calls", 0),
        "evalsha_cpu_s": round(evalsha.get("usec", 0) / 1e6, 3),
        "xrange_calls": stats.get("cmdstat_xrange", {}).get("calls", 0),
        "xrange_cpu_s": round(stats.get("cmdstat_xrange", {}).get("usec", 0) / 1e6, 3),
        "server_cpu_s": round(sum(after[k] - cpu[k] for k in ("used_cpu_user", "used_cpu_sys")), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--no-follower", action="store_true")
    args = parser.parse_args(argv)
    report = run(args.writes, not args.no_follower)
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
