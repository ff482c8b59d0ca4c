"""Redis scripts: one EVALSHA per change, one Cluster slot per store, reloaded after
NOSCRIPT, refused whole by a full server, Redis 7 required.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

import threadkeep
from tests._servers import RedisServer, free_port
from tests.backends.redis._helpers import DIRECT, SHARED, monitor, raw_client, workload
from threadkeep import BackendUnavailable
from threadkeep.backends.redis._keys import Keys
from threadkeep.backends.redis._options import check_server

pytestmark = pytest.mark.redis


def test_scripts_reload_after_script_flush(own_server: RedisServer) -> None:
    with threadkeep.open(own_server.url + "?prefix=flush") as store:
        conv = store.start("c-1")
        store.append(conv.id, "user", "before")
        client = redis.Redis(host="127.0.0.1", port=own_server.port)
        client.script_flush()
        assert client.script_exists("0" * 40) == [False]
        message = store.append(conv.id, "user", "after")
        assert message.seq == 2
        assert [m.content for m in store.messages(conv.id)] == ["before", "after"]
        client.close()


def test_state_and_window_scripts_reload_after_script_flush(own_server: RedisServer) -> None:
    """The standalone scripts (window read, state load) and the trimmed ones (state save)."""
    with threadkeep.open(own_server.url + "?prefix=flush2") as store:
        conv = store.resume("c-1")
        store.save_state(conv.id, {"n": 1})
        store.append(conv.id, "user", "before")
        client = redis.Redis(host="127.0.0.1", port=own_server.port)
        client.script_flush()
        assert store.load_state(conv.id).value == {"n": 1}
        client.script_flush()
        assert store.save_state(conv.id, {"n": 2}) == 2
        client.script_flush()
        assert [m.content for m in store.messages(conv.id, last=5)] == ["before"]
        client.script_flush()
        assert store.resume("c-1").id == conv.id
        assert store.load_state(conv.id, version=1).value == {"n": 1}
        client.close()


def test_every_change_is_one_evalsha_and_reads_touch_no_history(own_server: RedisServer) -> None:
    seen: list[dict[str, object]] = []
    ready = threading.Event()
    watcher = threading.Thread(target=monitor, args=(own_server, seen, ready))
    watcher.start()
    assert ready.wait(10)
    raw = own_server.client()
    try:
        with threadkeep.open(own_server.url + "?prefix=mon") as store:
            workload(store)
            conv = store.start("c-3")
            raw.echo("appends-begin")
            for i in range(10):
                store.append(conv.id, "user", f"m{i}")
            raw.echo("appends-end")
            raw.echo("counts-begin")
            assert store.counts(tenant="default").total == 1
            raw.echo("counts-end")
            raw.echo("delete-begin")
            store.delete(conv.id)
            raw.echo("delete-end")
    finally:
        raw.echo("monitor-stop")
        watcher.join(10)
        raw.close()
    direct = [str(c["command"]) for c in seen if c["client_type"] != "lua"]
    names = [c.split(" ", 1)[0].upper() for c in direct]
    assert set(names) - {"ECHO"} <= DIRECT, sorted(set(names))
    assert "XREAD" in names  # events() waits with XREAD BLOCK …
    assert any(" BLOCK " in c.upper() for c in direct if c.upper().startswith("XREAD"))
    # … and between the markers each append was exactly one EVALSHA, nothing else
    begin, end = direct.index("ECHO appends-begin"), direct.index("ECHO appends-end")
    assert names[begin + 1 : end] == ["EVALSHA"] * 10
    # inside those scripts the history is only pushed to (and its TTL renewed), never read
    start = next(i for i, c in enumerate(seen) if c["command"] == "ECHO appends-begin")
    stop = next(i for i, c in enumerate(seen) if c["command"] == "ECHO appends-end")
    in_appends = [str(c["command"]) for c in seen[start:stop] if c["client_type"] == "lua"]
    on_history = [c.split(" ", 1)[0].upper() for c in in_appends if f":m:{conv.id}" in c]
    assert on_history.count("RPUSH") == 10
    assert set(on_history) == {"RPUSH", "PEXPIREAT"}, on_history
    # counts() reads counting indexes, never the conversations themselves
    start = next(i for i, c in enumerate(seen) if c["command"] == "ECHO counts-begin")
    stop = next(i for i, c in enumerate(seen) if c["command"] == "ECHO counts-end")
    in_counts = {str(c["command"]).split(" ", 1)[0].upper() for c in seen[start:stop]}
    assert in_counts == {"ECHO", "EVALSHA", "ZCOUNT", "SMEMBERS"}, in_counts
    # erasing a conversation deletes its own events by id, without scanning the log
    start = next(i for i, c in enumerate(seen) if c["command"] == "ECHO delete-begin")
    stop = next(i for i, c in enumerate(seen) if c["command"] == "ECHO delete-end")
    in_delete = {str(c["command"]).split(" ", 1)[0].upper() for c in seen[start:stop]}
    assert "XDEL" in in_delete and "XRANGE" not in in_delete, in_delete


def test_scripts_never_leave_the_stores_cluster_slot(tmp_path: Path) -> None:
    server = RedisServer(
        tmp_path,
        appendonly=False,
        extra=(
            *("--cluster-enabled", "yes", "--cluster-port", str(free_port())),
            *("--cluster-config-file", str(tmp_path / "nodes.conf")),
        ),
    )
    server.start()
    try:
        raw = server.client()
        raw.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 20
        while "cluster_state:ok" not in raw.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "single-node cluster did not come up"
            time.sleep(0.1)
        # the server really refuses a script that strays into another slot …
        with pytest.raises(redis.ResponseError, match="same slot"):
            raw.eval("#!lua\nredis.call('SET', '{other}:x', 1) return 1", 1, "{mine}:ev")
        # … and every script of the store stays in the slot of the key it routes by
        with threadkeep.open(server.url + "?prefix=cl") as store:
            workload(store)
        with threadkeep.open(server.url + "?prefix=cl2") as store:
            workload(store)  # a second store: its own tag, its own slot
        assert raw.cluster("keyslot", Keys("cl").events) != raw.cluster(
            "keyslot", Keys("cl2").events
        )
        raw.close()
    finally:
        server.kill()


def test_a_full_server_refuses_whole_changes_and_keeps_serving_reads(tmp_path: Path) -> None:
    server = RedisServer(
        tmp_path, appendonly=False, extra=("--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
    )
    server.start()
    try:
        with threadkeep.open(server.url + "?prefix=full") as store:
            conv = store.start("c-1", tenant="t-1")
            acknowledged = 0
            with pytest.raises(threadkeep.BackendError) as info:
                for i in range(10_000):
                    store.append(conv.id, "user", f"{i} " + "x" * 4000)
                    acknowledged += 1
            assert "OutOfMemoryError" in str(info.value)
            assert not isinstance(info.value, BackendUnavailable)  # not retried: it would not help
            # every read still works on the full server, and shows whole changes only
            assert store.get(conv.id).message_count == acknowledged
            assert len(store.messages(conv.id, after=0, limit=1000)) == min(acknowledged, 1000)
            assert len(store.context(conv.id)) == 20
            assert store.list(tenant="t-1").items[0].id == conv.id
            assert store.find_open("c-1", tenant="t-1") is not None
            assert store.load_state(conv.id).version == 0
            assert store.counts(tenant="t-1").by_status["active"] == 1
            assert len(list(store.events(tenant="t-1"))) == acknowledged + 2  # + started, status
    finally:
        server.kill()


def test_servers_older_than_redis_7_are_refused_with_a_clear_message() -> None:
    check_server({"redis_version": "7.0.15"}, "127.0.0.1:6379")  # the scripts need 7.0
    with pytest.raises(redis.ResponseError, match=r"needs Redis 7\.0 or newer.* runs Redis 6\.2"):
        check_server({"redis_version": "6.2.14"}, "127.0.0.1:6379")


def test_an_append_runs_few_commands_and_checks_one_ttl(own_server: RedisServer) -> None:
    """The server work of an append, counted: its record's fields read with one HMGET, the
    index TTLs not looked at while the record's mark holds, the other keys' TTLs not renewed
    while the record's is far enough off (see _lib.lua save)."""
    with threadkeep.open(own_server.url + "?prefix=count") as store:
        conv = store.start("c-1", stage="Q1")
        for i in range(100):  # past the 64 retry keys, so their trimming is counted too
            store.append(conv.id, "user", f"warm {i}")
        client = own_server.client()
        client.config_resetstat()
        for i in range(32):
            store.append(conv.id, "user", f"m{i}")
        stats = client.info("commandstats")
        client.close()
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    assert calls.pop("evalsha") == 32
    calls.pop("config|resetstat", None)
    assert calls["hmget"] == 32 and "hgetall" not in calls
    assert calls["pexpiretime"] == 32  # the record's own, once per append
    # the idempotency hash is not new while its queue of retry keys is not (was 32)
    assert "pexpireat" not in calls
    # the retry key checked and noted in one command (was an HGET and an HSET each)
    assert calls["hsetnx"] == 32 and "hget" not in calls
    assert calls["hset"] == 32  # the record's fields
    assert calls["lpop"] == 2  # retry keys forgotten 16 at a time
    # with a stage: 7 index entries, 3 for the event, 18 in all (and 2 LPOP + 2 HDEL per 32);
    # was 36 before marks and batches, 20 before the HSETNX
    assert sum(calls.values()) <= 32 * 18 + 4, calls


