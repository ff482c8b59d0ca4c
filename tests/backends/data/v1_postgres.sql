--
-- PostgreSQL database dump
--

\restrict caGLyrXGpMRMBfLBQgiepJBFFQv6rwL46JsQHslmocF0fax6Q0PIUqbXBCSIl0w

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: tk_v1fixture; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA tk_v1fixture;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: conversations; Type: TABLE; Schema: tk_v1fixture; Owner: -
--

CREATE TABLE tk_v1fixture.conversations (
    id text NOT NULL,
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
    message_count integer DEFAULT 0 NOT NULL,
    last_seq bigint DEFAULT 0 NOT NULL,
    state_version integer DEFAULT 0 NOT NULL,
    ttl_us bigint,
    idle_after_us bigint NOT NULL,
    window_n integer NOT NULL,
    max_messages integer,
    lease_token bigint DEFAULT 0 NOT NULL,
    lease_until_us bigint DEFAULT 0 NOT NULL
);


--
-- Name: events; Type: TABLE; Schema: tk_v1fixture; Owner: -
--

CREATE TABLE tk_v1fixture.events (
    id bigint NOT NULL,
    kind text NOT NULL,
    tenant text NOT NULL,
    conversation_id text NOT NULL,
    data_json text NOT NULL,
    at_us bigint NOT NULL
);


--
-- Name: events_id_seq; Type: SEQUENCE; Schema: tk_v1fixture; Owner: -
--

ALTER TABLE tk_v1fixture.events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME tk_v1fixture.events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: facts; Type: TABLE; Schema: tk_v1fixture; Owner: -
--

CREATE TABLE tk_v1fixture.facts (
    tenant text NOT NULL,
    contact_id text NOT NULL,
    key text NOT NULL,
    value_json text NOT NULL,
    tier text NOT NULL,
    updated_us bigint NOT NULL,
    expires_us bigint NOT NULL
);


--
-- Name: idem_archive; Type: TABLE; Schema: tk_v1fixture; Owner: -
--

CREATE TABLE tk_v1fixture.idem_archive (
    conversation_id text NOT NULL,
    idem_key text NOT NULL,
    seq bigint NOT NULL,
    role text NOT NULL,
    content bytea NOT NULL,
    created_us bigint NOT NULL,
    metadata_json text NOT NULL
);


--
-- Name: messages; Type: TABLE; Schema: tk_v1fixture; Owner: -
--

CREATE TABLE tk_v1fixture.messages (
    conversation_id text NOT NULL,
    seq bigint NOT NULL,
    role text NOT NULL,
    content bytea NOT NULL,
    created_us bigint NOT NULL,
    metadata_json text NOT NULL,
    idem_key text
);


--
-- Name: meta; Type: TABLE; Schema: tk_v1fixture; Owner: -
--

CREATE TABLE tk_v1fixture.meta (
    key text NOT NULL,
    value bigint NOT NULL
);


--
-- Name: schema_version; Type: TABLE; Schema: tk_v1fixture; Owner: -
--

