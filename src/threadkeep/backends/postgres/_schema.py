"""Schema migrations, every SQL statement and the row codecs of the PostgreSQL backend.

``MIGRATIONS`` is append-only: its index + 1 is the schema version it brings, and every
version is applied once, under an advisory transaction lock, when a store is opened. The
Python names match the SQLite backend's ``_schema`` (whose docstring lists the five columns
named otherwise there).
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from threadkeep._rules.rows import ConversationRow, MessageRow

__all__ = [
    "CONVERSATION_COLUMNS",
    "MESSAGE_COLUMNS",
    "MIGRATIONS",
    "Unread",
    "decode_message",
    "decode_window",
    "encode_content",
    "encode_conversation",
]


class Routed(NamedTuple):
    """A statement in two forms: ``one`` names the tenant, ``every`` does not.

    ``one`` runs on one shard on Citus and reads one partition of a partitioned schema;
    ``every``, for a call given no tenant, finds the conversation by id alone (``READ_EVENTS``:
    reads every tenant's events), and every shard or partition answers it.
    """

    one: str
    every: str

    def pick(self, tenant: str | None) -> str:
        """Return the form for a call given ``tenant`` (None: any tenant)."""
        return self.every if tenant is None else self.one


def _routed(template: str) -> Routed:
    """Fill ``{row}`` of ``template`` with the conversation's key, with and without tenant."""
    row = "id = %(id)s"
    return Routed(template.format(row=f"tenant = %(tenant)s AND {row}"), template.format(row=row))


def _routed_join(template: str) -> Routed:
    """Fill ``{row}`` (the conversation ``c``) and ``{tenant}`` (the joined rows' tenant).

    The joined rows' tenant is the parameter where it is given, so the plan names their
    partition (a join column is only pruned on at run time).
    """
    return Routed(
        template.format(tenant="%(tenant)s", row="c.tenant = %(tenant)s AND c.id = %(id)s"),
        template.format(tenant="c.tenant", row="c.id = %(id)s"),
    )


class Unread(str):
    """A statement whose result no flow reads (the flow is sent ``[]``).

    The drivers run flows in pipeline mode and do not wait for such a statement's answer: it
    travels to the server with the next statement, or with the end of the flow, so a write
    of several statements costs one round trip where it would cost one each. An error it
    raises surfaces there, before the commit, like any other.
    """

    __slots__ = ()


class Closing(str):
    """A write's last statement: its commit, and after it the NOTIFY, travel in its flush.

    For a call safe to resend (``_conn.Ending.together``) the drivers queue the commit and
    the NOTIFY behind it and wait for the answers at once: the whole write is one round trip
    (the NOTIFY is always sent, a ``Quiet`` statement's excepted: it wakes listeners only if
    the write logged events, see ``NOTIFY``). The commit is COMMIT, or, when the statement is
    the first of its transaction to be answered, the Sync of an implicit transaction (no
    BEGIN, no COMMIT; ``_conn.Ending``). Otherwise it is answered like any statement, in the
    open transaction. A flow that yields more after it runs those in a transaction of their
    own.
    """

    __slots__ = ()


class Quiet(Closing):
    """A ``Closing`` statement that logs no event: no NOTIFY follows its COMMIT.

    The NOTIFY after a ``Closing`` statement is a transaction of its own on the server; a
    write that cannot have logged an event (a lease, a fact) leaves it out, unless an
    earlier statement of its transaction did log one (``EMIT``).
    """

    __slots__ = ()


def may_log(query: str) -> bool:
    """Whether ``query`` is a ``Closing`` statement that may have logged an event.

    A NOTIFY follows its transaction's COMMIT; not a ``Quiet`` statement's.
    """
    return isinstance(query, Closing) and not isinstance(query, Quiet)


#: PL/pgSQL: (re)defines ``events_drawn()`` with the identity sequence of ``events`` bound at
#: creation (migration 10; ``PARTITION`` binds it again to the new table's sequence). Its
#: SQL-standard body stores the sequence's OID: 7's looked the sequence up by name with
#: ``pg_get_serial_sequence`` on every call, ~4 µs of server time per write (a catalog scan;
#: docs/performance.md, fifth round). The body records a dependency on the sequence.
_BIND_DRAWN: Final = (
    "EXECUTE format('CREATE OR REPLACE FUNCTION events_drawn() RETURNS bigint LANGUAGE sql "
    "VOLATILE RETURN coalesce(pg_sequence_last_value(%L::regclass), 0)', "
    "pg_get_serial_sequence('events', 'id'));"
)

#: emit_event's work (migration 13), in emit_event and inlined in append_message_v2 for the
#: first event of an append (a call of a PL/pgSQL function with SET clauses costs ~30k
#: instructions more than its statements): the shared lock keyed below the id it draws (a
#: write's first event), the session's flags for the NOTIFY, the event, and the trim of the
#: event ``keep`` ids older with its floor. It is part of migration 13's text, which never
#: changes (14's append_message_v2 inlines it too): a later migration that changes these steps
#: writes both functions from a template of its own, and must keep ``APPEND_ONE`` (the same
#: steps as the client's SQL, sent by running workers of the previous version) right too.
_EMIT_13: Final = """
        IF {first} THEN
            done := pg_advisory_xact_lock_shared(events_tag() | events_drawn())::text;
            done := set_config('threadkeep.emitted', 'on', false);
        END IF;
        concerns := coalesce(current_setting('threadkeep.notify', true), '');
        IF concerns = '' AND octet_length({tenant}) < 7000 THEN  -- a payload is < 8000 bytes
            done := set_config('threadkeep.notify', 't:' || {tenant}, false);
        ELSIF concerns IS DISTINCT FROM 't:' || {tenant} THEN
            done := set_config('threadkeep.notify', '*', false);
        END IF;
        INSERT INTO events (kind, tenant, conversation_id, data_json, at_us)
            VALUES ({kind}, {tenant}, {cid}, {data}, {at}) RETURNING id INTO drawn;
        gone := drawn - {keep};
        IF gone > 0 THEN  -- an erased event left a placeholder; a rolled-back id left nothing
            DELETE FROM events WHERE id = gone;
            IF NOT FOUND THEN  -- an erasure committed while it waited: its placeholder
                DELETE FROM events WHERE id = gone;
            END IF;
            IF FOUND THEN
                UPDATE events_floors SET floor = gone WHERE shard = gone % 64 AND floor < gone;
            END IF;
        END IF;
"""

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
    # 3: a fact's provenance and the values it superseded (decide.supersede)
    """
    ALTER TABLE facts ADD COLUMN source_json text NOT NULL DEFAULT 'null',
        ADD COLUMN history_json text NOT NULL DEFAULT '[]';
    """,
    # 4: payloads kept verbatim with messages, and the link bits windows and trimming read
    """
    ALTER TABLE messages ADD COLUMN payload text, ADD COLUMN link smallint NOT NULL DEFAULT 0;
    ALTER TABLE idem_archive ADD COLUMN payload text,
        ADD COLUMN link smallint NOT NULL DEFAULT 0;
    """,
    # 5: the tenant in every table and leading every key, so that each statement names its
    # tenant and the schema can be distributed (Citus) or hash-partitioned by tenant
    # (docs/postgres.md, "Distributing by tenant"). Rows take their conversation's tenant;
    # rows whose conversation is gone (none should be) are erased, as the conversation was.
    # Ids stay unique by construction (new_id), so a plain index serves calls by bare id.
    # The old keys go before the fill, so the rewrite maintains no index; the new ones are
    # built once after it.
    """
    ALTER TABLE messages DROP CONSTRAINT messages_pkey, ADD COLUMN tenant text;
    DROP INDEX messages_idem;
    UPDATE messages m SET tenant = c.tenant FROM conversations c WHERE c.id = m.conversation_id;
    DELETE FROM messages WHERE tenant IS NULL;
    ALTER TABLE messages ALTER COLUMN tenant SET NOT NULL,
        ADD CONSTRAINT messages_pkey PRIMARY KEY (tenant, conversation_id, seq);
    CREATE UNIQUE INDEX messages_idem ON messages (tenant, conversation_id, idem_key)
        WHERE idem_key IS NOT NULL;

    ALTER TABLE idem_archive DROP CONSTRAINT idem_archive_pkey, ADD COLUMN tenant text;
    UPDATE idem_archive a SET tenant = c.tenant FROM conversations c
        WHERE c.id = a.conversation_id;
    DELETE FROM idem_archive WHERE tenant IS NULL;
    ALTER TABLE idem_archive ALTER COLUMN tenant SET NOT NULL,
        ADD CONSTRAINT idem_archive_pkey PRIMARY KEY (tenant, conversation_id, idem_key);

    ALTER TABLE states DROP CONSTRAINT states_pkey, ADD COLUMN tenant text;
    UPDATE states s SET tenant = c.tenant FROM conversations c WHERE c.id = s.conversation_id;
    DELETE FROM states WHERE tenant IS NULL;
    ALTER TABLE states ALTER COLUMN tenant SET NOT NULL,
        ADD CONSTRAINT states_pkey PRIMARY KEY (tenant, conversation_id, version);

    ALTER TABLE conversations DROP CONSTRAINT conversations_pkey,
        ADD CONSTRAINT conversations_pkey PRIMARY KEY (tenant, id);
    CREATE INDEX conversations_id ON conversations (id);

    ALTER TABLE events DROP CONSTRAINT events_pkey,
        ADD CONSTRAINT events_pkey PRIMARY KEY (tenant, id);
    DROP INDEX events_tenant;
    CREATE INDEX events_id ON events (id);
    DROP INDEX events_conversation;
    CREATE INDEX events_conversation ON events (tenant, conversation_id);

    INSERT INTO meta VALUES ('partitions', 0);
    """,
    # 6: counts() reads counters instead of grouping a tenant's rows. Triggers keep, per
    # (tenant, status, stage), how many conversation rows exist (expired ones included, until
    # sweep erases them), in the writing transaction; COUNTS subtracts the expired rows not yet
    # swept through the expiry index. A writer adds to the shard of its server process, so
    # concurrent writers of one tenant rarely wait on the same counter row. The idle index
    # leads with the status, so sweep() finds the due rows without walking every row idled
    # (or closed) long ago.
    """
    CREATE TABLE conversation_counts (
        tenant text NOT NULL,
        status text NOT NULL,
        stage text,
        shard smallint NOT NULL,
        n bigint NOT NULL,
        UNIQUE NULLS NOT DISTINCT (tenant, status, stage, shard)
    );
    CREATE FUNCTION conversation_counts_apply() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    DECLARE
        s smallint := pg_backend_pid() % 16;
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO conversation_counts AS c VALUES (OLD.tenant, OLD.status, OLD.stage, s, -1)
            ON CONFLICT (tenant, status, stage, shard) DO UPDATE SET n = c.n - 1;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO conversation_counts AS c VALUES (NEW.tenant, NEW.status, NEW.stage, s, 1)
            ON CONFLICT (tenant, status, stage, shard) DO UPDATE SET n = c.n + 1;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER conversation_counts_rows AFTER INSERT OR DELETE ON conversations
        FOR EACH ROW EXECUTE FUNCTION conversation_counts_apply();
    CREATE TRIGGER conversation_counts_changes AFTER UPDATE OF status, stage ON conversations
        FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                           OR OLD.stage IS DISTINCT FROM NEW.stage)
        EXECUTE FUNCTION conversation_counts_apply();
    INSERT INTO conversation_counts
        SELECT tenant, status, stage, 0, count(*) FROM conversations GROUP BY 1, 2, 3;
    DROP INDEX conversations_idle;
    CREATE INDEX conversations_idle ON conversations (status, idle_us);
    """,
    # 7: events without a lock held through the commit (EMIT, read_events below). A writer
    # takes a shared advisory lock keyed by the highest event id drawn before its own (held to
    # its end); readers return only ids up to the lowest such key, via read_events, which
    # looks at the locks before it reads. The floor (the highest id trimmed) is kept in 64
    # rows, each written only by the trims of the ids of its remainder, so concurrent writers
    # rarely lock the same one; readers take the highest.
    """
    CREATE TABLE events_floors (shard smallint PRIMARY KEY, floor bigint NOT NULL);
    INSERT INTO events_floors SELECT g, (SELECT value FROM meta WHERE key = 'events_floor')
        FROM generate_series(0, 63) g;
    DELETE FROM meta WHERE key = 'events_floor';
    -- both inlined where they are called (no SET clause): a writer pays a few microseconds
    CREATE FUNCTION events_drawn() RETURNS bigint LANGUAGE sql VOLATILE RETURN
        coalesce(pg_sequence_last_value(pg_get_serial_sequence('events', 'id')::regclass), 0);
    -- each schema of the database its own tag (readers see only their schema's keys): the
    -- schema name's hash, or the next tag no other schema holds, chosen under a lock of the
    -- database so two schemas migrating at once do not pick the same
    DO $d$ DECLARE
        taken bigint[] := '{}';
        other record;
        tag bigint := hashtext(current_schema()) & 32767;
    BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended('threadkeep:events_tag', 0));
        FOR other IN SELECT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE p.proname = 'events_tag' AND n.nspname <> current_schema() LOOP
            BEGIN
                EXECUTE format('SELECT %I.events_tag() >> 48', other.nspname) INTO tag;
                taken := taken || tag;
            EXCEPTION WHEN invalid_schema_name OR undefined_function OR insufficient_privilege
            THEN
                NULL;  -- dropped since the scan above, or not ours to read: no tag to avoid
            END;
        END LOOP;
        tag := hashtext(current_schema()) & 32767;
        WHILE tag = ANY(taken) LOOP
            tag := (tag + 1) & 32767;
        END LOOP;
        EXECUTE format('CREATE FUNCTION events_tag() RETURNS bigint LANGUAGE sql IMMUTABLE '
            'RETURN %s', tag << 48);
    END $d$;
    CREATE FUNCTION read_events(after bigint, for_tenant text, n integer) RETURNS TABLE (
        floor bigint, id bigint, kind text, tenant text, conversation_id text,
        data_json text, at_us bigint, held boolean
    ) LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $f$
    #variable_conflict use_column
    DECLARE
        top bigint := events_drawn();
        lowest bigint;
    BEGIN
        SELECT min((((l.classid::bigint & 65535) << 32) | l.objid::bigint)) INTO lowest
            FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND (l.classid::bigint >> 16) << 48 = events_tag();
        top := least(top, lowest);
        IF for_tenant IS NULL THEN
            RETURN QUERY SELECT f.low, e.id, e.kind, e.tenant, e.conversation_id, e.data_json,
                e.at_us, EXISTS (SELECT 1 FROM events x WHERE x.id > top)
                FROM (SELECT max(s.floor) AS low FROM events_floors s) f
                LEFT JOIN LATERAL (SELECT * FROM events WHERE events.id > coalesce(after, f.low)
                AND events.id <= top ORDER BY events.id LIMIT n) e ON true ORDER BY e.id;
        ELSE
            RETURN QUERY SELECT f.low, e.id, e.kind, e.tenant, e.conversation_id, e.data_json,
                e.at_us, EXISTS (SELECT 1 FROM events x WHERE x.tenant = for_tenant
                AND x.id > top)
                FROM (SELECT max(s.floor) AS low FROM events_floors s) f
                LEFT JOIN LATERAL (SELECT * FROM events WHERE events.tenant = for_tenant
                AND events.id > coalesce(after, f.low) AND events.id <= top
                ORDER BY events.id LIMIT n) e ON true ORDER BY e.id;
        END IF;
    END $f$;
    """,
    # 8: an append in one statement (APPEND), and the two writes it shares with the other
    # flows as functions (TRIM_MESSAGES, EMIT), so each exists once. Functions only: workers
    # of version 7 keep working on a schema at 8 (the tables and the event scheme are 7's).
    """
    CREATE FUNCTION emit_event(p_kind text, p_tenant text, p_cid text, p_data text,
        p_at bigint, p_keep bigint, p_rank bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $f$
    DECLARE
        drawn bigint;
        gone bigint;
    BEGIN
        IF p_rank = 0 THEN
            PERFORM pg_advisory_xact_lock_shared(events_tag() | events_drawn());
        END IF;
        INSERT INTO events (kind, tenant, conversation_id, data_json, at_us)
            VALUES (p_kind, p_tenant, p_cid, p_data, p_at) RETURNING id INTO drawn;
        gone := drawn - p_keep;
        IF gone > 0 THEN  -- the floor rises even when an erasure took that event already
            DELETE FROM events WHERE id = gone;
            UPDATE events_floors SET floor = gone WHERE shard = gone % 64 AND floor < gone;
        END IF;
    END $f$;
    CREATE FUNCTION trim_messages(p_tenant text, p_id text, p_from bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $f$
    DECLARE
        cut bigint;
    BEGIN
        WITH first_kept AS (SELECT min(m.seq) AS s FROM messages m LEFT JOIN messages p
            ON p.tenant = m.tenant AND p.conversation_id = m.conversation_id
            AND p.seq = m.seq - 1
            WHERE m.tenant = p_tenant AND m.conversation_id = p_id AND m.seq >= p_from
            AND (m.link & 1) = 0 AND (coalesce(p.link, 0) & 2) = 0),
        gone AS (DELETE FROM messages WHERE tenant = p_tenant AND conversation_id = p_id
            AND seq < (SELECT s FROM first_kept) RETURNING *),
        kept AS (INSERT INTO idem_archive (tenant, conversation_id, idem_key, seq, role,
            content, created_us, metadata_json, payload, link) SELECT p_tenant,
            conversation_id, idem_key, seq, role, content, created_us, metadata_json, payload,
            link FROM gone WHERE idem_key IS NOT NULL AND left(idem_key, 1) <> E'\\x1f'),
        counted AS (UPDATE conversations
            SET message_count = last_seq - (SELECT s FROM first_kept) + 1
            WHERE tenant = p_tenant AND id = p_id AND (SELECT s FROM first_kept) IS NOT NULL)
        SELECT s INTO cut FROM first_kept;
        RETURN cut;
    END $f$;
    CREATE FUNCTION append_message(p_tenant text, p_id text, p_now bigint, p_key text,
        p_look_up boolean, p_fence bigint, p_sources text[], p_targets text[],
        p_changes text[], p_change_data text[], p_appended text, p_role text,
        p_content bytea, p_metadata text, p_payload text, p_link smallint, p_keep bigint)
    RETURNS TABLE (written boolean, id text, tenant text, contact_id text, agent_id text,
        channel text, status text, stage text, metadata_json text, created_us bigint,
        activity_us bigint, expires_us bigint, idle_us bigint, message_count integer,
        last_seq bigint, state_version integer, ttl_us bigint, idle_after_us bigint,
        window_n integer, max_messages integer, lease_token bigint, lease_until_us bigint,
        conversation_id text, seq bigint, role text, content bytea, at_us bigint,
        meta text, idem_key text, payload text, link smallint)
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $f$
    #variable_conflict use_column
    DECLARE
        c record;
        i integer;
        next_seq bigint;
        target text;
    BEGIN
        IF p_tenant IS NULL THEN
            SELECT * INTO c FROM conversations WHERE id = p_id FOR UPDATE;
        ELSE
            SELECT * INTO c FROM conversations WHERE tenant = p_tenant AND id = p_id
                FOR UPDATE;
        END IF;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        written := false;
        IF c.expires_us IS NULL OR c.expires_us > p_now THEN
            IF p_look_up THEN
                SELECT * INTO conversation_id, seq, role, content, at_us, meta, idem_key,
                    payload, link FROM (SELECT conversation_id, seq, role, content,
                    created_us, metadata_json, idem_key, payload, link FROM messages
                    WHERE tenant = c.tenant AND conversation_id = c.id AND idem_key = p_key
                    UNION ALL SELECT conversation_id, seq, role, content, created_us,
                    metadata_json, idem_key, payload, link FROM idem_archive
                    WHERE tenant = c.tenant AND conversation_id = c.id AND idem_key = p_key
                    LIMIT 1) k;
            END IF;
            i := array_position(p_sources, c.status);
            IF seq IS NULL AND i IS NOT NULL AND (p_fence IS NULL
                    OR (c.lease_token = p_fence AND c.lease_until_us > p_now)) THEN
                next_seq := c.last_seq + 1;
                target := p_targets[i];
                INSERT INTO messages (tenant, conversation_id, seq, role, content, created_us,
                    metadata_json, idem_key, payload, link) VALUES (c.tenant, c.id, next_seq,
                    p_role, p_content, p_now, p_metadata, p_key, p_payload, p_link);
                UPDATE conversations SET status = target, activity_us = p_now,
                    expires_us = p_now + c.ttl_us, idle_us = p_now + c.idle_after_us,
                    message_count = c.message_count + 1, last_seq = next_seq
                    WHERE tenant = c.tenant AND id = c.id;
                IF c.max_messages IS NOT NULL AND c.message_count + 1 > c.max_messages THEN
                    PERFORM trim_messages(c.tenant, c.id, next_seq - c.max_messages + 1);
                END IF;
                PERFORM emit_event(p_appended, c.tenant, c.id,
                    format('{"seq":%s,"role":%s}', next_seq, to_json(p_role)), p_now, p_keep, 0);
                IF target <> c.status THEN
                    PERFORM emit_event(p_changes[i], c.tenant, c.id, p_change_data[i], p_now,
                        p_keep, 1);
                END IF;
                written := true;
            END IF;
        END IF;
        id := c.id;
        tenant := c.tenant;
        contact_id := c.contact_id;
        agent_id := c.agent_id;
        channel := c.channel;
        status := c.status;
        stage := c.stage;
        metadata_json := c.metadata_json;
        created_us := c.created_us;
        activity_us := c.activity_us;
        expires_us := c.expires_us;
        idle_us := c.idle_us;
        message_count := c.message_count;
        last_seq := c.last_seq;
        state_version := c.state_version;
        ttl_us := c.ttl_us;
        idle_after_us := c.idle_after_us;
        window_n := c.window_n;
        max_messages := c.max_messages;
        lease_token := c.lease_token;
        lease_until_us := c.lease_until_us;
        RETURN NEXT;
    END $f$;
    """,
    # 9: less written per append, and the log's floor exact (docs/performance.md, fourth
    # round). The stage and agent list indexes hold only the rows with a stage or an agent
    # (a list filter is an equality, never NULL): a non-HOT update of a conversation without
    # them (every append) no longer inserts into those two indexes. An erased event leaves a
    # placeholder row at its id (tenant '', read by no one: a tenant is never empty; see
    # ERASE), so emit_event's trim raises the floor only when it deleted a row: an id that
    # never became an event (a write rolled back after drawing it) no longer expires a
    # cursor. emit_event flags the session (threadkeep.emitted, undone with a rollback): the
    # NOTIFY statement wakes the listeners only when the write before it logged events.
    """
    DROP INDEX conversations_stage_page;
    CREATE INDEX conversations_stage_page ON conversations (tenant, stage, activity_us DESC,
        id DESC) WHERE stage IS NOT NULL;
    DROP INDEX conversations_agent_page;
    CREATE INDEX conversations_agent_page ON conversations (tenant, agent_id, activity_us DESC,
        id DESC) WHERE agent_id IS NOT NULL;
    CREATE OR REPLACE FUNCTION emit_event(p_kind text, p_tenant text, p_cid text, p_data text,
        p_at bigint, p_keep bigint, p_rank bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $f$
    DECLARE
        drawn bigint;
        gone bigint;
    BEGIN
        IF p_rank = 0 THEN
            PERFORM pg_advisory_xact_lock_shared(events_tag() | events_drawn());
            PERFORM set_config('threadkeep.emitted', 'on', false);
        END IF;
        INSERT INTO events (kind, tenant, conversation_id, data_json, at_us)
            VALUES (p_kind, p_tenant, p_cid, p_data, p_at) RETURNING id INTO drawn;
        gone := drawn - p_keep;
        IF gone > 0 THEN  -- an erased event left a placeholder; a rolled-back id left nothing
            DELETE FROM events WHERE id = gone;
            IF FOUND THEN
                UPDATE events_floors SET floor = gone WHERE shard = gone % 64 AND floor < gone;
            END IF;
        END IF;
    END $f$;
    CREATE OR REPLACE FUNCTION read_events(after bigint, for_tenant text, n integer)
    RETURNS TABLE (
        floor bigint, id bigint, kind text, tenant text, conversation_id text,
        data_json text, at_us bigint, held boolean
    ) LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $f$
    #variable_conflict use_column
    DECLARE
        top bigint := events_drawn();
        lowest bigint;
    BEGIN
        SELECT min((((l.classid::bigint & 65535) << 32) | l.objid::bigint)) INTO lowest
            FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND (l.classid::bigint >> 16) << 48 = events_tag();
        top := least(top, lowest);
        IF for_tenant IS NULL THEN
            RETURN QUERY SELECT f.low, e.id, e.kind, e.tenant, e.conversation_id, e.data_json,
                e.at_us, EXISTS (SELECT 1 FROM events x WHERE x.id > top AND x.tenant <> '')
                FROM (SELECT max(s.floor) AS low FROM events_floors s) f
                LEFT JOIN LATERAL (SELECT * FROM events WHERE events.id > coalesce(after, f.low)
                AND events.id <= top AND events.tenant <> '' ORDER BY events.id LIMIT n) e
                ON true ORDER BY e.id;
        ELSE
            RETURN QUERY SELECT f.low, e.id, e.kind, e.tenant, e.conversation_id, e.data_json,
                e.at_us, EXISTS (SELECT 1 FROM events x WHERE x.tenant = for_tenant
                AND x.id > top)
                FROM (SELECT max(s.floor) AS low FROM events_floors s) f
                LEFT JOIN LATERAL (SELECT * FROM events WHERE events.tenant = for_tenant
                AND events.id > coalesce(after, f.low) AND events.id <= top
                ORDER BY events.id LIMIT n) e ON true ORDER BY e.id;
        END IF;
    END $f$;
    """,
    # 10: the placeholders of migration 9 all leave (docs/postgres.md, "Events"). The trim's
    # DELETE waits on a row an erasure is replacing; once the erasure commits, that statement
    # finds the old row gone and cannot see the placeholder (a row inserted after its snapshot
    # was taken), so the floor stayed and the placeholder stayed for good: when the DELETE
    # found nothing, a second one (a new statement, a new snapshot) takes the placeholder. A
    # placeholder at or below the floor (its event was uncommitted when its id was trimmed)
    # is deleted by sweep (PURGE_BELOW_FLOOR). Events erased before version 9 left no
    # placeholder: their ids get one here, so the trim raises the floor past them and a
    # cursor from before them expires. An erased id and one never used (a write rolled back
    # after drawing it) cannot be told apart, so every id missing between the floor and the
    # highest drawn gets one: for those never used that is version 8's rule (the floor rises
    # at their trim), once, for ids drawn before the upgrade. The SHARE lock waits for the
    # writes in flight (an id one of them drew is not missing) and holds new ones back for
    # the fill, about one row per id the log keeps. events_drawn() gets its sequence bound
    # once (_BIND_DRAWN) instead of looked up on every write; CREATE OR REPLACE keeps its
    # callers.
    """
    CREATE OR REPLACE FUNCTION emit_event(p_kind text, p_tenant text, p_cid text, p_data text,
        p_at bigint, p_keep bigint, p_rank bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $f$
    DECLARE
        drawn bigint;
        gone bigint;
    BEGIN
        IF p_rank = 0 THEN
            PERFORM pg_advisory_xact_lock_shared(events_tag() | events_drawn());
            PERFORM set_config('threadkeep.emitted', 'on', false);
        END IF;
        INSERT INTO events (kind, tenant, conversation_id, data_json, at_us)
            VALUES (p_kind, p_tenant, p_cid, p_data, p_at) RETURNING id INTO drawn;
        gone := drawn - p_keep;
        IF gone > 0 THEN  -- an erased event left a placeholder; a rolled-back id left nothing
            DELETE FROM events WHERE id = gone;
            IF NOT FOUND THEN  -- an erasure committed while it waited: its placeholder
                DELETE FROM events WHERE id = gone;
            END IF;
            IF FOUND THEN
                UPDATE events_floors SET floor = gone WHERE shard = gone % 64 AND floor < gone;
            END IF;
        END IF;
    END $f$;
    DO $d$ BEGIN
    """
    + _BIND_DRAWN
    + """
    END $d$;
    LOCK TABLE events IN SHARE MODE;
    INSERT INTO events (id, kind, tenant, conversation_id, data_json, at_us)
        OVERRIDING SYSTEM VALUE SELECT g, '', '', '', '', 0
        FROM generate_series((SELECT max(floor) FROM events_floors) + 1, events_drawn()) g
        WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = g);
    """,
    # 11: the NOTIFY names whom it concerns (docs/postgres.md, "Events"). emit_event also
    # keeps, in the session setting threadkeep.notify (undone with a rollback, as
    # threadkeep.emitted), 't:' and the tenant of the events the transaction logged, or '*'
    # when they are of more than one tenant; the NOTIFY statement sends it as the payload, so
    # a listener wakes only the followers that can see the write. threadkeep.emitted is set
    # as before: a writer of version 10 (its NOTIFY tests 'on' and sends '') keeps waking
    # everyone on a schema at 11. Only the function changes.
    """
    CREATE OR REPLACE FUNCTION emit_event(p_kind text, p_tenant text, p_cid text, p_data text,
        p_at bigint, p_keep bigint, p_rank bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $f$
    DECLARE
        drawn bigint;
        gone bigint;
        concerns text := coalesce(current_setting('threadkeep.notify', true), '');
    BEGIN
        IF p_rank = 0 THEN
            PERFORM pg_advisory_xact_lock_shared(events_tag() | events_drawn());
            PERFORM set_config('threadkeep.emitted', 'on', false);
        END IF;
        IF concerns = '' AND octet_length(p_tenant) < 7000 THEN  -- a payload is < 8000 bytes
            PERFORM set_config('threadkeep.notify', 't:' || p_tenant, false);
        ELSIF concerns IS DISTINCT FROM 't:' || p_tenant THEN
            PERFORM set_config('threadkeep.notify', '*', false);
        END IF;
        INSERT INTO events (kind, tenant, conversation_id, data_json, at_us)
            VALUES (p_kind, p_tenant, p_cid, p_data, p_at) RETURNING id INTO drawn;
        gone := drawn - p_keep;
        IF gone > 0 THEN  -- an erased event left a placeholder; a rolled-back id left nothing
            DELETE FROM events WHERE id = gone;
            IF NOT FOUND THEN  -- an erasure committed while it waited: its placeholder
                DELETE FROM events WHERE id = gone;
            END IF;
            IF FOUND THEN
                UPDATE events_floors SET floor = gone WHERE shard = gone % 64 AND floor < gone;
            END IF;
        END IF;
    END $f$;
    """,
    # 12: an append's statements read their rows by key whatever the tables' size
    # (docs/performance.md, sixth round). Every statement append_message and emit_event run
    # finds its rows by a key (the conversation, the event to trim, a floor row); on a small
    # table (the 64 floor rows, a store of a hundred conversations) the planner chose a
    # sequential scan, which visits every row and the dead versions appends leave: 13 % of an
    # append's server instructions. The plans of a function's statements are made while it
    # runs, under its settings, and kept for the session; emit_event is also called from
    # other statements (START, SAVE), so both carry the setting. Catalog only: no table lock.
    """
    ALTER FUNCTION append_message(text, text, bigint, text, boolean, bigint, text[], text[],
        text[], text[], text, text, bytea, text, text, smallint, bigint)
        SET enable_seqscan = off;
    ALTER FUNCTION emit_event(text, text, text, text, bigint, bigint, bigint)
        SET enable_seqscan = off;
    """
    # trim_messages (review of this migration): the same setting, and its first kept message
    # found by one ordered index range that stops at it (each message beside the one before,
    # lag() over seq) instead of a self-join: from a session's sixth trim on PostgreSQL
    # planned the join generically (one row estimated for the conversation) and read every
    # kept message once per kept message: 290-510 ms per trim of a conversation keeping
    # 1,000, against 6-40 ms for the first five. Seqs are gap-free, so lag(seq) = seq - 1
    # wherever the message before is kept; the CASE keeps the join's rule exact were it not.
    """
    CREATE OR REPLACE FUNCTION trim_messages(p_tenant text, p_id text, p_from bigint)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT SET enable_seqscan = off AS $f$
    DECLARE
        cut bigint;
    BEGIN
        WITH first_kept AS (SELECT (SELECT x.seq FROM (SELECT seq, link,
                lag(seq) OVER (ORDER BY seq) AS prev_seq,
                lag(link) OVER (ORDER BY seq) AS prev_link
                FROM messages WHERE tenant = p_tenant AND conversation_id = p_id
                AND seq >= p_from - 1) x
            WHERE x.seq >= p_from AND (x.link & 1) = 0
            AND (CASE WHEN x.prev_seq = x.seq - 1 THEN x.prev_link ELSE 0 END & 2) = 0
            ORDER BY x.seq LIMIT 1) AS s),
        gone AS (DELETE FROM messages WHERE tenant = p_tenant AND conversation_id = p_id
            AND seq < (SELECT s FROM first_kept) RETURNING *),
        kept AS (INSERT INTO idem_archive (tenant, conversation_id, idem_key, seq, role,
            content, created_us, metadata_json, payload, link) SELECT p_tenant,
            conversation_id, idem_key, seq, role, content, created_us, metadata_json, payload,
            link FROM gone WHERE idem_key IS NOT NULL AND left(idem_key, 1) <> E'\\x1f'),
        counted AS (UPDATE conversations
            SET message_count = last_seq - (SELECT s FROM first_kept) + 1
            WHERE tenant = p_tenant AND id = p_id AND (SELECT s FROM first_kept) IS NOT NULL)
        SELECT s INTO cut FROM first_kept;
        RETURN cut;
    END $f$;
    """,
    # 13: fewer server instructions per append (docs/performance.md, "The PostgreSQL append's
    # server instructions, seventh round"), every rule as before. The append's answer is a
    # named composite type, append_result: a function returning TABLE (...) had its 31-column
    # result descriptor built from its argument arrays on every call; a named type's comes
    # from the type cache.
    # A function's result type cannot be replaced, so the function is a new one,
    # append_message_v2 (APPEND calls it), which gets every EXECUTE grant the old one had
    # (when an operator changed its ACL); the old one stays, unchanged, for the version-12
    # workers still running during a rolling upgrade. Its calls of other functions, and
    # emit_event's, are PL/pgSQL assignments instead of PERFORM (an expression evaluated in
    # place, not a statement planned and run by the executor); the append's first event is
    # emit_event's steps inlined (_EMIT_13: a call costs ~30k instructions besides them); and its
    # UPDATE names the status only when the status changes: an UPDATE naming it has the
    # counters' trigger (migration 6, AFTER UPDATE OF status, stage) parse and test its WHEN
    # clause, which is false when the status stays. emit_event keeps its signature (CREATE OR
    # REPLACE keeps its grants).
    """
    CREATE TYPE append_result AS (written boolean, id text, tenant text, contact_id text,
        agent_id text, channel text, status text, stage text, metadata_json text,
        created_us bigint, activity_us bigint, expires_us bigint, idle_us bigint,
        message_count integer, last_seq bigint, state_version integer, ttl_us bigint,
        idle_after_us bigint, window_n integer, max_messages integer, lease_token bigint,
        lease_until_us bigint, conversation_id text, seq bigint, role text, content bytea,
        at_us bigint, meta text, idem_key text, payload text, link smallint);
    CREATE OR REPLACE FUNCTION emit_event(p_kind text, p_tenant text, p_cid text, p_data text,
        p_at bigint, p_keep bigint, p_rank bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT SET enable_seqscan = off AS $f$
    DECLARE
        drawn bigint;
        gone bigint;
        concerns text;
        done text;  -- what a call made for its effect answers (void answers '')
    BEGIN
    """
    + _EMIT_13.format(
        first="p_rank = 0",
        kind="p_kind",
        tenant="p_tenant",
        cid="p_cid",
        data="p_data",
        at="p_at",
        keep="p_keep",
    )
    + """
    END $f$;
    CREATE FUNCTION append_message_v2(p_tenant text, p_id text, p_now bigint, p_key text,
        p_look_up boolean, p_fence bigint, p_sources text[], p_targets text[],
        p_changes text[], p_change_data text[], p_appended text, p_role text,
        p_content bytea, p_metadata text, p_payload text, p_link smallint, p_keep bigint)
    RETURNS SETOF append_result
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT SET enable_seqscan = off AS $f$
    DECLARE
        c record;
        i integer;
        next_seq bigint;
        target text;
        written boolean := false;
        drawn bigint;
        gone bigint;
        concerns text;
        done text;  -- what a call made for its effect answers
        k_cid text;  -- the stored message of the key, when one was looked up and found
        k_seq bigint;
        k_role text;
        k_content bytea;
        k_at bigint;
        k_meta text;
        k_key text;
        k_payload text;
        k_link smallint;
    BEGIN
        IF p_tenant IS NULL THEN
            SELECT * INTO c FROM conversations WHERE id = p_id FOR UPDATE;
        ELSE
            SELECT * INTO c FROM conversations WHERE tenant = p_tenant AND id = p_id
                FOR UPDATE;
        END IF;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF c.expires_us IS NULL OR c.expires_us > p_now THEN
            IF p_look_up THEN
                SELECT * INTO k_cid, k_seq, k_role, k_content, k_at, k_meta, k_key,
                    k_payload, k_link FROM (SELECT conversation_id, seq, role, content,
                    created_us, metadata_json, idem_key, payload, link FROM messages
                    WHERE tenant = c.tenant AND conversation_id = c.id AND idem_key = p_key
                    UNION ALL SELECT conversation_id, seq, role, content, created_us,
                    metadata_json, idem_key, payload, link FROM idem_archive
                    WHERE tenant = c.tenant AND conversation_id = c.id AND idem_key = p_key
                    LIMIT 1) k;
            END IF;
            i := array_position(p_sources, c.status);
            IF k_seq IS NULL AND i IS NOT NULL AND (p_fence IS NULL
                    OR (c.lease_token = p_fence AND c.lease_until_us > p_now)) THEN
                next_seq := c.last_seq + 1;
                target := p_targets[i];
                INSERT INTO messages (tenant, conversation_id, seq, role, content, created_us,
                    metadata_json, idem_key, payload, link) VALUES (c.tenant, c.id, next_seq,
                    p_role, p_content, p_now, p_metadata, p_key, p_payload, p_link);
                IF target = c.status THEN
                    UPDATE conversations SET activity_us = p_now,
                        expires_us = p_now + c.ttl_us, idle_us = p_now + c.idle_after_us,
                        message_count = c.message_count + 1, last_seq = next_seq
                        WHERE tenant = c.tenant AND id = c.id;
                ELSE
                    UPDATE conversations SET status = target, activity_us = p_now,
                        expires_us = p_now + c.ttl_us, idle_us = p_now + c.idle_after_us,
                        message_count = c.message_count + 1, last_seq = next_seq
                        WHERE tenant = c.tenant AND id = c.id;
                END IF;
                IF c.max_messages IS NOT NULL AND c.message_count + 1 > c.max_messages THEN
                    done := trim_messages(c.tenant, c.id, next_seq - c.max_messages + 1)::text;
                END IF;
    """
    + _EMIT_13.format(
        first="true",
        kind="p_appended",
        tenant="c.tenant",
        cid="c.id",
        data="""format('{"seq":%s,"role":%s}', next_seq, to_json(p_role))""",
        at="p_now",
        keep="p_keep",
    )
    + """
                IF target <> c.status THEN
                    done := emit_event(p_changes[i], c.tenant, c.id, p_change_data[i], p_now,
                        p_keep, 1)::text;
                END IF;
                written := true;
            END IF;
        END IF;
        RETURN NEXT ROW(written, c.id, c.tenant, c.contact_id, c.agent_id, c.channel,
            c.status, c.stage, c.metadata_json, c.created_us, c.activity_us, c.expires_us,
            c.idle_us, c.message_count, c.last_seq, c.state_version, c.ttl_us,
            c.idle_after_us, c.window_n, c.max_messages, c.lease_token, c.lease_until_us,
            k_cid, k_seq, k_role, k_content, k_at, k_meta, k_key, k_payload, k_link);
    END $f$;
    -- the new function's grants are the old one's: everything the new one was given (PUBLIC's
    -- default, or an operator's ALTER DEFAULT PRIVILEGES) is taken back, then each EXECUTE of
    -- the old one's ACL (its default when NULL: PUBLIC and its owner) is given, grant option kept
    DO $d$ DECLARE
        old constant regprocedure := 'append_message(text, text, bigint, text, boolean, '
            'bigint, text[], text[], text[], text[], text, text, bytea, text, text, smallint, '
            'bigint)'::regprocedure;
        new constant regprocedure := 'append_message_v2(text, text, bigint, text, boolean, '
            'bigint, text[], text[], text[], text[], text, text, bytea, text, text, smallint, '
            'bigint)'::regprocedure;
        g record;
    BEGIN
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', new);
        FOR g IN SELECT DISTINCT a.grantee FROM pg_proc p,
                aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
            WHERE p.oid = new AND a.grantee NOT IN (0, p.proowner)
        LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', new, g.grantee::regrole::text);
        END LOOP;
        FOR g IN SELECT a.grantee, bool_or(a.is_grantable) AS grantable
            FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
            WHERE p.oid = old AND a.privilege_type = 'EXECUTE'
                AND a.grantee <> (SELECT proowner FROM pg_proc WHERE oid = new)
            GROUP BY a.grantee
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s%s', new,
                CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END,
                CASE WHEN g.grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END $d$;
    """,
    # 14: less server work per append (docs/performance.md, "The PostgreSQL append's server
    # instructions, eighth round"), every rule as before. The conversations' primary key
    # becomes (id, tenant): a call by bare id finds the row by the key's first column, so
    # conversations_id (id) goes, an index entry every append wrote (its update moves indexed
    # columns, so it is never HOT); the key still holds the tenant (partitions, Citus), and ON
    # CONFLICT (tenant, id) infers it (the columns in any order). The key is rebuilt under an
    # ACCESS EXCLUSIVE lock taken first (no lock upgrade, so no deadlock with a worker between
    # its FOR UPDATE and its UPDATE): every statement on conversations waits for the build,
    # 3.5 s at 1,000,000 conversations here. append_message_v2 (CREATE OR REPLACE: its grants
    # stay; version-13 workers call it too) no longer locks the row first for an append
    # without a key to look up (a keyless first try: no row lock's executor node and WAL
    # record): it reads the row, judges it, and its UPDATE finds exactly that version, by its
    # ctid and its xmin (a TID scan; a version replaced since, even by one that committed
    # while the UPDATE waited, is refused: by the TID recheck on PostgreSQL 15, by the xmin
    # test where a server's TID recheck does not test the ctid), so the row it answers is
    # the row it wrote over, as a lock would give it.
    # When that UPDATE finds nothing, or the row read would take no append, the function does
    # what version 13 did: it locks the row and judges it again. The message and events are
    # written after the UPDATE (its row lock held to the end, so seq stays gap-free).
    """
    LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE;
    ALTER TABLE conversations DROP CONSTRAINT conversations_pkey,
        ADD CONSTRAINT conversations_pkey PRIMARY KEY (id, tenant);
    DROP INDEX conversations_id;
    CREATE OR REPLACE FUNCTION append_message_v2(p_tenant text, p_id text, p_now bigint,
        p_key text, p_look_up boolean, p_fence bigint, p_sources text[], p_targets text[],
        p_changes text[], p_change_data text[], p_appended text, p_role text,
        p_content bytea, p_metadata text, p_payload text, p_link smallint, p_keep bigint)
    RETURNS SETOF append_result
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT SET enable_seqscan = off AS $f$
    DECLARE
        c record;
        locked boolean := p_look_up;  -- a key look-up runs on the locked row only
        i integer;
        next_seq bigint;
        target text;
        written boolean := false;
        drawn bigint;
        gone bigint;
        concerns text;
        done text;  -- what a call made for its effect answers
        k_cid text;  -- the stored message of the key, when one was looked up and found
        k_seq bigint;
        k_role text;
        k_content bytea;
        k_at bigint;
        k_meta text;
        k_key text;
        k_payload text;
        k_link smallint;
    BEGIN
        LOOP
            IF NOT locked THEN
                IF p_tenant IS NULL THEN
                    SELECT ctid AS row_tid, xmin AS row_xmin, * INTO c FROM conversations
                        WHERE id = p_id;
                ELSE
                    SELECT ctid AS row_tid, xmin AS row_xmin, * INTO c FROM conversations
                        WHERE tenant = p_tenant AND id = p_id;
                END IF;
            ELSIF p_tenant IS NULL THEN
                SELECT ctid AS row_tid, xmin AS row_xmin, * INTO c FROM conversations
                    WHERE id = p_id FOR UPDATE;
            ELSE
                SELECT ctid AS row_tid, xmin AS row_xmin, * INTO c FROM conversations
                    WHERE tenant = p_tenant AND id = p_id FOR UPDATE;
            END IF;
            IF NOT FOUND THEN
                RETURN;
            END IF;
            IF c.expires_us IS NULL OR c.expires_us > p_now THEN
                IF p_look_up THEN
                    SELECT * INTO k_cid, k_seq, k_role, k_content, k_at, k_meta, k_key,
                        k_payload, k_link FROM (SELECT conversation_id, seq, role, content,
                        created_us, metadata_json, idem_key, payload, link FROM messages
                        WHERE tenant = c.tenant AND conversation_id = c.id
                        AND idem_key = p_key
                        UNION ALL SELECT conversation_id, seq, role, content, created_us,
                        metadata_json, idem_key, payload, link FROM idem_archive
                        WHERE tenant = c.tenant AND conversation_id = c.id
                        AND idem_key = p_key LIMIT 1) k;
                END IF;
                i := array_position(p_sources, c.status);
                IF k_seq IS NULL AND i IS NOT NULL AND (p_fence IS NULL
                        OR (c.lease_token = p_fence AND c.lease_until_us > p_now)) THEN
                    next_seq := c.last_seq + 1;
                    target := p_targets[i];
                    IF target = c.status THEN
                        UPDATE conversations SET activity_us = p_now,
                            expires_us = p_now + c.ttl_us, idle_us = p_now + c.idle_after_us,
                            message_count = c.message_count + 1, last_seq = next_seq
                            WHERE ctid = c.row_tid AND xmin = c.row_xmin
                            AND tenant = c.tenant AND id = c.id;
                    ELSE
                        UPDATE conversations SET status = target, activity_us = p_now,
                            expires_us = p_now + c.ttl_us, idle_us = p_now + c.idle_after_us,
                            message_count = c.message_count + 1, last_seq = next_seq
                            WHERE ctid = c.row_tid AND xmin = c.row_xmin
                            AND tenant = c.tenant AND id = c.id;
                    END IF;
                    written := FOUND;
                END IF;
            END IF;
            EXIT WHEN written OR locked;
            locked := true;
        END LOOP;
        IF written THEN
            INSERT INTO messages (tenant, conversation_id, seq, role, content, created_us,
                metadata_json, idem_key, payload, link) VALUES (c.tenant, c.id, next_seq,
                p_role, p_content, p_now, p_metadata, p_key, p_payload, p_link);
            IF c.max_messages IS NOT NULL AND c.message_count + 1 > c.max_messages THEN
                done := trim_messages(c.tenant, c.id, next_seq - c.max_messages + 1)::text;
            END IF;
    """
    + _EMIT_13.format(
        first="true",
        kind="p_appended",
        tenant="c.tenant",
        cid="c.id",
        data="""format('{"seq":%s,"role":%s}', next_seq, to_json(p_role))""",
        at="p_now",
        keep="p_keep",
    )
    + """
            IF target <> c.status THEN
                done := emit_event(p_changes[i], c.tenant, c.id, p_change_data[i], p_now,
                    p_keep, 1)::text;
            END IF;
        END IF;
        RETURN NEXT ROW(written, c.id, c.tenant, c.contact_id, c.agent_id, c.channel,
            c.status, c.stage, c.metadata_json, c.created_us, c.activity_us, c.expires_us,
            c.idle_us, c.message_count, c.last_seq, c.state_version, c.ttl_us,
            c.idle_after_us, c.window_n, c.max_messages, c.lease_token, c.lease_until_us,
            k_cid, k_seq, k_role, k_content, k_at, k_meta, k_key, k_payload, k_link);
    END $f$;
    """,
)