def test_a_first_append_gives_every_key_it_makes_the_records_ttl(prefix: str) -> None:
    """The keys an append makes (the history, the idempotency hash, a queue) get the record's
    native expiry; later appends set none (see above), and the keys keep it."""
    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}") as store:
        conv = store.start("c-1")
        keys = Keys(prefix)
        client = raw_client()
        record = client.pexpiretime(keys.conversation(conv.id))
        assert record > 0
        store.append(conv.id, "user", "one")  # a retry key: hash and queue of retry keys
        store.append(conv.id, "user", "two", idempotency_key="k-1")  # a caller key's queue
        for key in (
            keys.messages(conv.id),
            keys.idempotency(conv.id),
            keys.retry_order(conv.id),
            keys.idempotency_order(conv.id),
        ):
            assert client.pexpiretime(key) == record, key
        client.close()


def test_a_new_conversation_is_made_without_looking_for_a_retried_one(
    own_server: RedisServer,
) -> None:
    """A first attempt with an id made for it needs no look for that id's row (a resend
    looks: test_redis_outage)."""
    with threadkeep.open(own_server.url + "?prefix=made") as store:
        store.start("c-0")
        client = own_server.client()
        client.config_resetstat()
        for i in range(8):
            store.resume(f"c-{i + 1}")
        stats = client.info("commandstats")
        client.close()
    assert "cmdstat_hgetall" not in stats  # no open conversation of a new contact to read


