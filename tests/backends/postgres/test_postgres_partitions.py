"""A schema hash-partitioned by tenant (``?partitions=N``): its shape, the recorded count, and
that a call naming its tenant reads and writes that tenant's partition only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import threadkeep
from tests.backends.postgres._helpers import SHARED, connect, drop_schema, url_of
from threadkeep._rules.ops import Op, Result
from threadkeep.backends.postgres import _schema as pg
from threadkeep.backends.postgres._conn import pump
from threadkeep.backends.postgres._flows import Flow

pytestmark = pytest.mark.postgres

TABLES = [
    "conversation_counts", "conversations", "events", "facts", "idem_archive", "messages",
    "states",
]  # fmt: skip


def _indexes(schema: str) -> list[tuple[str, str]]:
    with connect(schema) as conn:
        rows = conn.execute(
            "SELECT indexname, replace(indexdef, %s, '') FROM pg_indexes "
            "WHERE schemaname = %s AND tablename = ANY(%s) ORDER BY 1",
            (f"{schema}.", schema, TABLES),
        ).fetchall()
    return [(name, " ".join(d.replace("ONLY ", "").split())) for name, d in rows]


def _triggers(schema: str) -> list[tuple[str, str]]:
    with connect(schema) as conn:
        rows = conn.execute(
            "SELECT tgname, replace(pg_get_triggerdef(oid), %s, '') FROM pg_trigger "
            "WHERE tgrelid = ANY(SELECT oid FROM pg_class WHERE relnamespace = %s::regnamespace "
            "AND relname = ANY(%s)) AND NOT tgisinternal ORDER BY 1",
            (f"{schema}.", schema, TABLES),
        ).fetchall()
    return [(name, definition) for name, definition in rows]


def test_partitioned_schema_is_hash_partitioned_by_tenant(schema: str) -> None:
    threadkeep.open(f"{url_of(schema)}&partitions=4").close()
    plain = f"{schema}_plain"
    try:  # the same keys, indexes and triggers (the counters) as the unpartitioned schema
        threadkeep.open(url_of(plain)).close()
        assert _indexes(schema) == _indexes(plain)
        assert _triggers(schema) == [
            (name, definition.replace(f"{plain}.", "")) for name, definition in _triggers(plain)
        ]
        assert len(_triggers(schema)) == 2
    finally:
        drop_schema(plain)
    with connect(schema) as conn:
        parents = conn.execute(
            "SELECT c.relname, pg_get_partkeydef(c.oid), (SELECT count(*) FROM pg_inherits i "
            "WHERE i.inhparent = c.oid) FROM pg_partitioned_table p JOIN pg_class c "
            "ON c.oid = p.partrelid WHERE c.relnamespace = %s::regnamespace ORDER BY 1",
            (schema,),
        ).fetchall()
        keys = conn.execute(
            "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype = 'p' AND connamespace = %s::regnamespace "
            "AND conrelid::regclass::text = ANY(%s)",
            (schema, TABLES),
        ).fetchall()
        recorded = conn.execute(pg.PARTITIONS).fetchone()
    assert parents == [(t, "HASH (tenant)", 4) for t in TABLES]
    assert len(keys) == len(TABLES) - 1  # conversation_counts has a unique key, no primary
    # each key holds the tenant, as a partitioned table's must; conversations' leads with the
    # id (migration 14: a call by bare id reads the key)
    assert sorted(key for _, key in keys if not key.startswith("PRIMARY KEY (tenant, ")) == [
        "PRIMARY KEY (id, tenant)"
    ]
    assert recorded == (4,)


def test_a_partition_count_other_than_the_schemas_is_refused(schema: str) -> None:
    threadkeep.open(f"{url_of(schema)}&partitions=4").close()
    with pytest.raises(threadkeep.InvalidInput, match="created with partitions=4.*partitions=8"):
        threadkeep.open(f"{url_of(schema)}&partitions=8")
    with pytest.raises(threadkeep.InvalidInput, match="created with partitions=4.*partitions=0"):
        threadkeep.open(f"{url_of(schema)}&partitions=0")
    store = threadkeep.open(url_of(schema))  # no option: the schema's own count
    conv = store.start("c-1", tenant="t-1")
    assert store.append(conv.id, "user", "hi").seq == 1
    store.close()


def test_an_unpartitioned_schema_refuses_partitions(schema: str) -> None:
    threadkeep.open(url_of(schema)).close()
    with pytest.raises(threadkeep.InvalidInput, match="created with partitions=0"):
        threadkeep.open(f"{url_of(schema)}&partitions=4")


@pytest.mark.parametrize("bad", ["-1", "1025", "two"])
def test_a_bad_partition_count_is_refused(bad: str) -> None:
    with pytest.raises(threadkeep.InvalidInput, match="partitions"):
        threadkeep.open(f"{SHARED}?schema=tk_never&partitions={bad}")


_PARTITION = re.compile(
    r"\b(?:conversation_counts|conversations|events|facts|idem_archive|messages|states)_p(\d+)\b"
)
_CONVERSATION_PARTITION = re.compile(r"\bconversations_p(\d+)\b")


#: auto_explain, on the spy's connection: the plan of every statement as it ran, the ones a
#: server-side function runs included (APPEND's, EMIT's), sent to the client as notices.
_AUTO_EXPLAIN = (
    "LOAD 'auto_explain'",
    "SET auto_explain.log_min_duration = 0",
    "SET auto_explain.log_nested_statements = on",
    "SET auto_explain.log_format = json",
    "SET client_min_messages = log",
)
#: emit_event's trim of the log by id, the one statement that spans partitions.
_EVENT_TRIM = "DELETE FROM events WHERE id = gone"


class _Explaining:
    """Wraps a store's backend: before each op runs, its flow runs once more on a connection
    of its own (rolled back), and each statement's plan is kept with the partitions it names;
    then each statement a function ran for it, by its own text, with the plan it ran.
    """

    def __init__(self, backend: Any, schema: str) -> None:
        self.backend = backend
        self.schema = schema
        self.plans: list[tuple[str, set[int]]] = []
        self.texts: dict[str, str] = {}  # each statement the flow sent: its plan

    def execute(self, op: Op[Any]) -> Result[Any]:
        run = self.backend._flows.call(op)
        with connect(self.schema) as conn:
            ran: list[str] = []
            conn.add_notice_handler(lambda notice: ran.append(notice.message_primary or ""))
            for setting in _AUTO_EXPLAIN:
                conn.execute(setting)
            pump(conn, self._explained(run.attempt(1), conn, ran))
            conn.rollback()
        return self.backend.execute(op)  # type: ignore[no-any-return]

    def _explained(
        self, flow: Flow[Any], conn: psycopg.Connection[Any], ran: list[str]
    ) -> Flow[Any]:
        rows: Any = None
        try:
            while True:
                sql, params = flow.send(rows)
                if sql and not sql.startswith(("SELECT pg_advisory", "SET ")):
                    plan = conn.execute("EXPLAIN (COSTS OFF) " + sql, params or None).fetchall()
                    text = "\n".join(r[0] for r in plan)
                    self.texts[sql] = text
                    self.plans.append((sql, {int(n) for n in _PARTITION.findall(text)}))
                ran.clear()
                rows = yield sql, params
                for logged in ran[:-1]:  # the statement's own plan comes last
                    report = json.loads(logged.partition("plan:\n")[2])
                    query = " ".join(report["Query Text"].split())  # PL/pgSQL blanks INTO out
                    text = json.dumps(report["Plan"])
                    self.plans.append((query, {int(n) for n in _PARTITION.findall(text)}))
        except StopIteration as done:
            return done.value

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


@pytest.fixture
def explained(schema: str) -> Iterator[tuple[Any, _Explaining]]:
    store = threadkeep.open(f"{url_of(schema)}&partitions=4")
    spy = _Explaining(store._backend, schema)
    store._backend = spy
    yield store, spy
    store._backend = spy.backend
    store.close()


def test_a_call_naming_its_tenant_touches_one_partition(
    explained: tuple[Any, _Explaining], schema: str
) -> None:
    """Every statement of the per-conversation, list and erasure calls given a tenant plans
    against that tenant's partition of each table, and no other (the event log's trim, part
    of EMIT, spans partitions, and a lease's release names no tenant: docs/postgres.md).
    """
    store, spy = explained
    t = "t-7"
    conv = store.start("c-1", tenant=t)
    store.append(conv.id, "user", "hi", tenant=t, idempotency_key="k-1")
    store.append(conv.id, "user", "hi", tenant=t, idempotency_key="k-1")  # replay
    store.append(conv.id, "user", "again", tenant=t)  # the common append (APPEND_ONE)
    store.append_many(conv.id, [("assistant", "yo")], tenant=t)
    store.messages(conv.id, tenant=t, last=5)
    store.messages(conv.id, tenant=t, after=0)
    store.context(conv.id, tenant=t)
    store.get(conv.id, tenant=t)
    store.save_state(conv.id, {"a": 1}, tenant=t)
    store.save_state(conv.id, {"a": 2}, tenant=t)
    store.load_state(conv.id, tenant=t)
    store.rollback_state(conv.id, 1, tenant=t)
    store.set_stage(conv.id, "Q1", tenant=t)
    with store.turn(conv.id, tenant=t, timeout=0):  # the lease; its release names no tenant
        pass
    store.list(tenant=t)
    store.counts(tenant=t)
    store.find_open("c-1", tenant=t)
    store.resume("c-1", tenant=t)
    store.remember("c-1", "name", "Ann", tenant=t)
    store.recall("c-1", tenant=t)
    list(store.events(tenant=t))
    store.delete(conv.id, tenant=t)
    store.start("c-2", tenant=t)
    store.delete_contact("c-2", tenant=t)
    with connect(schema) as conn:  # the tenant's rows are gone now: probe where they go
        own = _remainder(conn, t)
        conn.rollback()
    # EMIT takes the store-wide ordering lock; COUNTS probes every partition's expiry index
    # for expired rows not swept yet (docs/postgres.md, "Distributing by tenant").
    checked = [
        (sql, parts)
        for sql, parts in spy.plans
        if sql not in (pg.EMIT, pg.COUNTS, _EVENT_TRIM, pg.RELEASE_LEASE, pg.APPEND_ONE.one)
    ]
    # the common append's statement: its conversation's partition, and _EVENT_TRIM's delete
    # of the event `events_kept` ids older by id (every partition of events)
    assert set(_CONVERSATION_PARTITION.findall(spy.texts[pg.APPEND_ONE.one])) == {str(own)}
    assert (
        "SELECT ctid AS row_tid, xmin AS row_xmin, * FROM conversations "
        "WHERE tenant = p_tenant AND id = p_id FOR UPDATE" in [sql for sql, _ in checked]
    )  # APPEND's first statement when it has a key to look up
    assert len(checked) > 40
    strays = [(sql[:80], parts) for sql, parts in checked if parts - {own}]
    assert strays == []
    assert sum(bool(parts) for _, parts in checked) > 30  # the plans do name partitions


def _remainder(conn: psycopg.Connection[Any], tenant: str) -> int:
    """The partition a tenant's rows go to (insert a probe row, read where it went)."""
    row = conn.execute(
        "INSERT INTO facts (tenant, contact_id, key, value_json, tier, updated_us, expires_us) "
        "VALUES (%s, 'probe', 'probe', 'null', 'probe', 0, 0) RETURNING tableoid::regclass::text",
        (tenant,),
    ).fetchone()
    assert row is not None
    return int(row[0].rsplit("_p", 1)[1])