#: Turns a fresh schema's tables that have a tenant column into tables hash-partitioned by
#: tenant into N partitions each (``<table>_p<i>``; N from the ``threadkeep.partitions``
#: setting), keeping their columns, defaults, identity, checks, keys, indexes and triggers
#: (migration 6's counters), and records the count. Run once, right after the migrations
#: created the schema (the tables are empty), when the URL asks for partitions.
PARTITION: Final = (
    """
DO $$
DECLARE
    n integer := current_setting('threadkeep.partitions')::integer;
    t text;
    keys text[];
    defs text[];
    d text;
BEGIN
    -- events_drawn() names the sequence of the table rebuilt below (the new one has its own):
    -- a body of no dependency until it is bound again at the end
    EXECUTE 'CREATE OR REPLACE FUNCTION events_drawn() RETURNS bigint LANGUAGE sql VOLATILE '
        'RETURN 0';
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
        AND a.attname = 'tenant' AND NOT a.attisdropped ORDER BY 1
    LOOP
        SELECT coalesce(array_agg(format('ALTER TABLE %I ADD CONSTRAINT %I %s', t, conname,
            pg_get_constraintdef(oid))), '{}') INTO keys
            FROM pg_constraint WHERE conrelid = t::regclass AND contype IN ('p', 'u', 'x');
        SELECT coalesce(array_agg(indexdef), '{}') INTO defs FROM pg_indexes
            WHERE schemaname = current_schema() AND tablename = t AND indexname NOT IN
            (SELECT conname FROM pg_constraint WHERE conrelid = t::regclass);
        SELECT defs || coalesce(array_agg(pg_get_triggerdef(oid)), '{}') INTO defs
            FROM pg_trigger WHERE tgrelid = t::regclass AND NOT tgisinternal;
        EXECUTE format('ALTER TABLE %I RENAME TO %I', t, t || '_plain');
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING IDENTITY '
            'INCLUDING CONSTRAINTS) PARTITION BY HASH (tenant)', t, t || '_plain');
        EXECUTE format('DROP TABLE %I', t || '_plain');
        FOREACH d IN ARRAY keys || defs LOOP
            EXECUTE d;
        END LOOP;
        FOR i IN 0 .. n - 1 LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES WITH (MODULUS %s, '
                'REMAINDER %s)', t || '_p' || i, t, n, i);
        END LOOP;
    END LOOP;
    UPDATE meta SET value = n WHERE key = 'partitions';
    """
    + _BIND_DRAWN
    + """
END $$
"""
)

