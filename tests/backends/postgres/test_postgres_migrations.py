"""PostgreSQL migrations: applied once under concurrent opens, upgrades keep the data."""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import re
import uuid
from typing import Any

import psycopg
import pytest

import threadkeep
from tests.backends.postgres._helpers import (
    SHARED,
    drop_schema,
    make_row,
    now_us,
    open_and_report,
    open_backend,
    schema_at_version,
    url_of,
)

pytestmark = pytest.mark.postgres


@pytest.mark.slow
def test_concurrent_open_migrates_once(schema: str) -> None:
    """Six processes open a fresh schema at once: exactly one applies each migration."""
    from threadkeep.backends.postgres._schema import MIGRATIONS

    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(6), ctx.Queue()
    procs = [
        ctx.Process(target=open_and_report, args=(url_of(schema), barrier, out)) for _ in range(6)
    ]
    for p in procs:
        p.start()
    reports = [out.get(timeout=90) for _ in procs]
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    applied = sorted(n for _, n in reports)
    assert len({pid for pid, _ in reports}) == 6  # six distinct processes
    assert applied == [0] * 5 + [len(MIGRATIONS)]  # one migrated, five found it done
    with psycopg.connect(SHARED) as conn:
        rows = conn.execute(f'SELECT version FROM "{schema}".schema_version ORDER BY 1').fetchall()
    assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
    # opening again applies nothing
    with contextlib.closing(open_backend(schema)) as again:
        assert again.migrated == 0


def test_upgrade_from_version_1_keeps_messages(schema: str) -> None:
    """A schema left at version 1 (text content) is upgraded on open and its messages read."""
    from threadkeep.backends.postgres._schema import (
        INSERT_CONVERSATION,
        MIGRATIONS,
        encode_conversation,
    )

    now = now_us()
    row = make_row(1, random.Random(3), now)
    with psycopg.connect(SHARED) as conn:
        schema_at_version(conn, schema, 1)
        v1_insert = INSERT_CONVERSATION.replace("(tenant, id)", "(id)")  # version 1's key
        conn.execute(v1_insert, encode_conversation(row))
        conn.execute(
            "UPDATE conversations SET last_seq = 1, message_count = 1, ttl_us = NULL, "
            "expires_us = NULL WHERE id = %s",
            (row.id,),
        )
        conn.execute(
            "INSERT INTO messages VALUES (%s, 1, 'user', 'héllo', %s, '{}', NULL)", (row.id, now)
        )
    with contextlib.closing(open_backend(schema)) as backend:
        assert backend.migrated == len(MIGRATIONS) - 1
    with psycopg.connect(SHARED) as conn:  # version 5 gave the message its tenant
        tenants = conn.execute(f'SELECT tenant FROM "{schema}".messages').fetchall()
    assert tenants == [(row.tenant,)]
    store = threadkeep.open(url_of(schema))
    try:
        assert [m.content for m in store.messages(row.id, tenant=row.tenant)] == ["héllo"]
        store.append(row.id, "user", "a\x00b", tenant=row.tenant)
        assert [m.content for m in store.messages(row.id, tenant=row.tenant)][-1] == "a\x00b"
    finally:
        store.close()


