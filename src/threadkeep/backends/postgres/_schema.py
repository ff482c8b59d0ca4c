"""Schema migrations, SQL text and row codecs of the PostgreSQL backend.

``MIGRATIONS`` is append-only: its index + 1 is the schema version it brings, and every
version is applied once, under an advisory transaction lock, when a store is opened.
"""

from __future__ import annotations

from typing import Any, Final

from threadkeep._rules import ops
from threadkeep._rules.retention import RetentionUs

__all__ = ["CONV_COLS", "MIGRATIONS", "MSG_COLS", "conv_params", "decode_conv", "decode_msg"]

#: Append-only; MIGRATIONS[i] brings the schema to version i + 1.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE conversations (
        id text PRIMARY KEY,
        tenant text NOT NULL,
        contact_id text NOT NULL,
        agent_id text,
        channel text,
        status text NOT NULL,
        stage text,
        metadata_json text NOT NULL,
        created_us bigint NOT NULL,
        activity_us bigint NOT NULL,
        expires_us bigint,
        idle_us bigint NOT NULL,
        message_count integer NOT NULL DEFAULT 0,
        last_seq bigint NOT NULL DEFAULT 0,
        state_version integer NOT NULL DEFAULT 0,
        ttl_us bigint,
        idle_after_us bigint NOT NULL,
        window_n integer NOT NULL,
        max_messages integer,
        lease_token bigint NOT NULL DEFAULT 0,
        lease_until_us bigint NOT NULL DEFAULT 0
    );
    CREATE INDEX conversations_page ON conversations (tenant, activity_us DESC, id DESC);
    CREATE INDEX conversations_status_page
        ON conversations (tenant, status, activity_us DESC, id DESC);
    CREATE INDEX conversations_contact_page
        ON conversations (tenant, contact_id, activity_us DESC, id DESC);
    CREATE INDEX conversations_agent_page
        ON conversations (tenant, agent_id, activity_us DESC, id DESC);
    CREATE INDEX conversations_stage_page
        ON conversations (tenant, stage, activity_us DESC, id DESC);
    CREATE INDEX conversations_expiry ON conversations (expires_us)
        WHERE expires_us IS NOT NULL;
    CREATE INDEX conversations_idle ON conversations (idle_us);

    CREATE TABLE messages (
        conversation_id text NOT NULL,
        seq bigint NOT NULL,
        role text NOT NULL,
        content text NOT NULL,
        created_us bigint NOT NULL,
        metadata_json text NOT NULL,
        idem_key text,
        PRIMARY KEY (conversation_id, seq)
    );
    CREATE UNIQUE INDEX messages_idem ON messages (conversation_id, idem_key)
        WHERE idem_key IS NOT NULL;

    -- messages trimmed by max_messages whose idempotency key must still replay
    CREATE TABLE idem_archive (
        conversation_id text NOT NULL,
        idem_key text NOT NULL,
        seq bigint NOT NULL,
        role text NOT NULL,
        content text NOT NULL,
        created_us bigint NOT NULL,
        metadata_json text NOT NULL,
        PRIMARY KEY (conversation_id, idem_key)
    );

    CREATE TABLE states (
        conversation_id text NOT NULL,
        version integer NOT NULL,
        value_json text NOT NULL,
        saved_us bigint NOT NULL,
        PRIMARY KEY (conversation_id, version)
    );

    CREATE TABLE events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind text NOT NULL,
        tenant text NOT NULL,
        conversation_id text NOT NULL,
        data_json text NOT NULL,
        at_us bigint NOT NULL
    );
    CREATE INDEX events_tenant ON events (tenant, id);
    CREATE INDEX events_conversation ON events (conversation_id);

    CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL);
    INSERT INTO meta VALUES ('events_floor', 0);

    CREATE TABLE facts (
        tenant text NOT NULL,
        contact_id text NOT NULL,
        key text NOT NULL,
        value_json text NOT NULL,
        tier text NOT NULL,
        updated_us bigint NOT NULL,
        expires_us bigint NOT NULL,
        PRIMARY KEY (tenant, contact_id, key)
    );
    CREATE INDEX facts_expiry ON facts (expires_us);
    """,
    # 2: message content as UTF-8 bytes, so any text round-trips (a text column refuses NUL).
    """
    ALTER TABLE messages ALTER COLUMN content TYPE bytea USING convert_to(content, 'UTF8');
    ALTER TABLE idem_archive ALTER COLUMN content TYPE bytea USING convert_to(content, 'UTF8');
    """,
)

VERSION_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS schema_version "
    "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
)

CONV_COLS: Final = (
    "id, tenant, contact_id, agent_id, channel, status, stage, metadata_json, created_us, "
    "activity_us, expires_us, idle_us, message_count, last_seq, state_version, ttl_us, "
    "idle_after_us, window_n, max_messages"
)
MSG_COLS: Final = "conversation_id, seq, role, content, created_us, metadata_json, idem_key"

#: Internal idempotency keys (retry safety of appends without a caller key) start with this.
INTERNAL_KEY: Final = "\x1f"

LIVE: Final = "(expires_us IS NULL OR expires_us > %(now)s)"


def decode_conv(row: tuple[Any, ...]) -> ops.ConvRow:
    """Return the ConvRow of a row selected with ``CONV_COLS``."""
    return ops.ConvRow(  # type: ignore[misc]  # 15 positional fields, then retention
        *row[:15],
        retention=RetentionUs(
            ttl_us=row[15], idle_after_us=row[16], window=row[17], max_messages=row[18]
        ),
    )


def conv_params(row: ops.ConvRow) -> dict[str, Any]:
    """Return the named parameters of every ``CONV_COLS`` column of ``row``."""
    r = row.retention
    return {
        "id": row.id,
        "tenant": row.tenant,
        "contact_id": row.contact_id,
        "agent_id": row.agent_id,
        "channel": row.channel,
        "status": row.status,
        "stage": row.stage,
        "metadata_json": row.metadata_json,
        "created_us": row.created_us,
        "activity_us": row.activity_us,
        "expires_us": row.expires_us,
        "idle_us": row.idle_us,
        "message_count": row.message_count,
        "last_seq": row.last_seq,
        "state_version": row.state_version,
        "ttl_us": r.ttl_us,
        "idle_after_us": r.idle_after_us,
        "window_n": r.window,
        "max_messages": r.max_messages,
    }


def encode_content(content: str) -> bytes:
    """Return message text as stored: UTF-8 bytes (NUL and lone surrogates included)."""
    return content.encode("utf-8", "surrogatepass")


def decode_msg(row: tuple[Any, ...]) -> ops.MsgRow:
    """Return the MsgRow of a row selected with ``MSG_COLS`` (internal keys hidden)."""
    key = row[6]
    if key is not None and key.startswith(INTERNAL_KEY):
        key = None
    content = bytes(row[3]).decode("utf-8", "surrogatepass")
    return ops.MsgRow(row[0], row[1], row[2], content, row[4], row[5], key)


#: Ids are fresh per start() call, so a conflict means our own resent insert had committed.
INSERT_CONV: Final = (
    f"INSERT INTO conversations ({CONV_COLS}) VALUES ("
    + ", ".join(f"%({c.strip()})s" for c in CONV_COLS.split(","))
    + ") ON CONFLICT (id) DO NOTHING RETURNING 1"
)
#: Writes back the fields an operation may change.
UPDATE_CONV: Final = (
    "UPDATE conversations SET status = %(status)s, stage = %(stage)s, "
    "activity_us = %(activity_us)s, expires_us = %(expires_us)s, idle_us = %(idle_us)s, "
    "message_count = %(message_count)s, last_seq = %(last_seq)s, "
    "state_version = %(state_version)s WHERE id = %(id)s"
)
LOCK_CONV: Final = (
    f"SELECT {CONV_COLS}, lease_token, lease_until_us FROM conversations "
    "WHERE id = %(id)s FOR UPDATE"
)
GET_CONV: Final = f"SELECT {CONV_COLS} FROM conversations WHERE id = %(id)s AND {LIVE}"
FIND_OPEN: Final = (
    f"SELECT {CONV_COLS} FROM conversations WHERE tenant = %(tenant)s "
    f"AND contact_id = %(contact_id)s AND status = ANY(%(statuses)s) AND {LIVE} "
    "ORDER BY activity_us DESC, id DESC LIMIT 1"
)
FIND_KEY: Final = (
    f"SELECT {MSG_COLS} FROM messages WHERE conversation_id = %(id)s AND idem_key = %(key)s "
    "UNION ALL SELECT conversation_id, seq, role, content, created_us, metadata_json, idem_key "
    "FROM idem_archive WHERE conversation_id = %(id)s AND idem_key = %(key)s LIMIT 1"
)
#: Writes the conversation row back and inserts the message; one statement.
INSERT_MSG: Final = (
    "WITH c AS (UPDATE conversations SET status = %(status)s, activity_us = %(now)s, "
    "expires_us = %(expires_us)s, idle_us = %(idle_us)s, message_count = %(count)s, "
    "last_seq = %(seq)s WHERE id = %(id)s RETURNING 1) "
    f"INSERT INTO messages ({MSG_COLS}) VALUES (%(id)s, %(seq)s, %(role)s, %(content)s, "
    "%(now)s, %(metadata_json)s, %(key)s)"
)
#: Trims the oldest messages beyond max_messages; user idempotency keys stay replayable.
TRIM_MSGS: Final = (
    "WITH gone AS (DELETE FROM messages WHERE conversation_id = %(id)s AND seq <= %(floor)s "
    f"RETURNING {MSG_COLS}) "
    "INSERT INTO idem_archive SELECT conversation_id, idem_key, seq, role, content, "
    "created_us, metadata_json FROM gone WHERE idem_key IS NOT NULL "
    "AND left(idem_key, 1) <> E'\\x1f'"
)
#: The live conversation's last N messages in one statement: no row at all when it is not
#: found, one row of NULLs when it has no messages. N is its window when %(n)s is NULL.
#: Seqs are contiguous (trimming removes the oldest), so the last N are a bounded range.
WINDOW: Final = (
    "SELECT m.conversation_id, m.seq, m.role, m.content, m.created_us, m.metadata_json, "
    "m.idem_key FROM conversations c LEFT JOIN LATERAL (SELECT * FROM messages "
    "WHERE conversation_id = c.id AND seq > c.last_seq - coalesce(%(n)s::integer, c.window_n) "
    "ORDER BY seq DESC "
    "LIMIT coalesce(%(n)s::integer, c.window_n)) m ON true "
    "WHERE c.id = %(id)s AND (c.expires_us IS NULL OR c.expires_us > %(now)s) "
    "AND (%(tenant)s::text IS NULL OR c.tenant = %(tenant)s)"
)
AFTER: Final = (
    f"SELECT {MSG_COLS} FROM messages WHERE conversation_id = %(id)s AND seq > %(after)s "
    "ORDER BY seq LIMIT %(n)s"
)
#: Appends one event (waking LISTENers on commit), trims the log to ``keep`` newest ids and
#: raises the recorded floor; one statement, always the last of its transaction. The
#: advisory lock (per schema, held to commit) is taken before the id is drawn, so ids are
#: handed out in commit order: a reader that sees id n has seen every id below it, and a
#: cursor never skips an event committed late. PostgreSQL already serializes the commits of
#: NOTIFYing transactions, so the lock adds one statement's time to that critical section.
EMIT: Final = (
    "WITH e AS (INSERT INTO events (kind, tenant, conversation_id, data_json, at_us) "
    "SELECT %(kind)s, %(tenant)s, %(cid)s, %(data)s, %(at)s "
    "FROM pg_advisory_xact_lock(hashtextextended(%(lock)s, 0)) l, pg_notify(%(chan)s, '') "
    "RETURNING id), "
    "d AS (DELETE FROM events WHERE id > (SELECT value FROM meta WHERE key = 'events_floor') "
    "AND id <= (SELECT id FROM e) - %(keep)s RETURNING 1) "
    "UPDATE meta SET value = (SELECT id FROM e) - %(keep)s "
    "WHERE key = 'events_floor' AND value < (SELECT id FROM e) - %(keep)s"
)
#: Deletes up to %(n)s messages of the given conversations (sweep's bounded bite).
PURGE_MESSAGES: Final = (
    "DELETE FROM messages WHERE (conversation_id, seq) IN (SELECT conversation_id, seq "
    "FROM messages WHERE conversation_id = ANY(%(ids)s) LIMIT %(n)s) RETURNING 1"
)
#: The log's floor, and up to %(n)s events after the cursor (after the floor when it is
#: NULL): one row of (floor, NULLs) when there are none.
READ_EVENTS: Final = (
    "SELECT f.value, e.id, e.kind, e.tenant, e.conversation_id, e.data_json, e.at_us "
    "FROM meta f LEFT JOIN LATERAL (SELECT * FROM events "
    "WHERE id > coalesce(%(after)s::bigint, f.value) "
    "AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s) ORDER BY id LIMIT %(n)s) e ON true "
    "WHERE f.key = 'events_floor' ORDER BY e.id"
)
ERASE: Final = (
    "DELETE FROM messages WHERE conversation_id = ANY(%(ids)s)",
    "DELETE FROM idem_archive WHERE conversation_id = ANY(%(ids)s)",
    "DELETE FROM states WHERE conversation_id = ANY(%(ids)s)",
    "DELETE FROM events WHERE conversation_id = ANY(%(ids)s)",
    "DELETE FROM conversations WHERE id = ANY(%(ids)s)",
)