VERSION_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS schema_version "
    "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
)

CONVERSATION_COLUMNS: Final = (
    "id, tenant, contact_id, agent_id, channel, status, stage, metadata_json, created_us, "
    "activity_us, expires_us, idle_us, message_count, last_seq, state_version, ttl_us, "
    "idle_after_us, window_n, max_messages"
)
MESSAGE_COLUMNS: Final = (
    "conversation_id, seq, role, content, created_us, metadata_json, idem_key, payload, link"
)
STATE_COLUMNS: Final = "version, value_json, saved_us"
EVENT_COLUMNS: Final = "id, kind, tenant, conversation_id, data_json, at_us"
FACT_COLUMNS: Final = "key, value_json, tier, updated_us, expires_us, source_json, history_json"

#: Internal idempotency keys (retry safety of appends without a caller key) start with this.
INTERNAL_KEY: Final = "\x1f"

LIVE: Final = "(expires_us IS NULL OR expires_us > %(now)s)"


def encode_conversation(row: ConversationRow) -> dict[str, Any]:
    """Return the named parameters of every ``CONVERSATION_COLUMNS`` column of ``row``."""
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


def decode_message(row: tuple[Any, ...]) -> MessageRow:
    """Return the row selected with ``MESSAGE_COLUMNS`` (internal keys hidden)."""
    key = row[6]
    if key is not None and key.startswith(INTERNAL_KEY):
        key = None
    content = bytes(row[3]).decode("utf-8", "surrogatepass")
    return MessageRow(row[0], row[1], row[2], content, row[4], row[5], key, row[7], row[8])