def test_a_call_by_bare_id_finds_the_row_in_every_partition(
    explained: tuple[Any, _Explaining], schema: str
) -> None:
    """Without a tenant the first statement looks in every partition; the rest of the flow
    names the tenant the row holds, so it touches one partition again (an append: the
    statements of the function APPEND calls).
    """
    store, spy = explained
    conv = store.start("c-1", tenant="t-3")
    spy.plans.clear()
    store.append(conv.id, "user", "hi")
    # the common statement first (it declines: new -> active), every conversations partition
    assert set(_CONVERSATION_PARTITION.findall(spy.texts[pg.APPEND_ONE.every])) == {
        "0", "1", "2", "3"
    }  # fmt: skip
    skipped = (
        pg.APPEND,
        _EVENT_TRIM,
        pg.APPEND_ONE.every,
        pg.INDEX_SCANS,
        "",
    )  # "": events_drawn()
    first, *rest = [(sql, p) for sql, p in spy.plans if sql not in skipped]
    # a keyless append reads the row unlocked, then updates that version (migration 14)
    assert (
        first[0] == "SELECT ctid AS row_tid, xmin AS row_xmin, * FROM conversations WHERE id = p_id"
    )
    assert first[1] == {0, 1, 2, 3}
    assert all(len(parts) <= 1 for _, parts in rest)
    with connect(schema) as conn:
        own = _remainder(conn, "t-3")
        conn.rollback()
    assert ("UPDATE conversations", {own}) in [(sql[:20], parts) for sql, parts in rest]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_conformance_suite_passes_on_a_partitioned_schema() -> None:
    """Run tests/conformance's postgres leg, unchanged, on schemas of 4 partitions a table."""
    tests = Path(__file__).resolve().parents[2]
    env = {**os.environ, "THREADKEEP_TEST_POSTGRES_BASE": f"{SHARED}?partitions=4"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(tests / "conformance"), "-k", "postgres", "-q",
         "-p", "no:cacheprovider", "-x"],
        cwd=tests.parent, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]