def test_recalling_one_fact_reads_only_its_fields(own_server: RedisServer) -> None:
    """A contact's facts hash grows (the service notes each Idempotency-Key there for a day):
    recalling one key is one HMGET of its two fields, not a read of the whole hash, and
    answers as recalling all of them and picking it."""
    with threadkeep.open(own_server.url + "?prefix=recall") as store:
        for i in range(200):
            store.remember("c-1", f"note{i:03d}", {"i": i})
        store.remember("c-1", "name", "Ana", source={"from": "form"})
        store.remember("c-1", "name", "Ana B.")
        client = own_server.client()
        client.config_resetstat()
        one = store.recall("c-1", "name")
        missing = store.recall("c-1", "nothing")
        stats = client.info("commandstats")
        everything = store.recall("c-1")
        client.close()
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    assert calls.get("hmget") == 2 and "hgetall" not in calls, calls
    assert missing == []
    assert one == [f for f in everything if f.key == "name"]
    assert one[0].value == "Ana B." and [h.value for h in one[0].history] == ["Ana"]
    assert len(everything) == 201


def test_the_last_messages_are_one_transaction_that_answers_as_the_script(
    own_server: RedisServer,
) -> None:
    """``messages(last=)`` reads with ``MULTI`` of ``HMGET`` and ``LRANGE`` (no script); on a
    Redis Cluster it keeps the read script: both give the same answers, misses included."""
    from datetime import timedelta

    from threadkeep import ConversationNotFound, ManualClock, Retention

    clock = ManualClock()
    with threadkeep.open(own_server.url + "?prefix=last", clock=clock) as store:
        flows = store._backend._flows  # type: ignore[attr-defined]
        short = store.start("c-1", tenant="a", retention=Retention(ttl=timedelta(seconds=30)))
        for i in range(30):
            store.append(short.id, "user" if i % 2 else "assistant", f"m{i}\nline")
        empty = store.start("c-2", tenant="a")
        client = own_server.client()

        def answers() -> list[object]:
            out: list[object] = []
            for cid, tenant in [
                (short.id, None),
                (short.id, "a"),
                (short.id, "b"),
                (empty.id, None),
                ("nope", None),
            ]:
                for last in (1, 5, 29, 30, 100):
                    try:
                        out.append(store.messages(cid, last=last, tenant=tenant))
                    except ConversationNotFound:
                        out.append("not found")
            return out

        for expired in (False, True):
            if expired:
                clock.advance(timedelta(seconds=31))
            client.config_resetstat()
            flows.cluster = False
            direct = answers()
            stats = client.info("commandstats")
            assert "cmdstat_evalsha" not in stats and stats["cmdstat_exec"]["calls"] == 25
            flows.cluster = True
            assert answers() == direct
            # another tenant's and a missing one; then the expired one too (c-2 lives 7 days)
            assert direct.count("not found") == (20 if expired else 10)
            first = direct[0]
            if expired:
                assert first == "not found"
            else:
                assert isinstance(first, list) and [m.content for m in first] == ["m29\nline"]
        client.close()