def decode_window(rows: list[tuple[Any, ...]], conversation_id: str) -> list[MessageRow]:
    """Return the messages of a ``LAST`` answer oldest first (internal keys hidden).

    The hot read's decoder, one comprehension: each ``MessageRow`` is made as the tuple it
    is (``tuple.__new__``, as ``NamedTuple._make`` does, without its frame and length check).
    """
    if not rows or rows[0][0] is None:  # the one row of a conversation without messages
        return []
    new, internal = tuple.__new__, INTERNAL_KEY
    return [
        new(MessageRow, (
            conversation_id, seq, role, content.decode("utf-8", "surrogatepass"), created_us,
            metadata_json, None if key is not None and key[:1] == internal else key, payload,
            link,
        ))
        for seq, role, content, created_us, metadata_json, key, payload, link in reversed(rows)
    ]  # fmt: skip


#: Ids are fresh per start() call, so a conflict means our own resent insert had committed.
INSERT_CONVERSATION: Final = (
    f"INSERT INTO conversations ({CONVERSATION_COLUMNS}) VALUES ("
    + ", ".join(f"%({c.strip()})s" for c in CONVERSATION_COLUMNS.split(","))
    + ") ON CONFLICT (tenant, id) DO NOTHING RETURNING 1"
)
#: Writes back the fields an operation may change.
UPDATE_CONVERSATION: Final = Unread(
    "UPDATE conversations SET status = %(status)s, stage = %(stage)s, agent_id = %(agent_id)s, "
    "activity_us = %(activity_us)s, expires_us = %(expires_us)s, idle_us = %(idle_us)s, "
    "message_count = %(message_count)s, last_seq = %(last_seq)s, "
    "state_version = %(state_version)s, ttl_us = %(ttl_us)s, idle_after_us = %(idle_after_us)s, "
    "window_n = %(window_n)s, max_messages = %(max_messages)s "
    "WHERE tenant = %(tenant)s AND id = %(id)s"
)
_PEEK: Final = (
    f"SELECT {CONVERSATION_COLUMNS}, lease_token, lease_until_us FROM conversations WHERE {{row}}"
)
LOCK_CONVERSATION: Final = _routed(_PEEK + " FOR UPDATE")
SELECT_CONVERSATION: Final = _routed(
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {{row}} AND {LIVE}"
)
FIND_OPEN: Final = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE tenant = %(tenant)s "
    f"AND contact_id = %(contact_id)s AND status = ANY(%(statuses)s) AND {LIVE} "
    "ORDER BY activity_us DESC, id DESC LIMIT 1"
)
#: A new conversation's event, logged by the statement that inserts its row (RESUME, START)
#: for each row it inserted: %(kind)s and %(data)s (``decide.create``'s), at its activity time.
_STARTED: Final = (
    "e AS (SELECT emit_event(%(kind)s::text, i.tenant, i.id, %(data)s::text, "
    "%(activity_us)s::bigint, %(keep)s::bigint, 0) FROM i)"
)
#: resume() under LOCK_CONTACT, in one statement (one snapshot): the contact's open
#: conversation (FIND_OPEN at the new row's creation time) or, when it has none, the new row
#: inserted (INSERT_CONVERSATION's parameters) and its event (``_STARTED``). One row: the
#: open one's columns (NULLs when none was open), then how many rows were inserted (0 also
#: for a resend that had committed: no second event). A ``Quiet`` statement: the lock and
#: this are one round trip, an implicit transaction (``_conn.Ending``), and no NOTIFY follows
#: unless its answer says it logged the event (``WAKE``, a round trip more: only when it
#: created the conversation; one that found the open conversation wakes nobody).
RESUME: Final = Quiet(
    f"WITH o AS ({FIND_OPEN}), i AS (INSERT INTO conversations ({CONVERSATION_COLUMNS}) SELECT "
    + ", ".join(f"%({c.strip()})s" for c in CONVERSATION_COLUMNS.split(","))
    + " WHERE NOT EXISTS (SELECT FROM o) ON CONFLICT (tenant, id) DO NOTHING "
    f"RETURNING tenant, id), {_STARTED} "
    "SELECT o.*, (SELECT count(*) FROM e) FROM (SELECT) x LEFT JOIN o ON true"
)
#: start(): INSERT_CONVERSATION and its event (``_STARTED``) in one ``Closing`` statement;
#: answers how many rows it inserted (0: a resend whose first try had committed, or a given
#: id already taken).
START: Final = Closing(
    f"WITH i AS (INSERT INTO conversations ({CONVERSATION_COLUMNS}) VALUES ("
    + ", ".join(f"%({c.strip()})s" for c in CONVERSATION_COLUMNS.split(","))
    + f") ON CONFLICT (tenant, id) DO NOTHING RETURNING tenant, id), {_STARTED} "
    "SELECT count(*) FROM e"
)
#: Every statement below names the conversation by (tenant, id): the flows learn the tenant
#: from the conversation row they read or lock first when the call did not give it.
_CONV: Final = "tenant = %(tenant)s AND conversation_id = %(id)s"
FIND_KEY: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {_CONV} AND idem_key = %(key)s "
    f"UNION ALL SELECT {MESSAGE_COLUMNS} FROM idem_archive WHERE {_CONV} "
    "AND idem_key = %(key)s LIMIT 1"
)
#: The stored messages of several idempotency keys, kept or trimmed (a batch's replays).
FIND_KEYS: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {_CONV} "
    f"AND idem_key = ANY(%(keys)s) UNION ALL SELECT {MESSAGE_COLUMNS} FROM idem_archive "
    f"WHERE {_CONV} AND idem_key = ANY(%(keys)s)"
)
#: One kept message, and the write of its metadata (set_delivery).
SELECT_MESSAGE: Final = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {_CONV} AND seq = %(seq)s"
UPDATE_METADATA: Final = (
    f"UPDATE messages SET metadata_json = %(meta)s WHERE {_CONV} AND seq = %(seq)s"
)
#: The kept message of one caller key (message_by_key).
KEPT_KEY: Final = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {_CONV} AND idem_key = %(key)s"
#: Inserts a batch of messages (one array per column); one statement.
INSERT_MESSAGES: Final = Unread(
    f"INSERT INTO messages (tenant, {MESSAGE_COLUMNS}) SELECT %(tenant)s, %(id)s, * FROM unnest("
    "%(seqs)s::bigint[], %(roles)s::text[], %(contents)s::bytea[], %(times)s::bigint[], "
    "%(metadata)s::text[], %(keys)s::text[], %(payloads)s::text[], %(links)s::smallint[])"
)
#: Trims to whole exchanges from seq %(from)s (``history.trim_start``: the first message at
#: or after it that answers no earlier call and follows none leaving a call open), counts
#: what is kept, and keeps user idempotency keys replayable; answers the cut seq (NULL:
#: nothing trimmed). One statement (migration 8's ``trim_messages``, which APPEND calls too).
TRIM_MESSAGES: Final = "SELECT trim_messages(%(tenant)s, %(id)s, %(from)s)"
#: An append in one statement (migration 13's ``append_message_v2``, 8's ``append_message``
#: with a named result type; its body migration 14's): locks the conversation (by
#: id alone when %(tenant)s is NULL) and, when it is live, looks up %(key)s if %(look_up)s.
#: Without a look-up it reads the row unlocked and writes only over that very version (its
#: UPDATE's lock; the locked path again when the version changed or no append was made).
#: Only if no message has that key, its status is one of %(sources)s and the fence (if any)
#: is the live lease, it writes what ``decide.append`` would: the message (seq last_seq + 1,
#: key %(key)s), the row (status the matching %(targets)s, activity, expiry and idle time
#: slid, count, last seq), the trim past ``max_messages`` (``trim_messages``) and the events
#: (%(appended)s; %(changes)s with %(change_data)s when the status changes), and answers
#: written = true. Otherwise it writes nothing. Either way one row: written, the row as
#: locked before the write (``LOCK_CONVERSATION``'s columns), then the stored message of the
#: key (``MESSAGE_COLUMNS``; NULLs when none); no row when there is no such conversation.
#: The flow judges that answer with ``decide.append`` whatever it was.
APPEND: Final = Closing(
    "SELECT * FROM append_message_v2(%(tenant)s::text, %(id)s::text, %(now)s::bigint, "
    "%(key)s::text, %(look_up)s::boolean, %(fence)s::bigint, %(sources)s::text[], "
    "%(targets)s::text[], %(changes)s::text[], %(change_data)s::text[], %(appended)s::text, "
    "%(role)s::text, %(content)s::bytea, %(metadata_json)s::text, %(payload)s::text, "
    "%(link)s::smallint, %(keep)s::bigint)"
)
#: The common append in one statement of the client's, no function (one plan, one executor
#: start; docs/performance.md, "The PostgreSQL append as one statement"): for a keyless first
#: try (no key to look up) with %(keep)s >= 1. Its UPDATE locks the conversation (by id
#: alone, where no other tenant holds the id, or with %(tenant)s) and takes the next seq only
#: if the row it locked (READ COMMITTED re-checks the condition on the newest version) is
#: live, its status is one of %(stay)s (those ``on_message`` keeps: no status change, no
#: second event) and the fence, if any, is the live lease. Then, in the function's order
#: (each part reads the one before; the answer's columns are computed left to right): the
#: message (key %(key)s) and the session's NOTIFY flags; the trim past ``max_messages``
#: (``trim_messages``, in the answer, when the count passed it); the log's shared lock keyed
#: below the id drawn (``EMIT``) and the event (%(appended)s, ``append_message_v2``'s data);
#: the delete of the event %(keep)s ids older, and its floor raised when that delete found
#: the event. When it found none (an erasure replaced it with a placeholder this snapshot
#: cannot see) the answer's last column is that id, and the flow looks again in a statement
#: of its own (``TRIM_LOG_AGAIN``), as the function's second DELETE does. The floor by ``ON
#: CONFLICT`` on its key: an index probe, where the planner scans the 64 rows. Answers the
#: row as written (``CONVERSATION_COLUMNS``), or no row and nothing written: the flow then
#: calls ``APPEND``.
#: Upgrades: this is a third copy of the append's writes (after ``append_message_v2`` and
#: ``_EMIT_13``), sent by the client: a migration that changes what an append writes must
#: also keep what running workers of the previous version send here working.
_APPEND_ONE: Final = (
    "WITH u AS (UPDATE conversations SET activity_us = %(now)s::bigint, "
    "expires_us = %(now)s::bigint + ttl_us, idle_us = %(now)s::bigint + idle_after_us, "
    "message_count = message_count + 1, last_seq = last_seq + 1 WHERE {row} "
    "AND (expires_us IS NULL OR expires_us > %(now)s::bigint) "
    "AND status = ANY(%(stay)s::text[]) "
    "AND (%(fence)s::bigint IS NULL OR (lease_token = %(fence)s::bigint "
    "AND lease_until_us > %(now)s::bigint)) "
    f"RETURNING {CONVERSATION_COLUMNS}), "
    "m AS (INSERT INTO messages (tenant, conversation_id, seq, role, content, created_us, "
    "metadata_json, idem_key, payload, link) SELECT tenant, id, last_seq, %(role)s::text, "
    "%(content)s::bytea, %(now)s::bigint, %(metadata_json)s::text, %(key)s::text, "
    "%(payload)s::text, %(link)s::smallint FROM u RETURNING tenant, conversation_id, seq, "
    "set_config('threadkeep.emitted', 'on', false), set_config('threadkeep.notify', "
    "CASE coalesce(current_setting('threadkeep.notify', true), '') "
    "WHEN '' THEN CASE WHEN octet_length(tenant) < 7000 THEN 't:' || tenant ELSE '*' END "
    "WHEN 't:' || tenant THEN 't:' || tenant ELSE '*' END, false)), "
    "e AS (INSERT INTO events (kind, tenant, conversation_id, data_json, at_us) "
    "SELECT %(appended)s::text, tenant, conversation_id, "
    """format('{{"seq":%%s,"role":%%s}}', seq, to_json(%(role)s::text)), %(now)s::bigint """
    "FROM m CROSS JOIN LATERAL "
    "(SELECT pg_advisory_xact_lock_shared(events_tag() | events_drawn())) AS l "
    "RETURNING id - %(keep)s::bigint AS gone), "
    "d AS (DELETE FROM events WHERE id = (SELECT gone FROM e) RETURNING id), "
    "f AS (INSERT INTO events_floors AS f (shard, floor) SELECT gone %% 64, gone FROM e "
    "WHERE EXISTS (SELECT FROM d) "
    "ON CONFLICT (shard) DO UPDATE SET floor = excluded.floor WHERE f.floor < excluded.floor) "
    "SELECT *, CASE WHEN message_count > max_messages AND EXISTS (SELECT FROM m) "
    "THEN trim_messages(tenant, id, last_seq - max_messages + 1) END, "
    "(SELECT gone FROM e WHERE NOT EXISTS (SELECT FROM d)) FROM u"
)
#: ``APPEND_ONE``'s trim of the log found no event %(gone)s ids older: look again, as
#: ``append_message_v2``'s second DELETE does, in a statement of its own (a new snapshot: an
#: erasure that replaced that event while the first waited on it committed a placeholder the
#: first could not see); the floor raised when it deletes one.
TRIM_LOG_AGAIN: Final = Quiet(
    "WITH x AS (DELETE FROM events WHERE id = %(gone)s RETURNING id) "
    "UPDATE events_floors SET floor = %(gone)s WHERE shard = %(gone)s %% 64 "
    "AND floor < %(gone)s AND EXISTS (SELECT FROM x)"
)
#: Sent before ``APPEND_ONE`` in its transaction: its statements find rows by key, and on a
#: small analyzed table the planner costs a sequential scan of ``conversations`` below the
#: key's probe (~150k instructions at 100 conversations; the functions carry the same
#: setting as a ``SET`` clause). ``set_config(…, true)``, not ``SET LOCAL``: the append's
#: transaction is an implicit one (no BEGIN), where ``SET LOCAL`` works but raises a WARNING
#: ("can only be used in transaction blocks") into the server's log at every append.
INDEX_SCANS: Final = Unread("SELECT set_config('enable_seqscan', 'off', true)")
APPEND_ONE: Final = Routed(
    Closing(_APPEND_ONE.format(row="tenant = %(tenant)s AND id = %(id)s")),
    # by bare id, only where no other tenant holds the id (a transfer's race can leave two
    # rows of one id: the function appends to one; this statement would update both)
    Closing(
        _APPEND_ONE.format(
            row="id = %(id)s AND NOT EXISTS (SELECT FROM conversations o "
            "WHERE o.id = %(id)s AND o.tenant <> conversations.tenant)"
        )
    ),
)
NEWEST: Final = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {_CONV} ORDER BY seq DESC LIMIT 1"
#: pop_last, clear_messages and replace_messages delete the kept messages from a seq on.
DELETE_FROM: Final = f"DELETE FROM messages WHERE {_CONV} AND seq >= %(from)s"