def test_a_schema_of_a_newer_version_is_refused_untouched(schema: str) -> None:
    """A schema a newer threadkeep migrated is not used as if it were this version's."""
    from threadkeep.backends.postgres._schema import MIGRATIONS

    with threadkeep.open(url_of(schema)) as store:
        store.start("c-1")
    newer = len(MIGRATIONS) + 1
    with psycopg.connect(SHARED, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "{schema}".schema_version (version) VALUES ({newer})')
    with pytest.raises(threadkeep.BackendError, match=f"version {newer}, newer than"):
        threadkeep.open(url_of(schema))
    with psycopg.connect(SHARED) as conn:
        rows = conn.execute(f'SELECT max(version) FROM "{schema}".schema_version').fetchall()
    assert rows == [(newer,)]


def test_a_schema_name_with_capitals_keeps_its_case(schema: str) -> None:
    """The schema is created quoted; the sessions' search_path must name it quoted too (an
    unquoted name is folded to lower case: every statement then missed its tables)."""
    upper = "Tk_" + schema
    try:
        with threadkeep.open(url_of(upper)) as store:
            conv = store.start("c-1")
            assert store.append(conv.id, "user", "hi").seq == 1
            assert [m.content for m in store.messages(conv.id)] == ["hi"]
        with psycopg.connect(SHARED) as conn:
            query = f'SELECT count(*) FROM "{upper}".messages'
            assert conn.execute(query).fetchone() == (1,)
    finally:
        drop_schema(upper)


def test_upgrade_from_version_10_keeps_the_store_working(schema: str) -> None:
    """Version 12 only sets the append functions' planner setting (after 11 replaced
    emit_event, which would have dropped it): a store at version 10 with a conversation and
    messages opens (the later migrations applied), reads them, appends gap-free after them,
    and the functions carry the setting."""
    from threadkeep.backends.postgres._schema import (
        INSERT_CONVERSATION,
        MIGRATIONS,
        encode_conversation,
    )

    now = now_us()
    row = make_row(1, random.Random(11), now)
    with psycopg.connect(SHARED) as conn:
        schema_at_version(conn, schema, 10)
        conn.execute(INSERT_CONVERSATION, encode_conversation(row))
        conn.execute(
            "UPDATE conversations SET last_seq = 2, message_count = 2, ttl_us = NULL, "
            "expires_us = NULL WHERE id = %s",
            (row.id,),
        )
        for seq, text in ((1, "one"), (2, "two")):
            conn.execute(
                "INSERT INTO messages (tenant, conversation_id, seq, role, content, created_us, "
                "metadata_json, idem_key) VALUES (%s, %s, %s, 'user', %s, %s, '{}', %s)",
                (row.tenant, row.id, seq, text.encode(), now, f"k{seq}"),
            )
    with contextlib.closing(open_backend(schema)) as backend:
        assert backend.migrated == len(MIGRATIONS) - 10
    with psycopg.connect(SHARED) as conn:
        settings = conn.execute(
            "SELECT proname, proconfig FROM pg_proc WHERE pronamespace = %s::regnamespace "
            "AND proname IN ('append_message', 'append_message_v2', 'emit_event', "
            "'trim_messages') ORDER BY 1",
            (schema,),
        ).fetchall()
    assert [(name, "enable_seqscan=off" in config) for name, config in settings] == [
        ("append_message", True),
        ("append_message_v2", True),
        ("emit_event", True),
        ("trim_messages", True),
    ]
    store = threadkeep.open(url_of(schema))
    try:
        assert store.append(row.id, "user", "two", tenant=row.tenant, idempotency_key="k2").seq == 2
        assert store.append(row.id, "user", "three", tenant=row.tenant).seq == 3
        texts = [m.content for m in store.messages(row.id, tenant=row.tenant)]
        assert texts == ["one", "two", "three"]
    finally:
        store.close()


def _append_function(schema: str) -> str:
    """The function APPEND calls, qualified by ``schema``."""
    from threadkeep.backends.postgres._schema import APPEND

    found = re.search(r"FROM (\w+)\(", APPEND)
    assert found is not None
    return f'"{schema}".{found.group(1)}'


def _grants(conn: psycopg.Connection[Any], function: str) -> set[tuple[str, bool]]:
    """Who may run ``function`` (a name; its only overload), with the grant option."""
    rows = conn.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, "
        "a.is_grantable FROM pg_proc p, aclexplode(coalesce(p.proacl, "
        "acldefault('f', p.proowner))) a WHERE p.oid = %s::regproc "
        "AND a.privilege_type = 'EXECUTE'",
        (function,),
    ).fetchall()
    return {(grantee, grantable) for grantee, grantable in rows}


