"""Facts stored before provenance and supersession existed stay readable on every store:
SQLite and PostgreSQL migrate their table, Redis reads the old hash field as it is."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

import threadkeep
from tests._servers import POSTGRES_BASE, REDIS_BASE, require_reachable
from threadkeep.backends.redis._keys import Keys

DAY_US = 86_400 * 1_000_000


def _old_fact(now: int) -> tuple[str, str, str, str, str, int, int]:
    return ("loc-1", "+1555", "email", '"old@example.com"', "critical", now, now + 365 * DAY_US)


def _check(url: str) -> None:
    with threadkeep.open(url) as store:
        [fact] = store.recall("+1555", tenant="loc-1")
        assert (fact.value, fact.source, fact.history) == ("old@example.com", None, ())
        new = store.remember(
            "+1555", "email", "new@example.com", tenant="loc-1", source={"kind": "crm"}
        )
        assert [h.value for h in new.history] == ["old@example.com"]
        assert [h.source for h in new.history] == [None]
        assert store.recall("+1555", tenant="loc-1")[0].history == new.history


def test_sqlite_schema_2_gains_sources_and_histories(tmp_path: Path) -> None:
    from threadkeep.backends.sqlite._schema import MIGRATIONS

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        for script in MIGRATIONS[:2]:
            db.executescript(script)
        db.execute("PRAGMA user_version = 2")
        db.execute(
            "INSERT INTO facts (tenant, contact_id, key, value, tier, updated_us, expires_us) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            _old_fact(time.time_ns() // 1000),
        )
    db.close()
    _check(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    db.close()


@pytest.mark.postgres
def test_postgres_schema_2_gains_sources_and_histories() -> None:
    from threadkeep.backends.postgres._schema import MIGRATIONS, VERSION_TABLE

    require_reachable(POSTGRES_BASE)
    schema = f"tk_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_BASE, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(VERSION_TABLE)
        for version, script in enumerate(MIGRATIONS[:2], start=1):
            conn.execute(script)
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        conn.execute(
            "INSERT INTO facts VALUES (%s, %s, %s, %s, %s, %s, %s)",
            _old_fact(time.time_ns() // 1000),
        )
    try:
        _check(f"{POSTGRES_BASE}?schema={schema}")
    finally:
        with psycopg.connect(POSTGRES_BASE, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.redis
def test_redis_reads_facts_written_before_sources_and_histories() -> None:
    require_reachable(REDIS_BASE)
    prefix = f"tk-test-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_BASE, decode_responses=True)
    try:
        tenant, contact, key, value, tier, updated, expires = _old_fact(time.time_ns() // 1000)
        # the hash field exactly as the earlier remember.lua wrote it, and no sibling field
        client.hset(Keys(prefix).facts(tenant, contact), key, f"{updated} {expires} {tier} {value}")
        _check(f"{REDIS_BASE}?prefix={prefix}")
    finally:
        keys = list(client.scan_iter(match=Keys(prefix).pattern, count=1000))
        if keys:
            client.delete(*keys)
        client.close()