def _last(size: str, columns: str = "") -> Routed:
    """The live conversation's last ``size`` messages in one statement, newest first.

    No row at all when it is not found, one row of NULLs when it has no messages. Seqs are
    contiguous (trimming removes the oldest), so the last N are a bounded range. Each row is
    ``MESSAGE_COLUMNS`` less the conversation id (the caller's), then ``columns``.
    """
    return _routed_join(
        "SELECT m.seq, m.role, m.content, m.created_us, m.metadata_json, m.idem_key, "
        f"m.payload, m.link{columns} FROM conversations c LEFT JOIN LATERAL "
        "(SELECT * FROM messages WHERE tenant = {tenant} AND conversation_id = c.id "
        f"AND seq > c.last_seq - {size} ORDER BY seq DESC LIMIT {size}) m ON true "
        "WHERE {row} AND (c.expires_us IS NULL OR c.expires_us > %(now)s)"
    )


#: ``messages(last=n)``: the last %(n)s messages (``decode_window``), 8 columns.
LAST: Final = _last("%(n)s::bigint")
#: ``context()``: its window and %(extra)s more, each row followed by the window size.
WINDOW: Final = _last("(c.window_n + %(extra)s)", ", c.window_n")
READ_AFTER: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {_CONV} AND seq > %(after)s "
    "ORDER BY seq LIMIT %(n)s"
)
#: The newest %(n)s messages below a seq, newest first.
READ_BEFORE: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {_CONV} "
    "AND seq < %(before)s ORDER BY seq DESC LIMIT %(n)s"
)
#: Appends one event, deletes the event ``keep`` ids older (its own trim: each id is trimmed
#: by exactly one writer, so concurrent writers never delete the same row) and, when it
#: deleted a row (an event, or the placeholder an erasure left at its id), raises the floor
#: row of that id's remainder to it; an id that never became an event raises nothing (8's
#: function raised it for any id, so a reader whose next ids were all such gaps expired);
#: when that DELETE found nothing, a second one looks again (an erasure that replaced the
#: event while the first waited on it committed a placeholder the first could not see); one
#: statement (migration 10's ``emit_event``).
#: The first event of a transaction (%(n)s = 0) first takes a shared advisory lock keyed by
#: the highest id drawn so far (``events_tag() | events_drawn()``), held to the
#: transaction's end: every id the transaction draws is above its key. Shared locks do not
#: wait for each other, so concurrent writers commit in parallel; ``read_events`` returns no
#: id above the lowest key still held, so a cursor never skips an event committed late.
#: Listeners are woken after the commit (``NOTIFY``): a NOTIFY in the transaction would take
#: PostgreSQL's notify lock at pre-commit and hold it through the commit's WAL flush,
#: serializing commits again.
EMIT: Final = Unread(
    "SELECT emit_event(%(kind)s, %(tenant)s, %(cid)s, %(data)s, %(at)s, %(keep)s, %(n)s)"
)
#: Wakes the store's LISTEN sessions; sent after a commit that may have written events (in
#: autocommit: a transaction that writes nothing commits without waiting for a flush). It
#: notifies only when the session's write logged events, and clears the flag: migration 9's
#: ``emit_event`` sets ``threadkeep.emitted`` (a rollback undoes it), so an append that wrote
#: nothing (a replay, a closed conversation) wakes nobody and takes no transaction id. Either
#: plan is right: the test may gate the subquery (then it clears only a set flag) or filter
#: its row (then it clears an unset one too; a stale ``threadkeep.notify`` left behind only
#: widens the next payload to '*'). The payload is migration 11's ``threadkeep.notify``:
#: whom the write concerns (``_listen.concerns``).
NOTIFY: Final = (
    "SELECT pg_notify(%(chan)s, s.concerns) FROM (SELECT current_setting('threadkeep.emitted', "
    "true) = 'on' AS emitted, coalesce(current_setting('threadkeep.notify', true), '') AS "
    "concerns, set_config('threadkeep.emitted', '', false), set_config('threadkeep.notify', "
    "'', false)) s WHERE s.emitted"
)
#: ``NOTIFY`` as a flow's own step, after a ``Quiet`` statement whose answer says it logged an
#: event (resume's): the first statement of a pass of its own, so it runs outside the write's
#: transaction, in an implicit one of its own.
WAKE: Final = Quiet(NOTIFY)
#: The conversations (tenant, id) of the arrays %(tenants)s and %(ids)s, pairwise; the
#: tenants are named again as a list, so a single tenant's call stays on one shard.
_PAIRS: Final = (
    "tenant = ANY(%(tenants)s) AND (tenant, {column}) IN "
    "(SELECT * FROM unnest(%(tenants)s::text[], %(ids)s::text[]))"
)
#: Deletes up to %(n)s messages of the given conversations (sweep's bounded bite).
PURGE_MESSAGES: Final = (
    "DELETE FROM messages WHERE (tenant, conversation_id, seq) IN (SELECT tenant, "
    f"conversation_id, seq FROM messages WHERE {_PAIRS.format(column='conversation_id')} "
    "LIMIT %(n)s) RETURNING 1"
)
#: The log's floor (the highest id trimmed), up to %(n)s events after the cursor (after the
#: floor when it is NULL) that no open transaction can precede, and whether committed events
#: after them are held back (a transaction that drew a lower id has not ended: read again
#: soon); one row of (floor, NULLs, held) when there are none. The lowest key among the
#: writers' locks is read before the events, in a statement of its own (its own snapshot):
#: an id at or below it was drawn by a transaction that had ended before that statement.
READ_EVENTS: Final = Routed(
    "SELECT * FROM read_events(%(after)s, %(tenant)s, %(n)s)",
    "SELECT * FROM read_events(%(after)s, NULL, %(n)s)",
)
#: Each erased event leaves a placeholder at its id (migration 9: tenant '', which no read
#: returns), which the log's trim deletes in its turn and so raises the floor past it: a
#: cursor from before an erased event expires when that event's trim comes, and an id that
#: never became an event (no row to delete) raises nothing. A placeholder whose id was
#: trimmed already (the event was uncommitted then) is sweep's (``PURGE_BELOW_FLOOR``).
_ERASE_EVENTS: Final = (
    f"WITH gone AS (DELETE FROM events WHERE {_PAIRS.format(column='conversation_id')} "
    "RETURNING id), kept AS (INSERT INTO events (id, kind, tenant, conversation_id, "
    "data_json, at_us) OVERRIDING SYSTEM VALUE SELECT id, '', '', '', '', 0 FROM gone) "
    "SELECT count(*) FROM gone"
)
ERASE: Final = tuple(
    _ERASE_EVENTS
    if table == "events"
    else f"WITH gone AS (DELETE FROM {table} WHERE {_PAIRS.format(column=column)} RETURNING 1) "
    "SELECT count(*) FROM gone"
    for table, column in (
        ("messages", "conversation_id"),
        ("idem_archive", "conversation_id"),
        ("states", "conversation_id"),
        ("events", "conversation_id"),
        ("conversations", "id"),
    )
)
#: What each statement of ``ERASE`` removes (each answers how many rows it removed).
ERASED: Final = ("messages", "archived", "states", "events", "conversations")