def test_the_append_answers_a_named_row_type(schema: str) -> None:
    """The function APPEND calls returns a named composite type (its descriptor comes from the
    type cache; a RETURNS TABLE function's is built from its argument arrays on every call)."""
    store = threadkeep.open(url_of(schema))
    store.close()
    with psycopg.connect(SHARED) as conn:
        kind = conn.execute(
            "SELECT p.proretset, t.typtype, c.relkind FROM pg_proc p "
            "JOIN pg_type t ON t.oid = p.prorettype JOIN pg_class c ON c.oid = t.typrelid "
            "WHERE p.oid = %s::regproc",
            (_append_function(schema),),
        ).fetchall()
    assert kind == [(True, "c", "c")]


#: APPEND as version 12 sent it (migration 8's function)
_V12_APPEND = (
    "SELECT * FROM append_message(%(tenant)s::text, %(id)s::text, %(now)s::bigint, "
    "%(key)s::text, %(look_up)s::boolean, %(fence)s::bigint, %(sources)s::text[], "
    "%(targets)s::text[], %(changes)s::text[], %(change_data)s::text[], %(appended)s::text, "
    "%(role)s::text, %(content)s::bytea, %(metadata_json)s::text, %(payload)s::text, "
    "%(link)s::smallint, %(keep)s::bigint)"
)


