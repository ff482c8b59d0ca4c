BEGIN TRANSACTION;
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
INSERT INTO "conversations" VALUES('01m8nk19gnxbsnbxqf11n2946m','t1','contact-a','bot','sms','active','Q2','{"phone":"+15550100"}',1767268800000000,1767268802000000,NULL,1767270602000000,4,4,2,NULL,1800000000,20,NULL,0,0);
INSERT INTO "conversations" VALUES('01m8nk19m09hwf969kwpxwhxv6','t1','contact-b',NULL,NULL,'closed',NULL,'{}',1767268802000000,1767268802000000,NULL,1767270602000000,1,1,0,NULL,1800000000,20,NULL,0,0);
INSERT INTO "conversations" VALUES('01m8nk19m1q4z31y95rm3z7n6c','t1','contact-c',NULL,NULL,'active',NULL,'{}',1767268802000000,1767268802000000,NULL,1767270602000000,2,4,0,NULL,1800000000,20,2,0,0);
CREATE TABLE events (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant          TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        kind            TEXT NOT NULL,
        data            TEXT NOT NULL,
        at_us           INTEGER NOT NULL
    );
INSERT INTO "events" VALUES(1,'t1','01m8nk19gnxbsnbxqf11n2946m','conversation.started','{"contact_id":"contact-a","status":"new","stage":"Q0"}',1767268800000000);
INSERT INTO "events" VALUES(2,'t1','01m8nk19gnxbsnbxqf11n2946m','message.appended','{"seq":1,"role":"user"}',1767268801000000);
INSERT INTO "events" VALUES(3,'t1','01m8nk19gnxbsnbxqf11n2946m','status.changed','{"from":"new","to":"active"}',1767268801000000);
INSERT INTO "events" VALUES(4,'t1','01m8nk19gnxbsnbxqf11n2946m','message.appended','{"seq":2,"role":"assistant"}',1767268802000000);
INSERT INTO "events" VALUES(5,'t1','01m8nk19gnxbsnbxqf11n2946m','message.appended','{"seq":3,"role":"tool"}',1767268802000000);
INSERT INTO "events" VALUES(6,'t1','01m8nk19gnxbsnbxqf11n2946m','message.appended','{"seq":4,"role":"agent"}',1767268802000000);
INSERT INTO "events" VALUES(7,'t1','01m8nk19gnxbsnbxqf11n2946m','state.saved','{"version":1}',1767268802000000);
INSERT INTO "events" VALUES(8,'t1','01m8nk19gnxbsnbxqf11n2946m','state.saved','{"version":2}',1767268802000000);
INSERT INTO "events" VALUES(9,'t1','01m8nk19gnxbsnbxqf11n2946m','stage.changed','{"from":"Q0","to":"Q2"}',1767268802000000);
INSERT INTO "events" VALUES(10,'t1','01m8nk19m09hwf969kwpxwhxv6','conversation.started','{"contact_id":"contact-b","status":"new","stage":null}',1767268802000000);
INSERT INTO "events" VALUES(11,'t1','01m8nk19m09hwf969kwpxwhxv6','message.appended','{"seq":1,"role":"user"}',1767268802000000);
INSERT INTO "events" VALUES(12,'t1','01m8nk19m09hwf969kwpxwhxv6','status.changed','{"from":"new","to":"active"}',1767268802000000);
INSERT INTO "events" VALUES(13,'t1','01m8nk19m09hwf969kwpxwhxv6','conversation.closed','{"from":"active","to":"closed"}',1767268802000000);
INSERT INTO "events" VALUES(14,'t1','01m8nk19m1q4z31y95rm3z7n6c','conversation.started','{"contact_id":"contact-c","status":"new","stage":null}',1767268802000000);
INSERT INTO "events" VALUES(15,'t1','01m8nk19m1q4z31y95rm3z7n6c','message.appended','{"seq":1,"role":"user"}',1767268802000000);
INSERT INTO "events" VALUES(16,'t1','01m8nk19m1q4z31y95rm3z7n6c','status.changed','{"from":"new","to":"active"}',1767268802000000);
INSERT INTO "events" VALUES(17,'t1','01m8nk19m1q4z31y95rm3z7n6c','message.appended','{"seq":2,"role":"assistant"}',1767268802000000);
INSERT INTO "events" VALUES(18,'t1','01m8nk19m1q4z31y95rm3z7n6c','message.appended','{"seq":3,"role":"user"}',1767268802000000);
INSERT INTO "events" VALUES(19,'t1','01m8nk19m1q4z31y95rm3z7n6c','message.appended','{"seq":4,"role":"assistant"}',1767268802000000);
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
INSERT INTO "facts" VALUES('t1','contact-a','prefers','"text"','critical',1767268802000000,1798804802000000);
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
INSERT INTO "messages" VALUES('01m8nk19gnxbsnbxqf11n2946m',1,'user','Hi, I want to sell
my house',1767268801000000,'{"via":"sms"}','wamid.1');
INSERT INTO "messages" VALUES('01m8nk19gnxbsnbxqf11n2946m',2,'assistant','Great! What is the address?',1767268802000000,'{}',NULL);
INSERT INTO "messages" VALUES('01m8nk19gnxbsnbxqf11n2946m',3,'tool','estimate: 450k',1767268802000000,'{}',NULL);
INSERT INTO "messages" VALUES('01m8nk19gnxbsnbxqf11n2946m',4,'agent','Jorge here.',1767268802000000,'{}',NULL);
INSERT INTO "messages" VALUES('01m8nk19m09hwf969kwpxwhxv6',1,'user','stop',1767268802000000,'{}',NULL);
INSERT INTO "messages" VALUES('01m8nk19m1q4z31y95rm3z7n6c',3,'user','m2',1767268802000000,'{}','k2');
INSERT INTO "messages" VALUES('01m8nk19m1q4z31y95rm3z7n6c',4,'assistant','m3',1767268802000000,'{}','k3');
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO "meta" VALUES('events_floor',0);
CREATE TABLE states (
        conversation_id TEXT NOT NULL,
        version         INTEGER NOT NULL,
        value           TEXT NOT NULL,
        saved_us        INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, version)
    ) WITHOUT ROWID;
INSERT INTO "states" VALUES('01m8nk19gnxbsnbxqf11n2946m',1,'{"budget":450000,"motivation":"move"}',1767268802000000);
INSERT INTO "states" VALUES('01m8nk19gnxbsnbxqf11n2946m',2,'{"budget":460000}',1767268802000000);
CREATE INDEX conv_by_activity ON conversations (tenant, activity_us, id);
CREATE INDEX conv_by_status ON conversations (tenant, status, activity_us, id);
CREATE INDEX conv_by_stage ON conversations (tenant, stage, activity_us, id);
CREATE INDEX conv_by_contact ON conversations (tenant, contact_id, activity_us, id);
CREATE INDEX conv_by_expiry ON conversations (expires_us) WHERE expires_us IS NOT NULL;
CREATE INDEX conv_by_idle ON conversations (status, idle_us);
CREATE UNIQUE INDEX messages_by_key ON messages (conversation_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_by_tenant ON events (tenant, id);
CREATE INDEX events_by_conversation ON events (conversation_id);
CREATE INDEX facts_by_expiry ON facts (expires_us);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('events',19);
COMMIT;
PRAGMA user_version=1;