# ---- statements the flows used to hold inline --------------------------------------------

#: Serializes resume() of one contact, or remember() of one fact: FOR UPDATE cannot lock a row
#: that does not exist yet (the advisory lock is held to commit).
LOCK_CONTACT: Final = Unread("SELECT pg_advisory_xact_lock(hashtextextended(%(k)s, 0))")
LIST: Final = (
    f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {{where}} "
    "ORDER BY activity_us DESC, id DESC LIMIT %(n)s"
)
#: The tenant's counters (migration 6) less its expired rows sweep has not erased yet: the
#: cost is the counters' few rows plus the store's unswept backlog, not the tenant's size.
#: ``tenant || ''`` keeps the planner on the expiry index (never a walk of the tenant's rows).
COUNTS: Final = (
    "SELECT status, stage, sum(n)::bigint FROM (SELECT status, stage, n "
    "FROM conversation_counts WHERE tenant = %(tenant)s UNION ALL SELECT status, stage, -1 "
    "FROM conversations WHERE expires_us <= %(now)s AND tenant || '' = %(tenant)s) t "
    "GROUP BY status, stage HAVING sum(n) > 0"
)
#: The contact's conversations, locked in creation order (erasure events in that order).
LOCK_CONTACT_CONVERSATIONS: Final = (
    "SELECT id, expires_us FROM conversations WHERE tenant = %(tenant)s "
    "AND contact_id = %(contact)s ORDER BY created_us, id FOR UPDATE"
)
FORGET_CONTACT: Final = (
    "WITH gone AS (DELETE FROM facts WHERE tenant = %(tenant)s AND contact_id = %(contact)s "
    "RETURNING 1) SELECT count(*) FROM gone"
)
SELECT_STATE: Final = f"SELECT {STATE_COLUMNS} FROM states WHERE {_CONV} AND version = %(v)s"
_LOAD_STATE: Final = (
    "SELECT s.version, s.value_json, s.saved_us FROM conversations c LEFT JOIN LATERAL "
    "(SELECT version, value_json, saved_us FROM states WHERE tenant = {tenant} "
    "AND conversation_id = c.id AND version = coalesce(%(v)s::bigint, c.state_version)) s "
    "ON true WHERE {row} AND (c.expires_us IS NULL OR c.expires_us > %(now)s)"
)
#: The live conversation (no row: not found) and the state version asked for (NULL: the
#: current one) in one statement; its columns are NULL when no such version is kept.
LOAD_STATE: Final = _routed_join(_LOAD_STATE)
#: A state save's writes in one statement: the new version, the versions past those kept,
#: and what the save changes in the conversation row.
SAVE_STATE: Final = Unread(
    "WITH s AS (INSERT INTO states (tenant, conversation_id, version, value_json, saved_us) "
    "VALUES (%(tenant)s, %(id)s, %(v)s, %(value)s, %(now)s)), "
    f"t AS (DELETE FROM states WHERE {_CONV} AND version <= %(floor)s) "
    "UPDATE conversations SET state_version = %(v)s, activity_us = %(activity_us)s, "
    "expires_us = %(expires_us)s, idle_us = %(idle_us)s "
    "WHERE tenant = %(tenant)s AND id = %(id)s"
)
#: save_state()'s row lock, sent without waiting for its answer (``SAVE``, the next
#: statement, answers the row it locked). SKIP LOCKED: a busy row is not waited for inside
#: the flush that carries COMMIT (a session lost while waiting would be taken for a commit of
#: unknown outcome); the transaction notes whether it got the lock (threadkeep.locked), SAVE
#: writes only then, and the flow takes a busy row in a pass of its own (``_save_locked``).
LOCK_FOR_SAVE: Final = Routed(
    Unread(
        "SELECT set_config('threadkeep.locked', count(*)::text, true) FROM (SELECT FROM "
        "conversations WHERE tenant = %(tenant)s AND id = %(id)s FOR UPDATE SKIP LOCKED) l"
    ),
    Unread(
        "SELECT set_config('threadkeep.locked', count(*)::text, true) FROM (SELECT FROM "
        "conversations WHERE id = %(id)s FOR UPDATE SKIP LOCKED) l"
    ),
)
#: A state save in one statement, behind LOCK_FOR_SAVE (so in a snapshot taken with the row
#: locked: every version a save committed before is seen). It writes only what
#: ``decide.save_state`` would: when the conversation is live, the current version is
#: %(expected)s (if given) and, for a rollback, version %(to)s is kept, it inserts version
#: current + 1 (%(value)s, or version %(to)s's value), deletes the versions past the newest
#: %(kept)s, slides the row's activity, expiry and idle time to %(now)s with the new
#: version, and logs the event (%(kind)s, ``{"version":N}``). One row when the conversation
#: exists (none otherwise): whether it wrote, the row as locked before the write
#: (``LOCK_CONVERSATION``'s columns), then version %(to)s's value (NULL: not kept, or no
#: rollback). The flow judges that answer with ``decide.save_state`` whatever it was.
_SAVE: Final = (
    f"WITH c AS ({_PEEK}), "
    "r AS (SELECT s.value_json FROM c JOIN states s ON s.tenant = {tenant} "
    "AND s.conversation_id = c.id AND s.version = %(to)s::bigint), "
    "v AS (SELECT c.id, c.state_version + 1 AS version, c.ttl_us, c.idle_after_us, "
    "coalesce((SELECT value_json FROM r), %(value)s::text) AS value FROM c "
    "WHERE (c.expires_us IS NULL OR c.expires_us > %(now)s::bigint) "
    "AND (%(expected)s::bigint IS NULL OR c.state_version = %(expected)s::bigint) "
    "AND (%(to)s::bigint IS NULL OR EXISTS (SELECT FROM r)) "
    "AND current_setting('threadkeep.locked', true) = '1'), "
    "s AS (INSERT INTO states (tenant, conversation_id, version, value_json, saved_us) "
    "SELECT {tenant}, v.id, v.version, v.value, %(now)s::bigint FROM c, v), "
    "t AS (DELETE FROM states d USING v WHERE d.tenant = {tenant} "
    "AND d.conversation_id = v.id AND d.version <= v.version - %(kept)s::bigint), "
    "u AS (UPDATE conversations x SET state_version = v.version, "
    "activity_us = %(now)s::bigint, expires_us = %(now)s::bigint + v.ttl_us, "
    "idle_us = %(now)s::bigint + v.idle_after_us FROM v "
    "WHERE x.tenant = {tenant} AND x.id = v.id), "
    "e AS (SELECT emit_event(%(kind)s::text, {tenant}, v.id, "
    "'{{\"version\":' || v.version || '}}', %(now)s::bigint, %(keep)s::bigint, 0) "
    "FROM c, v) "
    "SELECT (SELECT count(*) FROM e) > 0, c.*, (SELECT value_json FROM r), "
    "current_setting('threadkeep.locked', true) = '1' FROM c"
)
#: The tenant given (its partition named in the plan), or the locked row's (by id alone).
SAVE: Final = Routed(
    Closing(_SAVE.format(row="tenant = %(tenant)s AND id = %(id)s", tenant="%(tenant)s::text")),
    Closing(_SAVE.format(row="id = %(id)s", tenant="(SELECT c.tenant FROM c)")),
)
#: A lease request in one statement: the conversation as the statement's snapshot has it
#: (``LOCK_CONVERSATION``'s columns; no row: not found) and the token it took (NULL: none).
#: It takes the lease (token + 1, until %(u)s) only where ``decide.lease`` would grant it:
#: the row is live and its lease ran out. A row whose lease looks busy in the snapshot is
#: not locked, so waiters polling a busy turn never queue on the row lock of the holder's
#: writes (as the separate peek did, before session 11); one that looks free is locked and
#: checked again on its newest version (READ COMMITTED's re-check of the UPDATE's
#: condition), so of two requests only one takes it.
_TAKE: Final = (
    f"WITH c AS ({_PEEK} LIMIT 1), t AS (UPDATE conversations x SET "
    "lease_token = x.lease_token + 1, lease_until_us = %(u)s FROM c "
    "WHERE x.tenant = {tenant} AND x.id = c.id AND x.lease_until_us <= %(now)s "
    "AND (x.expires_us IS NULL OR x.expires_us > %(now)s) RETURNING x.lease_token) "
    "SELECT c.*, (SELECT lease_token FROM t) FROM c"
)
#: The tenant given names the updated row's partition in the plan (as ``SAVE``'s).
TAKE_LEASE: Final = Routed(
    Quiet(_TAKE.format(row="tenant = %(tenant)s AND id = %(id)s", tenant="%(tenant)s")),
    Quiet(_TAKE.format(row="id = %(id)s", tenant="c.tenant")),
)
#: The conversation as a new statement sees it (READ COMMITTED: the newest committed
#: version), without a lock: a lease request that the rules granted on its snapshot but whose
#: statement took nothing reads it once more (``_lease``).
PEEK_CONVERSATION: Final = _routed(_PEEK)
#: A release names no tenant (ReleaseOp carries none): found by id alone.
RELEASE_LEASE: Final = Quiet(
    "UPDATE conversations SET lease_until_us = 0 WHERE id = %(id)s AND lease_token = %(t)s"
)
REMEMBER: Final = Quiet(
    f"INSERT INTO facts (tenant, contact_id, {FACT_COLUMNS}) VALUES (%(tenant)s, %(contact)s, "
    "%(key)s, %(value)s, %(tier)s, %(now)s, %(exp)s, %(source)s, %(history)s) "
    "ON CONFLICT (tenant, contact_id, key) DO UPDATE SET "
    "value_json = excluded.value_json, tier = excluded.tier, "
    "updated_us = excluded.updated_us, expires_us = excluded.expires_us, "
    "source_json = excluded.source_json, history_json = excluded.history_json"
)
FACT_FOR_UPDATE: Final = (
    f"SELECT {FACT_COLUMNS} FROM facts WHERE tenant = %(tenant)s AND contact_id = %(contact)s "
    "AND key = %(key)s FOR UPDATE"
)
RECALL: Final = (
    f"SELECT {FACT_COLUMNS} FROM facts WHERE tenant = %(tenant)s AND contact_id = %(contact)s "
    "AND (%(key)s::text IS NULL OR key = %(key)s) AND expires_us > %(now)s ORDER BY key"
)