def test_a_creating_resume_reads_no_ttl_it_knows(own_server: RedisServer) -> None:
    """A resume that makes a conversation reads the TTLs of the tenant's three indexes only:
    not its contact's index, which it saw empty (so no key), nor its own record's, which it
    set (the new event list copies it). 19 commands (was 21, two PEXPIRETIMEs fewer)."""
    keys = Keys("known")
    with threadkeep.open(own_server.url + "?prefix=known") as store:
        store.resume("c-0")  # the tenant's indexes exist
        client = own_server.client()
        client.config_resetstat()
        made = [store.resume(f"c-{i + 1}") for i in range(8)]
        stats = client.info("commandstats")
        forever = store.resume("c-9", retention=threadkeep.Retention(ttl=None))
        for conv in made:
            record = client.pexpiretime(keys.conversation(conv.id))
            assert record > 0
            # the contact's index outlasts the record by the slack; the events list has its TTL
            assert client.pexpiretime(keys.event_ids(conv.id)) == record
            assert client.pexpiretime(keys.contact("default", conv.contact_id)) > record
        assert client.pexpiretime(keys.conversation(forever.id)) == -1
        assert client.pexpiretime(keys.event_ids(forever.id)) == -1
        assert client.pexpiretime(keys.contact("default", "c-9")) == -1
        client.close()
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    calls.pop("config|resetstat", None)
    assert calls.pop("evalsha") == 8
    assert calls["pexpiretime"] == 8 * 3, calls  # the tenant's, by status and by expiry
    assert calls["pexpireat"] == 8 * 3  # the record, its events list, the contact's index
    assert sum(calls.values()) == 8 * 19, calls


def test_an_append_reads_the_servers_clock_from_its_records_ttl(own_server: RedisServer) -> None:
    """An append runs no TIME: its record's PEXPIRETIME, which it reads anyway, less the
    record's PTTL (integers both) is the server's clock (session 12; was a TIME per append, an
    array of two decimals to parse). A record left without a native TTL (persisted by hand)
    still gets one, from TIME."""
    with threadkeep.open(own_server.url + "?prefix=clock") as store:
        conv = store.start("c-1")
        store.append(conv.id, "user", "warm")
        client = own_server.client()
        record = Keys("clock").conversation(conv.id)
        set_by_create = client.pexpiretime(record)
        client.config_resetstat()
        for i in range(8):
            store.append(conv.id, "user", f"m{i}")
        stats = client.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
        assert "time" not in calls
        assert calls["pttl"] == calls["pexpiretime"] == 8
        assert client.pexpiretime(record) == set_by_create  # far enough off: not renewed
        client.persist(record)
        client.config_resetstat()
        store.append(conv.id, "user", "after persist")
        stats = client.info("commandstats")
        assert stats["cmdstat_time"]["calls"] == 1 and "cmdstat_pttl" not in stats
        renewed = client.pexpiretime(record)
        assert renewed >= set_by_create - 60_000  # its native expiry, set again from TIME
        assert client.pexpiretime(Keys("clock").messages(conv.id)) == renewed
        client.close()
