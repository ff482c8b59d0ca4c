"""Store URLs isolated per test run, server reachability and per-run cleanup."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

__all__ = ["cleanup_url", "isolated_url", "require_reachable"]

REDIS_BASE = "redis://127.0.0.1:6379/0"
POSTGRES_BASE = "postgresql://postgres@127.0.0.1:5432/test"


def isolated_url(kind: str, tmp_path: Path, run_id: str) -> str:
    """Return a store URL of ``kind`` that no other test run shares."""
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        path = (tmp_path / "threadkeep.db").resolve()
        return f"sqlite:///{path}"  # absolute path: sqlite:////tmp/...
    if kind == "redis":
        return f"{REDIS_BASE}?prefix=tk-test-{run_id}"
    if kind == "postgres":
        return f"{POSTGRES_BASE}?schema=tk_test_{run_id}"
    raise ValueError(f"unknown backend kind {kind!r}")


def require_reachable(url: str) -> None:
    """Skip (or fail under CI=true) when the server of a network URL does not answer."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "postgres", "postgresql"}:
        return
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (5432 if parts.scheme.startswith("postgres") else 6379)
    name = "redis" if parts.scheme.startswith("redis") else "postgres"
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as exc:
        reason = f"{name} not reachable at {host}:{port} ({type(exc).__name__})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def cleanup_url(url: str) -> None:
    """Remove what a test run left on a shared server: keys under the prefix or the schema."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if parts.scheme.startswith("redis") and "prefix" in query:
        _cleanup_redis(url.split("?", 1)[0], query["prefix"][0])
    elif parts.scheme.startswith("postgres") and "schema" in query:
        _cleanup_postgres(url.split("?", 1)[0], query["schema"][0])


def _cleanup_redis(base: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(base)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


def _cleanup_postgres(base: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