# ---- sweep ------------------------------------------------------------------------------

#: decide.fact_due: the value and every value in its history have expired.
_FACT_DUE: Final = (
    "expires_us <= %(now)s AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements("
    "history_json::jsonb) h WHERE (h->>'expires_us')::bigint > %(now)s)"
)
#: Opens each of sweep's transactions: its statements run from their generic plans. With
#: PostgreSQL's choice (``auto``) it re-planned the expiry probe and the idle ``UPDATE`` on
#: every call at 1,000,000 conversations (custom plans, ~0.18 ms a sweep with nothing due;
#: docs/performance.md, "At scale"), for the same index ranges the generic plans read.
GENERIC_PLANS: Final = Unread("SET LOCAL plan_cache_mode = force_generic_plan")
_IDLE_DUE: Final = f"status = ANY(%(from)s) AND idle_us <= %(now)s AND {LIVE}"
COUNT_DUE: Final = (
    "SELECT (SELECT count(*) FROM conversations WHERE expires_us <= %(now)s), "
    f"(SELECT count(*) FROM conversations WHERE {_IDLE_DUE}), "
    f"(SELECT count(*) FROM facts WHERE {_FACT_DUE})"
)
DUE_PURGE: Final = (
    "SELECT tenant, id FROM conversations WHERE expires_us <= %(now)s "
    "ORDER BY expires_us LIMIT %(n)s FOR UPDATE SKIP LOCKED"
)
#: Marks a batch of one status idle, the longest idle first; returns what each one's event
#: needs. One status and ``ORDER BY idle_us`` make the batch a range of ``conversations_idle
#: (status, idle_us)`` read in index order. Ordered by id, the planner walked the primary key
#: hoping to meet due rows soon (status and idle time look independent to it) and, with none
#: due, read every row: 0.7 s a sweep at 1,000,000 conversations (bench.scale).
MARK_IDLE: Final = (
    "UPDATE conversations c SET status = %(to)s FROM ("
    "SELECT tenant, id, status FROM conversations WHERE status = %(status)s "
    f"AND idle_us <= %(now)s AND {LIVE} ORDER BY idle_us LIMIT %(n)s FOR UPDATE SKIP LOCKED) o "
    "WHERE c.tenant = o.tenant AND c.id = o.id "
    "RETURNING c.created_us, c.id, c.tenant, o.status"
)
PURGE_FACTS: Final = (
    "DELETE FROM facts WHERE (tenant, contact_id, key) IN (SELECT tenant, "
    f"contact_id, key FROM facts WHERE {_FACT_DUE} LIMIT %(n)s "
    "FOR UPDATE SKIP LOCKED) RETURNING 1"
)

