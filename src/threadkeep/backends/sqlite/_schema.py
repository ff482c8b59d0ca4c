"""SQLite schema: append-only migrations, every SQL statement of the backend, row codecs.

``MIGRATIONS[i]`` brings the schema to version i + 1 (``PRAGMA user_version``). The Python
names match the PostgreSQL backend's ``_schema``; five columns are named otherwise there (no
migration renames them: the documented query plans quote those names):

| row field | SQLite | PostgreSQL |
|---|---|---|
| ``metadata_json`` (conversations, messages) | ``metadata`` | ``metadata_json`` |
| ``retention.window`` | ``window_size`` | ``window_n`` |
| ``idempotency_key`` (messages, idem_archive) | ``idempotency_key`` | ``idem_key`` |
| ``value_json`` (states, facts) | ``value`` | ``value_json`` |
| ``data_json`` (events) | ``data`` | ``data_json`` |
"""

from __future__ import annotations

from typing import Any, Final

from threadkeep._rules.rows import ConversationRow, MessageRow

__all__ = [
    "CONVERSATION_COLUMNS",
    "MESSAGE_COLUMNS",
    "MIGRATIONS",
    "decode_message",
    "encode_conversation",
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
    # 2: messages trimmed by max_messages whose caller idempotency key must still replay
    """
    CREATE TABLE idem_archive (
        conversation_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        role            TEXT NOT NULL,
        content         TEXT NOT NULL,
        created_us      INTEGER NOT NULL,
        metadata        TEXT NOT NULL,
        PRIMARY KEY (conversation_id, idempotency_key)
    ) WITHOUT ROWID;
    """,
    # 3: a fact's provenance and the values it superseded (decide.supersede)
    """
    ALTER TABLE facts ADD COLUMN source_json TEXT NOT NULL DEFAULT 'null';
    ALTER TABLE facts ADD COLUMN history_json TEXT NOT NULL DEFAULT '[]';
    """,
    # 4: payloads kept verbatim with messages, and the link bits windows and trimming read
    """
    ALTER TABLE messages ADD COLUMN payload TEXT;
    ALTER TABLE messages ADD COLUMN link INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE idem_archive ADD COLUMN payload TEXT;
    ALTER TABLE idem_archive ADD COLUMN link INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: counts() reads counters instead of grouping a tenant's rows. Triggers keep, per
    # (tenant, status, stage; '' for none: a stage is never empty), how many conversation rows
    # exist (expired ones included, until sweep erases them), in the writing transaction;
    # COUNTS subtracts the expired rows not yet swept through the expiry index.
    """
    CREATE TABLE conversation_counts (
        tenant TEXT NOT NULL,
        status TEXT NOT NULL,
        stage  TEXT NOT NULL,
        n      INTEGER NOT NULL,
        PRIMARY KEY (tenant, status, stage)
    ) WITHOUT ROWID;
    CREATE TRIGGER conversation_counts_insert AFTER INSERT ON conversations BEGIN
        INSERT INTO conversation_counts VALUES (NEW.tenant, NEW.status, ifnull(NEW.stage, ''), 1)
        ON CONFLICT (tenant, status, stage) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER conversation_counts_delete AFTER DELETE ON conversations BEGIN
        UPDATE conversation_counts SET n = n - 1 WHERE tenant = OLD.tenant
        AND status = OLD.status AND stage = ifnull(OLD.stage, '');
    END;
    CREATE TRIGGER conversation_counts_update AFTER UPDATE OF status, stage ON conversations
    WHEN OLD.status IS NOT NEW.status OR OLD.stage IS NOT NEW.stage BEGIN
        UPDATE conversation_counts SET n = n - 1 WHERE tenant = OLD.tenant
        AND status = OLD.status AND stage = ifnull(OLD.stage, '');
        INSERT INTO conversation_counts VALUES (NEW.tenant, NEW.status, ifnull(NEW.stage, ''), 1)
        ON CONFLICT (tenant, status, stage) DO UPDATE SET n = n + 1;
    END;
    INSERT INTO conversation_counts (tenant, status, stage, n)
        SELECT tenant, status, ifnull(stage, ''), count(*) FROM conversations
        GROUP BY 1, 2, 3;
    """,
    # 6: fewer pages written per append (docs/performance.md). Events lose AUTOINCREMENT (its
    # sqlite_sequence row was one more page per commit): a new id is the highest kept + 1, and
    # an erasure that removes the newest event puts a placeholder row (tenant '', read by no
    # one: a tenant is never empty) at its id (KEEP_HIGH), so an id is still never given
    # twice; the placeholder leaves with the log's trimming, once newer ids exist.
    # Conversations without a stage leave conv_by_stage (a stage filter never matches NULL),
    # and conv_by_contact is keyed by status instead of activity: an append no longer moves
    # either entry (find_open and a contact's list sort the contact's few rows). conv_by_idle
    # is keyed by idle_floor_us, at most idle_us: an append or a state save (which only move
    # idle_us later) leave it; sweep reads the rows whose floor has passed, checks idle_us,
    # and moves the floor of those not yet idle up to their idle_us (REFRESH_IDLE), so an
    # entry moves once per sweep, not per append. States become a rowid table with a unique
    # index: a WITHOUT ROWID cell keeps at most ~1,000 bytes in its leaf, so every state of
    # 1 KiB or more also wrote an overflow page (and freed one when trimmed); a rowid table
    # keeps up to ~4 KB inline.
    """
    CREATE TABLE events_v6 (
        id              INTEGER PRIMARY KEY,
        tenant          TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        kind            TEXT NOT NULL,
        data            TEXT NOT NULL,
        at_us           INTEGER NOT NULL
    );
    INSERT INTO events_v6 (id, tenant, conversation_id, kind, data, at_us)
        SELECT id, tenant, conversation_id, kind, data, at_us FROM events;
    INSERT INTO events_v6 (id, tenant, conversation_id, kind, data, at_us)
        SELECT seq, '', '', '', '', 0 FROM sqlite_sequence WHERE name = 'events'
        AND seq > (SELECT coalesce(max(id), 0) FROM events);
    DROP TABLE events;
    ALTER TABLE events_v6 RENAME TO events;
    CREATE INDEX events_by_tenant ON events (tenant, id);
    CREATE INDEX events_by_conversation ON events (conversation_id);
    DROP INDEX conv_by_stage;
    CREATE INDEX conv_by_stage ON conversations (tenant, stage, activity_us, id)
        WHERE stage IS NOT NULL;
    DROP INDEX conv_by_contact;
    CREATE INDEX conv_by_contact ON conversations (tenant, contact_id, status);
    ALTER TABLE conversations ADD COLUMN idle_floor_us INTEGER NOT NULL DEFAULT 0;
    UPDATE conversations SET idle_floor_us = idle_us;
    DROP INDEX conv_by_idle;
    CREATE INDEX conv_by_idle ON conversations (status, idle_floor_us);
    CREATE TABLE states_v6 (
        conversation_id TEXT NOT NULL,
        version         INTEGER NOT NULL,
        value           TEXT NOT NULL,
        saved_us        INTEGER NOT NULL
    );
    INSERT INTO states_v6 (conversation_id, version, value, saved_us)
        SELECT conversation_id, version, value, saved_us FROM states;
    DROP TABLE states;
    ALTER TABLE states_v6 RENAME TO states;
    CREATE UNIQUE INDEX states_by_version ON states (conversation_id, version);
    """,
    # 7: no (tenant, activity) index. Its entry moved with every append and state save (two
    # WAL pages each: docs/performance.md); a list() with neither a status, a stage nor a
    # contact merges conv_by_status's per-status ranges instead (LIST_MERGED), in the same
    # order, without a sort.
    """
    DROP INDEX conv_by_activity;
    """,
)

CONVERSATION_COLUMNS: Final = (
    "id, tenant, contact_id, agent_id, channel, status, stage, metadata, created_us, "
    "activity_us, expires_us, idle_us, message_count, last_seq, state_version, ttl_us, "
    "idle_after_us, window_size, max_messages"
)
MESSAGE_COLUMNS: Final = (
    "conversation_id, seq, role, content, created_us, metadata, idempotency_key, payload, link"
)
EVENT_COLUMNS: Final = "id, kind, tenant, conversation_id, data, at_us"
FACT_COLUMNS: Final = "key, value, tier, updated_us, expires_us, source_json, history_json"

LIVE: Final = "(expires_us IS NULL OR expires_us > :now)"

# ---- conversations ----------------------------------------------------------------------

#: (``idle_floor_us`` starts at idle_us, the 12th parameter)
INSERT_CONVERSATION: Final = (
    f"INSERT INTO conversations ({CONVERSATION_COLUMNS}, idle_floor_us) VALUES "
    "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?12)"
)
SELECT_CONVERSATION: Final = f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?"
#: The conversation with its turn lease (token, until) and idle floor, as the verdicts and
#: writes of a change need them.
LOCK_CONVERSATION: Final = (
    f"SELECT {CONVERSATION_COLUMNS}, lease_token, lease_until_us, idle_floor_us "
    "FROM conversations WHERE id = ?"
)
#: Writes back the fields a change may make (``encode_changes``); the idle floor is exact.
UPDATE_CONVERSATION: Final = (
    "UPDATE conversations SET status = ?1, stage = ?2, agent_id = ?3, activity_us = ?4, "
    "expires_us = ?5, idle_us = ?6, idle_floor_us = ?6, message_count = ?7, last_seq = ?8, "
    "state_version = ?9, ttl_us = ?10, idle_after_us = ?11, window_size = ?12, "
    "max_messages = ?13 WHERE id = ?14"
)
#: Writes back what an append changes; ``UPDATE_APPENDED_SAME`` when the status stays (SQLite
#: rewrites the entries of every index holding a column the SET names, changed or not:
#: conv_by_contact's among them).
#: ``UPDATE_APPENDED`` also sets the idle floor to idle_us: when the status changes (the entry
#: moves anyway) or idle_us went below the floor (a clock set back).
UPDATE_APPENDED: Final = (
    "UPDATE conversations SET status = ?1, last_seq = ?2, message_count = ?3, "
    "activity_us = ?4, expires_us = ?5, idle_us = ?6, idle_floor_us = ?6 WHERE id = ?7"
)
UPDATE_APPENDED_SAME: Final = (
    "UPDATE conversations SET last_seq = ?, message_count = ?, activity_us = ?, "
    "expires_us = ?, idle_us = ? WHERE id = ?"
)
#: Writes back what a state save changes; ``UPDATE_SAVED_FLOOR`` when idle_us went below the
#: idle floor.
UPDATE_SAVED: Final = (
    "UPDATE conversations SET state_version = ?, activity_us = ?, expires_us = ?, idle_us = ? "
    "WHERE id = ?"
)
UPDATE_SAVED_FLOOR: Final = (
    "UPDATE conversations SET state_version = ?1, activity_us = ?2, expires_us = ?3, "
    "idle_us = ?4, idle_floor_us = ?4 WHERE id = ?5"
)
#: The contact's open conversations by conv_by_contact (tenant, contact_id, status), newest
#: activity first (a sort of those few rows; the planner would otherwise walk the tenant's
#: activity index).
FIND_OPEN: Final = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations INDEXED BY conv_by_contact "
    "WHERE tenant = ? AND contact_id = ? "
    "AND status IN ({marks}) AND (expires_us IS NULL OR expires_us > ?) "
    "ORDER BY activity_us DESC, id DESC LIMIT 1"
)
#: ``{indexed}``: ``LIST_OF_CONTACT`` when the contact is a filter, else empty.
LIST: Final = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations{{indexed}} WHERE {{where}} "
    "ORDER BY activity_us DESC, id DESC LIMIT :limit"
)
#: A contact's page reads its rows by conv_by_contact and sorts them (see FIND_OPEN).
LIST_OF_CONTACT: Final = " INDEXED BY conv_by_contact"
#: A page without a status, stage or contact filter (migration 7): one arm per status
#: (``{status}``: a ``lifecycle.Status`` value), each an index range of conv_by_status read
#: newest first, which SQLite merges (``MERGE (UNION ALL)``) up to the limit: without an
#: agent filter the cost is the page's rows plus one per status, not the tenant's size, and
#: no sort (with one, each arm reads its status's range until the agent's rows fill the page,
#: as the single range of the dropped conv_by_activity did). The arms cover the statuses the
#: API can write (``check_status``): a row another program wrote with a status outside them
#: is not listed.
LIST_ARM: Final = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE status = '{{status}}' AND {{where}}"
)
#: The arms joined by ``UNION ALL``, then their order and the limit.
LIST_MERGED: Final = "{arms} ORDER BY activity_us DESC, id DESC LIMIT :limit"
#: The tenant's counters (migration 5) less its expired rows sweep has not erased yet, by
#: status and stage (NULL: none): the cost is the counters' few rows plus the unswept
#: backlog, not the tenant's size. ``+tenant`` keeps the planner on the expiry index.
COUNTS: Final = (
    "SELECT status, nullif(stage, ''), sum(n) FROM (SELECT status, stage, n "
    "FROM conversation_counts WHERE tenant = :tenant UNION ALL SELECT status, "
    "ifnull(stage, ''), -1 FROM conversations WHERE expires_us <= :now AND +tenant = :tenant) "
    "GROUP BY status, stage HAVING sum(n) > 0"
)
OF_CONTACT: Final = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE tenant = ? AND contact_id = ? "
    "ORDER BY created_us, id"
)
#: Every row of a conversation, each statement taking its id; ``ERASED`` names what each removes.
ERASE: Final = (
    "DELETE FROM messages WHERE conversation_id = ?",
    "DELETE FROM idem_archive WHERE conversation_id = ?",
    "DELETE FROM states WHERE conversation_id = ?",
    "DELETE FROM events WHERE conversation_id = ?",
    "DELETE FROM conversations WHERE id = ?",
)
ERASED: Final = ("messages", "archived", "states", "events", "conversations")

# ---- messages ---------------------------------------------------------------------------

INSERT_MESSAGE: Final = (
    f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: One kept message, and the write of its metadata (set_delivery).
SELECT_MESSAGE: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq = ?"
)
UPDATE_METADATA: Final = "UPDATE messages SET metadata = ? WHERE conversation_id = ? AND seq = ?"
#: The message stored under an idempotency key, kept or trimmed by max_messages.
FIND_KEY: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = :id "
    "AND idempotency_key = :key UNION ALL SELECT conversation_id, seq, role, content, "
    "created_us, metadata, idempotency_key, payload, link FROM idem_archive "
    "WHERE conversation_id = :id AND idempotency_key = :key LIMIT 1"
)
#: Where max_messages trimming may cut: the first message at or after a seq that answers no
#: earlier call and does not follow one leaving a call open (``history.trim_start``).
CUT: Final = (
    "SELECT min(m.seq) FROM messages m LEFT JOIN messages p "
    "ON p.conversation_id = m.conversation_id AND p.seq = m.seq - 1 "
    "WHERE m.conversation_id = ? AND m.seq >= ? AND (m.link & 1) = 0 "
    "AND (coalesce(p.link, 0) & 2) = 0"
)
#: Trimming by max_messages: keyed messages go to the archive first (``ARCHIVE``), then all go.
ARCHIVE: Final = (
    "INSERT INTO idem_archive (conversation_id, idempotency_key, seq, role, content, "
    "created_us, metadata, payload, link) SELECT conversation_id, idempotency_key, seq, role, "
    "content, created_us, metadata, payload, link FROM messages WHERE conversation_id = ? "
    "AND seq <= ? AND idempotency_key IS NOT NULL"
)
TRIM_MESSAGES: Final = "DELETE FROM messages WHERE conversation_id = ? AND seq <= ?"
NEWEST: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY seq DESC LIMIT 1"
)
#: pop_last, clear_messages and replace_messages delete the kept messages from a seq on.
DELETE_FROM: Final = "DELETE FROM messages WHERE conversation_id = ? AND seq >= ?"
#: A read in one statement, so one snapshot: a visible conversation's messages without
#: their conversation id (the one asked for); no row when it is not visible (expired at the
#: given time, or not of the given tenant when one is given: ``decide.is_visible``), one row
#: of NULLs when no message matches. seq is gap-free and trimming removes the oldest first,
#: so the last N messages are those with seq > last_seq - N: an index range. Each read is a
#: pair, indexed by ``tenant is None``: ``[False]`` binds the message condition's parameter,
#: the id, the time, the tenant, then the limit's; ``[True]`` (any tenant) the same without
#: the tenant.
_M: Final = ", ".join(f"m.{c.strip()}" for c in MESSAGE_COLUMNS.split(",")[1:])
#: ``decide.is_visible`` in SQL: ``[False]`` binds the time and the tenant, ``[True]`` (any
#: tenant) the time only. Nothing binds a None: sqlite3 binds a None through its adapter
#: lookup (a failed ``__adapt__`` lookup that formats an AttributeError), ~3.3k instructions,
#: an int or str directly; so a read without a tenant (or of the current state version) has
#: a statement of its own rather than a NULL parameter.
_VISIBLE: Final = (
    "(c.expires_us IS NULL OR c.expires_us > ?) AND c.tenant = ?",
    "(c.expires_us IS NULL OR c.expires_us > ?)",
)


def _read(condition: str, tail: str) -> tuple[str, str]:
    return (
        f"SELECT {_M} FROM conversations c LEFT JOIN messages m "
        f"ON m.conversation_id = c.id AND {condition} WHERE c.id = ? AND {_VISIBLE[0]} "
        f"ORDER BY m.seq{tail}",
        f"SELECT {_M} FROM conversations c LEFT JOIN messages m "
        f"ON m.conversation_id = c.id AND {condition} WHERE c.id = ? AND {_VISIBLE[1]} "
        f"ORDER BY m.seq{tail}",
    )


READ_LAST: Final = _read("m.seq > c.last_seq - ?", "")
READ_AFTER: Final = _read("m.seq > ?", " LIMIT ?")
#: The newest ``limit`` below a seq, newest first (the backend turns them around).
READ_BEFORE: Final = _read("m.seq < ?", " DESC LIMIT ?")
READ_KEY: Final = _read("m.idempotency_key = ?", "")
#: The window and ``extra`` messages before it (as ``WindowRow``), then the window size, in
#: one statement as ``_read``'s: no row when the conversation is not visible, one row of NULLs
#: but the size when it has no message. Parameters: ``extra``, the id, ``_VISIBLE``'s; a pair
#: as ``_read``'s.
WINDOW: Final = tuple(
    "SELECT m.role, m.content, m.payload, m.link, c.window_size FROM conversations c "
    "LEFT JOIN messages m ON m.conversation_id = c.id "
    f"AND m.seq > c.last_seq - c.window_size - ? WHERE c.id = ? AND {visible} ORDER BY m.seq"
    for visible in _VISIBLE
)

# ---- state ------------------------------------------------------------------------------

#: A state version of a visible conversation, in one statement: a single SELECT reads one
#: snapshot, so it needs no transaction. No row when it is not visible, one of NULLs when
#: there is no such version. Indexed by ``version is None`` (the current one: no version
#: bound), then by ``tenant is None`` as ``_read``'s; parameters: the version (when one is
#: asked for), the id, then ``_VISIBLE``'s.
LOAD_STATE: Final = tuple(
    tuple(
        "SELECT s.version, s.value, s.saved_us FROM conversations c "
        f"LEFT JOIN states s ON s.conversation_id = c.id AND s.version = {version} "
        f"WHERE c.id = ? AND {visible}"
        for visible in _VISIBLE
    )
    for version in ("?", "c.state_version")
)
SELECT_STATE: Final = (
    "SELECT version, value, saved_us FROM states WHERE conversation_id = ? AND version = ?"
)
INSERT_STATE: Final = (
    "INSERT INTO states (conversation_id, version, value, saved_us) VALUES (?, ?, ?, ?)"
)
TRIM_STATES: Final = "DELETE FROM states WHERE conversation_id = ? AND version <= ?"

# ---- events -----------------------------------------------------------------------------

#: The id is the highest kept + 1 (SQLite's rowid), above every id ever given: an erasure
#: that removed the newest event leaves a placeholder at its id (``KEEP_HIGH``, migration 6).
INSERT_EVENT: Final = (
    "INSERT INTO events (tenant, conversation_id, kind, data, at_us) VALUES (?, ?, ?, ?, ?)"
)
HIGHEST_EVENT: Final = "SELECT max(id) FROM events"
#: The placeholder: tenant '' (never a tenant's), so no read returns it.
KEEP_HIGH: Final = (
    "INSERT OR IGNORE INTO events (id, tenant, conversation_id, kind, data, at_us) "
    "VALUES (?, '', '', '', '', 0)"
)
TRIM_EVENTS: Final = "DELETE FROM events WHERE id <= ?"
RAISE_FLOOR: Final = "UPDATE meta SET value = max(value, ?) WHERE key = 'events_floor'"
FLOOR: Final = "SELECT value FROM meta WHERE key = 'events_floor'"
READ_EVENTS: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE id > ? AND tenant <> '' ORDER BY id LIMIT ?"
)
READ_TENANT_EVENTS: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE tenant = ? AND id > ? ORDER BY id LIMIT ?"
)

# ---- leases -----------------------------------------------------------------------------

TAKE_LEASE: Final = "UPDATE conversations SET lease_token = ?, lease_until_us = ? WHERE id = ?"
RELEASE_LEASE: Final = (
    "UPDATE conversations SET lease_until_us = 0 WHERE id = ? AND lease_token = ?"
)

# ---- sweep ------------------------------------------------------------------------------

DUE_PURGE: Final = "SELECT id FROM conversations WHERE expires_us <= ? LIMIT ?"
#: Deletes up to ? of the conversation's messages, the oldest first (a purge's bounded bite).
PURGE_MESSAGES: Final = (
    "DELETE FROM messages WHERE conversation_id = ?1 AND seq IN "
    "(SELECT seq FROM messages WHERE conversation_id = ?1 ORDER BY seq LIMIT ?2)"
)
#: In creation order, as every backend logs the idle changes of one sweep.
#: The idle floor (conv_by_idle) finds the candidates, idle_us decides (migration 6).
DUE_IDLE: Final = (
    "SELECT id FROM conversations WHERE status IN ({marks}) AND idle_floor_us <= ? "
    "AND idle_us <= ? AND (expires_us IS NULL OR expires_us > ?) ORDER BY created_us, id LIMIT ?"
)
#: A sweep lists its idle-due ids once, in that order, into a temporary table of its
#: connection (``IDLE_LIST``: one sort of the due rows per sweep, read from one snapshot;
#: SQLite keeps a large list in a temporary file, not in Python), then takes them a batch at
#: a time after a cursor on the list (``IDLE_PAGE``), judging each again in its write
#: transaction (``IDLE_DUE_ONE``: its tenant and status while still due). Selecting each
#: batch by ``DUE_IDLE`` instead read and sorted every remaining due row per batch.
IDLE_TABLE: Final = (
    "CREATE TEMP TABLE IF NOT EXISTS sweep_idle_due (n INTEGER PRIMARY KEY, id TEXT NOT NULL)"
)
IDLE_CLEAR: Final = "DELETE FROM temp.sweep_idle_due"
IDLE_LIST: Final = "INSERT INTO temp.sweep_idle_due (id) " + DUE_IDLE
IDLE_PAGE: Final = "SELECT n, id FROM temp.sweep_idle_due WHERE n > ? ORDER BY n LIMIT ?"
IDLE_DUE_ONE: Final = (
    "SELECT tenant, status FROM conversations WHERE id = ? AND status IN ({marks}) "
    "AND idle_us <= ? AND (expires_us IS NULL OR expires_us > ?)"
)
#: The next page of a status's rows whose idle floor has passed, after a keyset cursor
#: (idle_floor_us, id) in conv_by_idle's order (status, idle_floor_us, id): the sweep pages
#: through that range once, so a page reads at most ``?`` index entries however many due
#: rows (the oldest floors, first in the range) precede it. Those whose idle_us is still
#: ahead (activity since the floor was set) get ``REFRESH_IDLE``: their floor moves up to
#: idle_us, out of the range.
STALE_IDLE: Final = (
    "SELECT id, idle_floor_us, idle_us FROM conversations INDEXED BY conv_by_idle "
    "WHERE status = ?1 AND (idle_floor_us, id) > (?2, ?3) AND idle_floor_us <= ?4 "
    "ORDER BY idle_floor_us, id LIMIT ?5"
)
REFRESH_IDLE: Final = "UPDATE conversations SET idle_floor_us = idle_us WHERE id = ?"
DUE_FACTS: Final = (
    "SELECT tenant || char(0) || contact_id || char(0) || key FROM facts "
    "WHERE expires_us <= ?1 AND NOT EXISTS (SELECT 1 FROM json_each(facts.history_json) h "
    "WHERE CAST(json_extract(h.value, '$.expires_us') AS INTEGER) > ?1) LIMIT ?2"
)
SET_STATUS: Final = "UPDATE conversations SET status = ?, idle_floor_us = idle_us WHERE id = ?"

# ---- facts ------------------------------------------------------------------------------

REMEMBER: Final = (
    f"INSERT OR REPLACE INTO facts (tenant, contact_id, {FACT_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
FACT: Final = f"SELECT {FACT_COLUMNS} FROM facts WHERE tenant = ? AND contact_id = ? AND key = ?"
RECALL: Final = (
    f"SELECT {FACT_COLUMNS} FROM facts WHERE tenant = ? AND contact_id = ? AND expires_us > ? "
    "ORDER BY key"
)
RECALL_KEY: Final = (
    f"SELECT {FACT_COLUMNS} FROM facts WHERE tenant = ? AND contact_id = ? AND expires_us > ? "
    "AND key = ?"
)
FORGET: Final = "DELETE FROM facts WHERE tenant = ? AND contact_id = ? AND key = ?"
FORGET_CONTACT: Final = "DELETE FROM facts WHERE tenant = ? AND contact_id = ?"


# ---- codecs -----------------------------------------------------------------------------


def encode_conversation(row: ConversationRow) -> tuple[object, ...]:
    """Return the INSERT_CONVERSATION parameters of a row."""
    r = row.retention
    return (
        row.id, row.tenant, row.contact_id, row.agent_id, row.channel, row.status, row.stage,
        row.metadata_json, row.created_us, row.activity_us, row.expires_us, row.idle_us,
        row.message_count, row.last_seq, row.state_version, r.ttl_us, r.idle_after_us,
        r.window, r.max_messages,
    )  # fmt: skip


def encode_changes(row: ConversationRow) -> tuple[object, ...]:
    """Return the UPDATE_CONVERSATION parameters of a changed row."""
    return (
        row.status, row.stage, row.agent_id, row.activity_us, row.expires_us, row.idle_us,
        row.message_count, row.last_seq, row.state_version, row.retention.ttl_us,
        row.retention.idle_after_us, row.retention.window, row.retention.max_messages, row.id,
    )  # fmt: skip


def decode_message(r: tuple[Any, ...]) -> MessageRow:
    """Decode a messages row selected with MESSAGE_COLUMNS."""
    return MessageRow(*r)


# ---- key rotation: values rewritten in place, each only while it holds what was read ----

REWRITE_MESSAGE: Final = (
    "UPDATE messages SET content = ?, payload = ? "
    "WHERE conversation_id = ? AND seq = ? AND content = ? AND payload IS ?"
)
REWRITE_STATE: Final = (
    "UPDATE states SET value = ? WHERE conversation_id = ? AND version = ? AND value = ?"
)
REWRITE_FACT: Final = (
    "UPDATE facts SET value = ?, history_json = ? "
    "WHERE tenant = ? AND contact_id = ? AND key = ? AND value = ? AND history_json = ?"
)
FACT_CONTACTS: Final = (
    "SELECT DISTINCT contact_id FROM facts WHERE tenant = ? AND contact_id > ? "
    "ORDER BY contact_id LIMIT ?"
)
ARCHIVED: Final = (
    "SELECT conversation_id, seq, role, content, created_us, metadata, idempotency_key, "
    "payload, link FROM idem_archive WHERE conversation_id = ? AND idempotency_key > ? "
    "ORDER BY idempotency_key LIMIT ?"
)
REWRITE_ARCHIVED: Final = (
    "UPDATE idem_archive SET content = ?, payload = ? WHERE conversation_id = ? "
    "AND idempotency_key = ? AND content = ? AND payload IS ?"
)
