"""SQLite schema: append-only migrations (index + 1 = version), SQL text and row codecs."""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from threadkeep._rules.ops import ConvRow, EventRow, FactRow, MsgRow, StateRow
from threadkeep._rules.retention import RetentionUs

__all__ = [
    "CONV_COLUMNS",
    "MIGRATIONS",
    "EVENT_COLUMNS",
    "FACT_COLUMNS",
    "INSERT_CONV",
    "INSERT_EVENT",
    "INSERT_MSG",
    "LIVE",
    "MSG_COLUMNS",
    "conv_row",
    "conv_values",
    "event_row",
    "fact_row",
    "msg_row",
    "state_row",
]

#: Each entry upgrades the schema by one version (``PRAGMA user_version``); never edit one,
#: only append.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE conversations (
        id            TEXT PRIMARY KEY,
        tenant        TEXT NOT NULL,
        contact_id    TEXT NOT NULL,
        agent_id      TEXT,
        channel       TEXT,
        status        TEXT NOT NULL,
        stage         TEXT,
        metadata      TEXT NOT NULL,
        created_us    INTEGER NOT NULL,
        activity_us   INTEGER NOT NULL,
        expires_us    INTEGER,
        idle_us       INTEGER NOT NULL,
        message_count INTEGER NOT NULL,
        last_seq      INTEGER NOT NULL,
        state_version INTEGER NOT NULL,
        ttl_us        INTEGER,
        idle_after_us INTEGER NOT NULL,
        window_size   INTEGER NOT NULL,
        max_messages  INTEGER,
        lease_token   INTEGER NOT NULL DEFAULT 0,
        lease_until_us INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX conv_by_activity ON conversations (tenant, activity_us, id);
    CREATE INDEX conv_by_status ON conversations (tenant, status, activity_us, id);
    CREATE INDEX conv_by_stage ON conversations (tenant, stage, activity_us, id);
    CREATE INDEX conv_by_contact ON conversations (tenant, contact_id, activity_us, id);
    CREATE INDEX conv_by_expiry ON conversations (expires_us) WHERE expires_us IS NOT NULL;
    CREATE INDEX conv_by_idle ON conversations (status, idle_us);

    CREATE TABLE messages (
        conversation_id TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        role            TEXT NOT NULL,
        content         TEXT NOT NULL,
        created_us      INTEGER NOT NULL,
        metadata        TEXT NOT NULL,
        idempotency_key TEXT,
        PRIMARY KEY (conversation_id, seq)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX messages_by_key ON messages (conversation_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;

    CREATE TABLE states (
        conversation_id TEXT NOT NULL,
        version         INTEGER NOT NULL,
        value           TEXT NOT NULL,
        saved_us        INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, version)
    ) WITHOUT ROWID;

    CREATE TABLE events (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant          TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        kind            TEXT NOT NULL,
        data            TEXT NOT NULL,
        at_us           INTEGER NOT NULL
    );
    CREATE INDEX events_by_tenant ON events (tenant, id);
    CREATE INDEX events_by_conversation ON events (conversation_id);

    CREATE TABLE facts (
        tenant     TEXT NOT NULL,
        contact_id TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        tier       TEXT NOT NULL,
        updated_us INTEGER NOT NULL,
        expires_us INTEGER NOT NULL,
        PRIMARY KEY (tenant, contact_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX facts_by_expiry ON facts (expires_us);

    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('events_floor', 0);
    """,
)

CONV_COLUMNS: Final = (
    "id, tenant, contact_id, agent_id, channel, status, stage, metadata, created_us, "
    "activity_us, expires_us, idle_us, message_count, last_seq, state_version, ttl_us, "
    "idle_after_us, window_size, max_messages"
)
MSG_COLUMNS: Final = "conversation_id, seq, role, content, created_us, metadata, idempotency_key"
EVENT_COLUMNS: Final = "id, kind, tenant, conversation_id, data, at_us"
FACT_COLUMNS: Final = "key, value, tier, updated_us, expires_us"

LIVE: Final = "(expires_us IS NULL OR expires_us > :now)"

INSERT_CONV: Final = (
    f"INSERT INTO conversations ({CONV_COLUMNS}) VALUES "
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_MSG: Final = f"INSERT INTO messages ({MSG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
INSERT_EVENT: Final = (
    "INSERT INTO events (tenant, conversation_id, kind, data, at_us) VALUES (?, ?, ?, ?, ?)"
)


def conv_values(row: ConvRow) -> tuple[object, ...]:
    """Return the INSERT_CONV parameters of a row."""
    r = row.retention
    return (
        row.id, row.tenant, row.contact_id, row.agent_id, row.channel, row.status, row.stage,
        row.metadata_json, row.created_us, row.activity_us, row.expires_us, row.idle_us,
        row.message_count, row.last_seq, row.state_version, r.ttl_us, r.idle_after_us,
        r.window, r.max_messages,
    )  # fmt: skip


def conv_row(r: tuple[Any, ...]) -> ConvRow:
    """Decode a conversations row selected with CONV_COLUMNS."""
    return ConvRow(
        id=r[0], tenant=r[1], contact_id=r[2], agent_id=r[3], channel=r[4], status=r[5],
        stage=r[6], metadata_json=r[7], created_us=r[8], activity_us=r[9], expires_us=r[10],
        idle_us=r[11], message_count=r[12], last_seq=r[13], state_version=r[14],
        retention=RetentionUs(ttl_us=r[15], idle_after_us=r[16], window=r[17], max_messages=r[18]),
    )  # fmt: skip


def msg_row(r: tuple[Any, ...]) -> MsgRow:
    """Decode a messages row selected with MSG_COLUMNS."""
    return MsgRow(*r)


def state_row(r: sqlite3.Row) -> StateRow:
    """Decode (version, value, saved_us)."""
    return StateRow(r[0], r[1], r[2])


def event_row(r: sqlite3.Row) -> EventRow:
    """Decode an events row selected with EVENT_COLUMNS."""
    return EventRow(str(r[0]), r[1], r[2], r[3], r[4], r[5])


def fact_row(r: sqlite3.Row) -> FactRow:
    """Decode a facts row selected with FACT_COLUMNS."""
    return FactRow(r[0], r[1], r[2], r[3], r[4])