#: Deletes up to %(n)s rows at or below the log's floor, lowest first: placeholders (erased
#: events' ids, tenant '') and events. The trim deletes an id's row when its turn comes; a row
#: at or below the floor is one no trim visits again: its event was still uncommitted when
#: its id was trimmed (an event, or the placeholder left when it was erased later). It serves
#: nothing: no read returns an id at or below the floor, which never falls, and a cursor
#: below the floor expires. Without this, such rows stayed for good and the table outgrew
#: ``events_kept`` under concurrent writers. Erasure cannot leave placeholders out itself:
#: the floor it reads may pass the id after it (a later id's trim), and the trim of that id
#: may have come already. An index range of ``events_id`` (each partition's on a partitioned
#: schema); a row being written is skipped (SKIP LOCKED) for the next sweep.
PURGE_BELOW_FLOOR: Final = (
    "DELETE FROM events WHERE (tenant, id) IN (SELECT tenant, id FROM events "
    "WHERE id <= (SELECT max(floor) FROM events_floors) ORDER BY id "
    "LIMIT %(n)s FOR UPDATE SKIP LOCKED) RETURNING 1"
)

# ---- migrations -------------------------------------------------------------------------

LOCK_MIGRATIONS: Final = LOCK_CONTACT
CURRENT_VERSION: Final = "SELECT coalesce(max(version), 0) FROM schema_version"
RECORD_VERSION: Final = "INSERT INTO schema_version (version) VALUES (%(v)s)"
SET_PARTITIONS: Final = "SELECT set_config('threadkeep.partitions', %(n)s, true)"
#: How many hash partitions per table the schema was created with (0: none).
PARTITIONS: Final = "SELECT value FROM meta WHERE key = 'partitions'"


# ---- key rotation: values rewritten in place, each only while it holds what was read ----

REWRITE_MESSAGE: Final = (
    "UPDATE messages SET content = %(content)s, payload = %(payload)s "
    f"WHERE {_CONV} AND seq = %(seq)s AND content = %(old_content)s "
    "AND payload IS NOT DISTINCT FROM %(old_payload)s RETURNING 1"
)
REWRITE_STATE: Final = (
    f"UPDATE states SET value_json = %(value)s WHERE {_CONV} "
    "AND version = %(version)s AND value_json = %(old)s RETURNING 1"
)
REWRITE_FACT: Final = (
    "UPDATE facts SET value_json = %(value)s, history_json = %(history)s "
    "WHERE tenant = %(tenant)s AND contact_id = %(contact)s AND key = %(key)s "
    "AND value_json = %(old_value)s AND history_json = %(old_history)s RETURNING 1"
)
FACT_CONTACTS: Final = (
    "SELECT DISTINCT contact_id FROM facts WHERE tenant = %(tenant)s "
    "AND contact_id > %(cursor)s ORDER BY contact_id LIMIT %(limit)s"
)
ARCHIVED: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM idem_archive WHERE {_CONV} "
    "AND idem_key > %(cursor)s ORDER BY idem_key LIMIT %(limit)s"
)
REWRITE_ARCHIVED: Final = (
    "UPDATE idem_archive SET content = %(content)s, payload = %(payload)s "
    f"WHERE {_CONV} AND idem_key = %(key)s AND content = %(old_content)s "
    "AND payload IS NOT DISTINCT FROM %(old_payload)s RETURNING 1"
)