def test_upgrade_from_version_12_gives_the_new_append_only_the_old_grants(schema: str) -> None:
    """Default privileges an operator set after the schema was built (here: every new function
    of the schema runs for another role too) do not reach the new append function: it ends with
    exactly the old one's EXECUTE grants, PUBLIC's default included."""
    from threadkeep.backends.postgres._schema import MIGRATIONS

    role = f"tk_extra_{uuid.uuid4().hex[:8]}"
    old = f'"{schema}".append_message'
    with psycopg.connect(SHARED, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}"')
    try:
        with psycopg.connect(SHARED) as conn:
            schema_at_version(conn, schema, 12)
            conn.execute(
                f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{schema}" '
                f'GRANT EXECUTE ON FUNCTIONS TO "{role}"'
            )
            before = _grants(conn, old)
        assert ("PUBLIC", False) in before
        assert not any(grantee == role for grantee, _ in before)
        with contextlib.closing(open_backend(schema)) as backend:
            assert backend.migrated == len(MIGRATIONS) - 12
        with psycopg.connect(SHARED) as conn:
            assert _grants(conn, _append_function(schema)) == before
    finally:
        drop_schema(schema)
        with psycopg.connect(SHARED, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def test_upgrade_from_version_12_keeps_grants_and_the_old_append(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 13's new append function gets the EXECUTE grants an operator gave the old one
    (and not PUBLIC's, which the operator revoked); the store appends after the upgrade, and a
    version-12 worker still running (its APPEND calls append_message) keeps appending,
    gap-free, with the same answer."""
    from threadkeep.backends.postgres import _schema
    from threadkeep.backends.postgres._schema import (
        INSERT_CONVERSATION,
        MIGRATIONS,
        encode_conversation,
    )

    role = f"tk_runner_{uuid.uuid4().hex[:8]}"
    old = f'"{schema}".append_message'
    row = make_row(1, random.Random(13), now_us())
    with psycopg.connect(SHARED, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}"')
    try:
        with psycopg.connect(SHARED) as conn:
            schema_at_version(conn, schema, 12)
            conn.execute(INSERT_CONVERSATION, encode_conversation(row))
            conn.execute(
                "UPDATE conversations SET ttl_us = NULL, expires_us = NULL WHERE id = %s",
                (row.id,),
            )
            found = conn.execute("SELECT %s::regproc::regprocedure::text", (old,)).fetchone()
            assert found is not None
            conn.execute(f"REVOKE EXECUTE ON FUNCTION {found[0]} FROM PUBLIC")
            conn.execute(f'GRANT EXECUTE ON FUNCTION {found[0]} TO "{role}" WITH GRANT OPTION')
            before = _grants(conn, old)
        assert (role, True) in before
        assert not any(grantee == "PUBLIC" for grantee, _ in before)
        with contextlib.closing(open_backend(schema)) as backend:
            assert backend.migrated == len(MIGRATIONS) - 12
        with psycopg.connect(SHARED) as conn:
            assert _grants(conn, _append_function(schema)) == before
            assert _grants(conn, old) == before
        store = threadkeep.open(url_of(schema))
        try:
            assert store.append(row.id, "user", "one", tenant=row.tenant).seq == 1
            monkeypatch.setattr(_schema, "APPEND", _schema.Closing(_V12_APPEND))
            assert store.append(row.id, "user", "two", tenant=row.tenant).seq == 2
            assert store.append(row.id, "user", "three").seq == 3
            monkeypatch.undo()
            assert store.append(row.id, "user", "four", idempotency_key="k").seq == 4
            again = store.append(row.id, "user", "four", idempotency_key="k")
            assert (again.seq, again.replayed) == (4, True)
            texts = [m.content for m in store.messages(row.id, tenant=row.tenant)]
            assert texts == ["one", "two", "three", "four"]
        finally:
            store.close()
    finally:
        drop_schema(schema)
        with psycopg.connect(SHARED, autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{role}"')


@pytest.mark.parametrize("partitions", [0, 4])
def test_upgrade_from_version_13_keys_conversations_by_id_first(
    schema: str, partitions: int
) -> None:
    """Migration 14 makes the conversations' primary key (id, tenant) and drops
    ``conversations_id (id)``, one index entry less per append, on a plain or a partitioned
    schema that holds a conversation; after it, appends by bare id and naming the tenant go
    on gap-free, a keyed append replays, and an insert of a taken id still meets its
    ``ON CONFLICT (tenant, id)`` (version-13 workers send the same statements)."""
    from threadkeep.backends.postgres._schema import (
        INSERT_CONVERSATION,
        PARTITION,
        SET_PARTITIONS,
        encode_conversation,
    )

    row = make_row(1, random.Random(14), now_us())
    with psycopg.connect(SHARED) as conn:
        schema_at_version(conn, schema, 13)
        if partitions:
            conn.execute(SET_PARTITIONS, {"n": str(partitions)})
            conn.execute(PARTITION)
        conn.execute(INSERT_CONVERSATION, encode_conversation(row))
        conn.execute(
            "UPDATE conversations SET ttl_us = NULL, expires_us = NULL WHERE id = %s", (row.id,)
        )
        conn.execute(
            "INSERT INTO messages (tenant, conversation_id, seq, role, content, created_us, "
            "metadata_json, idem_key) VALUES (%s, %s, 1, 'user', 'zero', %s, '{}', 'k0')",
            (row.tenant, row.id, now_us()),
        )
        conn.execute(
            "UPDATE conversations SET last_seq = 1, message_count = 1 WHERE id = %s", (row.id,)
        )
    url = url_of(schema) + (f"&partitions={partitions}" if partitions else "")
    store = threadkeep.open(url)
    try:
        with psycopg.connect(SHARED) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            version = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            key = conn.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'conversations'::regclass AND contype = 'p'"
            ).fetchone()
            indexes = conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s "
                "AND tablename = 'conversations' ORDER BY 1",
                (schema,),
            ).fetchall()
            again = conn.execute(INSERT_CONVERSATION, encode_conversation(row)).fetchall()
        assert version == (14,)
        assert key == ("PRIMARY KEY (id, tenant)",)
        assert [name for (name,) in indexes] == [
            "conversations_agent_page",
            "conversations_contact_page",
            "conversations_expiry",
            "conversations_idle",
            "conversations_page",
            "conversations_pkey",
            "conversations_stage_page",
            "conversations_status_page",
        ]
        assert again == []
        assert store.append(row.id, "user", "one", tenant=row.tenant).seq == 2
        assert store.append(row.id, "user", "two").seq == 3
        replay = store.append(row.id, "user", "zero", idempotency_key="k0")
        assert (replay.seq, replay.replayed) == (1, True)
        assert [m.content for m in store.messages(row.id)] == ["zero", "one", "two"]
        assert store.get(row.id).message_count == 3
    finally:
        store.close()