CREATE TABLE tk_v1fixture.schema_version (
    version integer NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: states; Type: TABLE; Schema: tk_v1fixture; Owner: -
--

CREATE TABLE tk_v1fixture.states (
    conversation_id text NOT NULL,
    version integer NOT NULL,
    value_json text NOT NULL,
    saved_us bigint NOT NULL
);


--
-- Data for Name: conversations; Type: TABLE DATA; Schema: tk_v1fixture; Owner: -
--

INSERT INTO tk_v1fixture.conversations VALUES ('01m8nk1adm7xx0w79dfqah6335', 't1', 'contact-a', 'bot', 'sms', 'active', 'Q2', '{"phone":"+15550100"}', 1767268800000000, 1767268802000000, NULL, 1767270602000000, 4, 4, 2, NULL, 1800000000, 20, NULL, 0, 0);
INSERT INTO tk_v1fixture.conversations VALUES ('01m8nk1ahs5p3rhjw24ggm473c', 't1', 'contact-b', NULL, NULL, 'closed', NULL, '{}', 1767268802000000, 1767268802000000, NULL, 1767270602000000, 1, 1, 0, NULL, 1800000000, 20, NULL, 0, 0);
INSERT INTO tk_v1fixture.conversations VALUES ('01m8nk1ajete7mt2bka41as00h', 't1', 'contact-c', NULL, NULL, 'active', NULL, '{}', 1767268802000000, 1767268802000000, NULL, 1767270602000000, 2, 4, 0, NULL, 1800000000, 20, 2, 0, 0);


--
-- Data for Name: events; Type: TABLE DATA; Schema: tk_v1fixture; Owner: -
--

INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (1, 'conversation.started', 't1', '01m8nk1adm7xx0w79dfqah6335', '{"contact_id":"contact-a","status":"new","stage":"Q0"}', 1767268800000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (2, 'message.appended', 't1', '01m8nk1adm7xx0w79dfqah6335', '{"seq":1,"role":"user"}', 1767268801000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (3, 'status.changed', 't1', '01m8nk1adm7xx0w79dfqah6335', '{"from":"new","to":"active"}', 1767268801000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (4, 'message.appended', 't1', '01m8nk1adm7xx0w79dfqah6335', '{"seq":2,"role":"assistant"}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (5, 'message.appended', 't1', '01m8nk1adm7xx0w79dfqah6335', '{"seq":3,"role":"tool"}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (6, 'message.appended', 't1', '01m8nk1adm7xx0w79dfqah6335', '{"seq":4,"role":"agent"}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (7, 'state.saved', 't1', '01m8nk1adm7xx0w79dfqah6335', '{"version":1}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (8, 'state.saved', 't1', '01m8nk1adm7xx0w79dfqah6335', '{"version":2}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (9, 'stage.changed', 't1', '01m8nk1adm7xx0w79dfqah6335', '{"from":"Q0","to":"Q2"}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (10, 'conversation.started', 't1', '01m8nk1ahs5p3rhjw24ggm473c', '{"contact_id":"contact-b","status":"new","stage":null}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (11, 'message.appended', 't1', '01m8nk1ahs5p3rhjw24ggm473c', '{"seq":1,"role":"user"}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (12, 'status.changed', 't1', '01m8nk1ahs5p3rhjw24ggm473c', '{"from":"new","to":"active"}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (13, 'conversation.closed', 't1', '01m8nk1ahs5p3rhjw24ggm473c', '{"from":"active","to":"closed"}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (14, 'conversation.started', 't1', '01m8nk1ajete7mt2bka41as00h', '{"contact_id":"contact-c","status":"new","stage":null}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (15, 'message.appended', 't1', '01m8nk1ajete7mt2bka41as00h', '{"seq":1,"role":"user"}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (16, 'status.changed', 't1', '01m8nk1ajete7mt2bka41as00h', '{"from":"new","to":"active"}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (17, 'message.appended', 't1', '01m8nk1ajete7mt2bka41as00h', '{"seq":2,"role":"assistant"}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (18, 'message.appended', 't1', '01m8nk1ajete7mt2bka41as00h', '{"seq":3,"role":"user"}', 1767268802000000);
INSERT INTO tk_v1fixture.events OVERRIDING SYSTEM VALUE VALUES (19, 'message.appended', 't1', '01m8nk1ajete7mt2bka41as00h', '{"seq":4,"role":"assistant"}', 1767268802000000);


--
-- Data for Name: facts; Type: TABLE DATA; Schema: tk_v1fixture; Owner: -
--

INSERT INTO tk_v1fixture.facts VALUES ('t1', 'contact-a', 'prefers', '"text"', 'critical', 1767268802000000, 1798804802000000);


--
-- Data for Name: idem_archive; Type: TABLE DATA; Schema: tk_v1fixture; Owner: -
--

INSERT INTO tk_v1fixture.idem_archive VALUES ('01m8nk1ajete7mt2bka41as00h', 'k0', 1, 'user', '\x6d30', 1767268802000000, '{}');
INSERT INTO tk_v1fixture.idem_archive VALUES ('01m8nk1ajete7mt2bka41as00h', 'k1', 2, 'assistant', '\x6d31', 1767268802000000, '{}');


--
-- Data for Name: messages; Type: TABLE DATA; Schema: tk_v1fixture; Owner: -
--

INSERT INTO tk_v1fixture.messages VALUES ('01m8nk1adm7xx0w79dfqah6335', 1, 'user', '\x48692c20492077616e7420746f2073656c6c0a6d7920686f757365', 1767268801000000, '{"via":"sms"}', 'wamid.1');
INSERT INTO tk_v1fixture.messages VALUES ('01m8nk1adm7xx0w79dfqah6335', 2, 'assistant', '\x47726561742120576861742069732074686520616464726573733f', 1767268802000000, '{}', 'e823b325a9e24e41a59570a910ee2ab8');
INSERT INTO tk_v1fixture.messages VALUES ('01m8nk1adm7xx0w79dfqah6335', 3, 'tool', '\x657374696d6174653a203435306b', 1767268802000000, '{}', 'f5ecfea6894a4fdba1f8ebd3254609e3');
INSERT INTO tk_v1fixture.messages VALUES ('01m8nk1adm7xx0w79dfqah6335', 4, 'agent', '\x4a6f72676520686572652e', 1767268802000000, '{}', 'e315f7b234b544b8bca5c6fa8cce7708');
INSERT INTO tk_v1fixture.messages VALUES ('01m8nk1ahs5p3rhjw24ggm473c', 1, 'user', '\x73746f70', 1767268802000000, '{}', '3866befc75134e249c6345f69f32e81d');
INSERT INTO tk_v1fixture.messages VALUES ('01m8nk1ajete7mt2bka41as00h', 3, 'user', '\x6d32', 1767268802000000, '{}', 'k2');
INSERT INTO tk_v1fixture.messages VALUES ('01m8nk1ajete7mt2bka41as00h', 4, 'assistant', '\x6d33', 1767268802000000, '{}', 'k3');


--
-- Data for Name: meta; Type: TABLE DATA; Schema: tk_v1fixture; Owner: -
--

INSERT INTO tk_v1fixture.meta VALUES ('events_floor', 0);


--
-- Data for Name: schema_version; Type: TABLE DATA; Schema: tk_v1fixture; Owner: -
--

INSERT INTO tk_v1fixture.schema_version VALUES (1, '2026-11-30 06:42:19.022339+00');
INSERT INTO tk_v1fixture.schema_version VALUES (2, '2026-11-30 06:42:19.022339+00');


--
-- Data for Name: states; Type: TABLE DATA; Schema: tk_v1fixture; Owner: -
--

INSERT INTO tk_v1fixture.states VALUES ('01m8nk1adm7xx0w79dfqah6335', 1, '{"budget":450000,"motivation":"move"}', 1767268802000000);
INSERT INTO tk_v1fixture.states VALUES ('01m8nk1adm7xx0w79dfqah6335', 2, '{"budget":460000}', 1767268802000000);


--
-- Name: events_id_seq; Type: SEQUENCE SET; Schema: tk_v1fixture; Owner: -
--

SELECT pg_catalog.setval('tk_v1fixture.events_id_seq', 19, true);


--
-- Name: conversations conversations_pkey; Type: CONSTRAINT; Schema: tk_v1fixture; Owner: -
--

ALTER TABLE ONLY tk_v1fixture.conversations
    ADD CONSTRAINT conversations_pkey PRIMARY KEY (id);


--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: tk_v1fixture; Owner: -
--

ALTER TABLE ONLY tk_v1fixture.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (id);


--
-- Name: facts facts_pkey; Type: CONSTRAINT; Schema: tk_v1fixture; Owner: -
--

ALTER TABLE ONLY tk_v1fixture.facts
    ADD CONSTRAINT facts_pkey PRIMARY KEY (tenant, contact_id, key);


--
-- Name: idem_archive idem_archive_pkey; Type: CONSTRAINT; Schema: tk_v1fixture; Owner: -
--

ALTER TABLE ONLY tk_v1fixture.idem_archive
    ADD CONSTRAINT idem_archive_pkey PRIMARY KEY (conversation_id, idem_key);


--
-- Name: messages messages_pkey; Type: CONSTRAINT; Schema: tk_v1fixture; Owner: -
--

ALTER TABLE ONLY tk_v1fixture.messages
    ADD CONSTRAINT messages_pkey PRIMARY KEY (conversation_id, seq);


--
-- Name: meta meta_pkey; Type: CONSTRAINT; Schema: tk_v1fixture; Owner: -
--

ALTER TABLE ONLY tk_v1fixture.meta
    ADD CONSTRAINT meta_pkey PRIMARY KEY (key);


--
-- Name: schema_version schema_version_pkey; Type: CONSTRAINT; Schema: tk_v1fixture; Owner: -
--

ALTER TABLE ONLY tk_v1fixture.schema_version
    ADD CONSTRAINT schema_version_pkey PRIMARY KEY (version);


--
-- Name: states states_pkey; Type: CONSTRAINT; Schema: tk_v1fixture; Owner: -
--

ALTER TABLE ONLY tk_v1fixture.states
    ADD CONSTRAINT states_pkey PRIMARY KEY (conversation_id, version);


--
-- Name: conversations_agent_page; Type: INDEX; Schema: tk_v1fixture; Owner: -
--

CREATE INDEX conversations_agent_page ON tk_v1fixture.conversations USING btree (tenant, agent_id, activity_us DESC, id DESC);


--
-- Name: conversations_contact_page; Type: INDEX; Schema: tk_v1fixture; Owner: -
--

CREATE INDEX conversations_contact_page ON tk_v1fixture.conversations USING btree (tenant, contact_id, activity_us DESC, id DESC);


--
-- Name: conversations_expiry; Type: INDEX; Schema: tk_v1fixture; Owner: -
--

CREATE INDEX conversations_expiry ON tk_v1fixture.conversations USING btree (expires_us) WHERE (expires_us IS NOT NULL);


--
-- Name: conversations_idle; Type: INDEX; Schema: tk_v1fixture; Owner: -
--

CREATE INDEX conversations_idle ON tk_v1fixture.conversations USING btree (idle_us);


--
-- Name: conversations_page; Type: INDEX; Schema: tk_v1fixture; Owner: -
--

CREATE INDEX conversations_page ON tk_v1fixture.conversations USING btree (tenant, activity_us DESC, id DESC);


--
-- Name: conversations_stage_page; Type: INDEX; Schema: tk_v1fixture; Owner: -
--

CREATE INDEX conversations_stage_page ON tk_v1fixture.conversations USING btree (tenant, stage, activity_us DESC, id DESC);


--
-- Name: conversations_status_page; Type: INDEX; Schema: tk_v1fixture; Owner: -
--

CREATE INDEX conversations_status_page ON tk_v1fixture.conversations USING btree (tenant, status, activity_us DESC, id DESC);


--
-- Name: events_conversation; Type: INDEX; Schema: tk_v1fixture; Owner: -
--

CREATE INDEX events_conversation ON tk_v1fixture.events USING btree (conversation_id);


--
-- Name: events_tenant; Type: INDEX; Schema: tk_v1fixture; Owner: -
--

CREATE INDEX events_tenant ON tk_v1fixture.events USING btree (tenant, id);


--
-- Name: facts_expiry; Type: INDEX; Schema: tk_v1fixture; Owner: -
--

CREATE INDEX facts_expiry ON tk_v1fixture.facts USING btree (expires_us);


--
-- Name: messages_idem; Type: INDEX; Schema: tk_v1fixture; Owner: -
--

CREATE UNIQUE INDEX messages_idem ON tk_v1fixture.messages USING btree (conversation_id, idem_key) WHERE (idem_key IS NOT NULL);


--
-- PostgreSQL database dump complete
--

\unrestrict caGLyrXGpMRMBfLBQgiepJBFFQv6rwL46JsQHslmocF0fax6Q0PIUqbXBCSIl0w

