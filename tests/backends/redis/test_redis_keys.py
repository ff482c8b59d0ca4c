"""Redis keys: sliding native TTLs on every key, bounded memory, indexes that outlive
their conversations only, lazy cleaning of what Redis reclaimed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis

import threadkeep
from tests._servers import RedisServer
from tests.backends.redis._helpers import SHARED, raw_client
from threadkeep import CursorExpired, Limits, ManualClock, Retention
from threadkeep.backends.redis._keys import Keys

pytestmark = pytest.mark.redis

TTL = timedelta(hours=2)


def _with_every_key(store: threadkeep.Store) -> threadkeep.Conversation:
    """A conversation with a record, messages, both kinds of keys and a state version."""
    conv = store.start("c-1", retention=Retention(ttl=TTL))
    store.append(conv.id, "user", "hi", idempotency_key="k-1")
    store.append(conv.id, "user", "no key")
    store.save_state(conv.id, {"stage": "Q1"})
    return conv


def test_every_key_of_a_conversation_carries_the_sliding_ttl(prefix: str) -> None:
    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}") as store:
        conv = _with_every_key(store)
        raw = raw_client()
        keys = [k for k in raw.scan_iter(match=Keys(prefix).pattern) if conv.id in k]
        assert len(keys) >= 5, keys
        for key in keys:
            pttl = raw.pttl(key)
            # never shorter than the logical ttl; reclaimed at most an hour after it
            assert TTL.total_seconds() * 1000 <= pttl <= (TTL.total_seconds() + 3601) * 1000, key
        forever = store.start("c-2", retention=Retention(ttl=None))
        store.append(forever.id, "user", "kept until deleted")
        for key in [k for k in raw.scan_iter(match=Keys(prefix).pattern) if forever.id in k]:
            assert raw.pttl(key) == -1, key
        raw.close()


def test_activity_renews_the_ttl_of_every_key_of_the_conversation(prefix: str) -> None:
    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}") as store:
        conv = _with_every_key(store)
        raw = raw_client()
        keys = Keys(prefix).conversation_keys(conv.id)
        assert all(raw.exists(k) for k in keys), keys

        def shorten() -> None:
            for key in keys:
                raw.pexpire(key, 60_000)

        def renewed() -> bool:
            return all(raw.pttl(k) >= TTL.total_seconds() * 1000 for k in keys)

        for activity in (
            lambda: store.append(conv.id, "user", "again"),
            lambda: store.save_state(conv.id, {"stage": "Q2"}),
            lambda: store.set_stage(conv.id, "Q3"),
            lambda: store.set_status(conv.id, "waiting_agent"),
        ):
            shorten()
            activity()
            assert renewed(), [(k, raw.pttl(k)) for k in keys]
        raw.close()


def test_no_key_outlives_the_conversation_record(prefix: str) -> None:
    """Between full renewals an append or a state save gives the keys it may create the
    record's own native expiry, not a later one: when Redis reclaims the record, it reclaims
    the whole conversation, so an import of the same id later starts on nothing stale."""
    clock = ManualClock()
    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}", clock=clock) as store:
        conv = store.start("c-1", retention=Retention(ttl=TTL))
        raw = raw_client()
        keys = Keys(prefix).conversation_keys(conv.id)
        for step in range(6):
            clock.advance(timedelta(minutes=4))  # within half the grace: no full renewal
            store.append(conv.id, "user", f"m{step}", idempotency_key=f"k-{step}")
            store.save_state(conv.id, {"step": step})
            record = raw.pexpiretime(keys[0])
            assert record > 0
            later = {k: raw.pexpiretime(k) - record for k in keys if raw.pexpiretime(k) > record}
            assert later == {}, later
        raw.close()


def test_idempotency_keys_and_event_log_are_bounded(prefix: str) -> None:
    url = f"redis://{SHARED}/0?prefix={prefix}&idempotency_keys=5"
    with threadkeep.open(url, limits=Limits(events_kept=20)) as store:
        conv = store.start("c-1")
        for i in range(30):
            store.append(conv.id, "user", f"m{i}", idempotency_key=f"k-{i}")
        for i in range(150):
            store.append(conv.id, "user", f"n{i}")
        raw = raw_client()
        remembered = raw.hkeys(Keys(prefix).idempotency(conv.id))
        caller_keys = [k for k in remembered if not k.startswith("\t")]
        assert sorted(caller_keys) == sorted(f"k-{i}" for i in range(25, 30))
        assert len(remembered) - len(caller_keys) <= 64  # internal retry keys
        # the newest keys still deduplicate
        assert store.append(conv.id, "user", "again", idempotency_key="k-29").content == "m29"
        # approximate trimming keeps whole stream nodes (100 entries) at most beyond the bound
        assert raw.xlen(Keys(prefix).events) <= 20 + 100
        events = list(store.events(after=str(int(raw.get(Keys(prefix).base + "evn")) - 20)))
        assert len(events) == 20
        # an event's id is its stream entry id, so a cursor resumes the stream itself
        stream_ids = [entry_id for entry_id, _ in raw.xrange(Keys(prefix).events)]
        assert [e.id for e in events] == stream_ids[-20:]
        # so is each conversation's list of its event ids (erasure deletes them without a scan)
        assert raw.llen(Keys(prefix).event_ids(conv.id)) <= 20
        # state versions are bounded too
        for i in range(15):
            store.save_state(conv.id, {"n": i})
        assert raw.hlen(Keys(prefix).states(conv.id)) == Limits().state_versions_kept
        raw.close()


def test_the_log_floor_moves_with_one_command_and_never_goes_down(
    own_server: RedisServer,
) -> None:
    """Once the log is full every event moves its floor: one SET ... GET, no GET before it.
    A store with a larger ``events_kept`` on the same log never moves it back down: a cursor
    its events fell below stays expired."""
    url = own_server.url + "?prefix=floor"
    with threadkeep.open(url, limits=Limits(events_kept=5)) as small:
        conv = small.start("c-1")
        first = list(small.events())[0]
        for i in range(10):
            small.append(conv.id, "user", f"m{i}")
        client = own_server.client()
        client.config_resetstat()
        for i in range(10):
            small.append(conv.id, "user", f"n{i}")
        stats = client.info("commandstats")
        assert "cmdstat_get" not in stats
        assert stats["cmdstat_set"]["calls"] == 10
        floor = int(client.get(Keys("floor").event_floor))
        assert floor == int(client.get(Keys("floor").event_number)) - 5  # the newest 5 kept
    with threadkeep.open(url, limits=Limits(events_kept=10)) as big:  # its floor: lower
        big.append(conv.id, "user", "from a store that keeps more")
        assert int(client.get(Keys("floor").event_floor)) == floor
        with pytest.raises(CursorExpired):
            list(big.events(after=first.id))
        assert len(list(big.events())) == 6
    client.close()


def test_state_versions_are_trimmed_with_one_command_a_save(own_server: RedisServer) -> None:
    """Past the kept versions each save deletes the one that fell out, in one HDEL; a store
    that keeps fewer versions than another trims all that the other left."""
    url = own_server.url + "?prefix=versions"
    with threadkeep.open(url, limits=Limits(state_versions_kept=6)) as more:
        conv = more.start("c-1")
        for i in range(12):
            more.save_state(conv.id, {"n": i})
        client = own_server.client()
        client.config_resetstat()
        for i in range(12, 20):
            more.save_state(conv.id, {"n": i})
        assert client.info("commandstats")["cmdstat_hdel"]["calls"] == 8
        states = Keys("versions").states(conv.id)
        assert sorted(map(int, client.hkeys(states))) == list(range(15, 21))
    with threadkeep.open(url, limits=Limits(state_versions_kept=2)) as fewer:
        assert fewer.save_state(conv.id, {"n": 20}) == 21
        assert sorted(map(int, client.hkeys(states))) == [20, 21]
        assert fewer.load_state(conv.id, version=20).value == {"n": 19}
    client.close()


def test_the_versions_hash_gets_its_ttl_with_its_first_version_only(
    own_server: RedisServer,
) -> None:
    """The first save makes the versions hash and gives it the record's native expiry; later
    saves set no TTL (a kept version stays, so the hash is never made again): 14 commands a
    save (was 15, a PEXPIREAT each), and the hash keeps the record's expiry."""
    keys = Keys("firstttl")
    with threadkeep.open(own_server.url + "?prefix=firstttl") as store:
        conv = store.start("c-1")
        forever = store.start("c-2", retention=Retention(ttl=None))
        client = own_server.client()
        store.save_state(conv.id, {"n": 0})
        store.save_state(forever.id, {"n": 0})
        record = client.pexpiretime(keys.conversation(conv.id))
        assert record > 0
        assert client.pexpiretime(keys.states(conv.id)) == record
        assert client.pexpiretime(keys.states(forever.id)) == -1
        client.config_resetstat()
        for i in range(1, 9):
            assert store.save_state(conv.id, {"n": i}) == i + 1
        stats = client.info("commandstats")
        assert client.pexpiretime(keys.conversation(conv.id)) == record  # not renewed yet
        assert client.pexpiretime(keys.states(conv.id)) == record
        assert store.load_state(conv.id).value == {"n": 8}
        client.close()
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    calls.pop("config|resetstat", None)
    assert calls.pop("evalsha") == 8
    assert "pexpireat" not in calls, calls
    assert calls["pexpiretime"] == 8  # the record's
    assert sum(calls.values()) == 8 * 14, calls


def test_tenant_and_contact_indexes_outlive_their_conversations_only(prefix: str) -> None:
    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}") as store:
        conv = store.start(
            "c-1", tenant="t-1", stage="Q1", retention=Retention(ttl=timedelta(hours=2))
        )
        store.append(conv.id, "user", "hi")
        raw = raw_client()
        base = Keys(prefix).base
        indexes = [base + "t:t-1", base + "ts:active:t-1", base + "k:3:t-1:c-1"]
        indexes += [base + "xs:active:t-1", base + "xg:3:t-1:Q1", base + "gs:t-1"]  # counting
        conversation_at = raw.pexpiretime(Keys(prefix).conversation(conv.id))
        assert conversation_at > 0
        for key in indexes:
            assert raw.pexpiretime(key) >= conversation_at, key  # gone by itself, after it
        forever = store.start("c-1", tenant="t-1", stage="Q1", retention=Retention(ttl=None))
        store.append(forever.id, "user", "kept")
        for key in indexes:
            assert raw.pexpiretime(key) == -1, key  # holds a conversation kept forever
        raw.close()


def test_index_entries_of_conversations_redis_reclaimed_are_cleaned_lazily(prefix: str) -> None:
    clock = threadkeep.ManualClock()
    url = f"redis://{SHARED}/0?prefix={prefix}"
    with threadkeep.open(url, clock=clock) as store:
        gone = store.start("c-1", tenant="t-1", retention=Retention(ttl=timedelta(hours=1)))
        store.append(gone.id, "user", "hi")
        raw = raw_client()
        keys = Keys(prefix)
        # what Redis does an hour after the logical expiry: the conversation's keys vanish
        raw.delete(*keys.conversation_keys(gone.id))
        clock.advance(timedelta(hours=3))
        store.start("c-2", tenant="t-1")  # any new conversation reaps a few such entries
        for key in (keys.base + "t:t-1", keys.base + "ts:active:t-1", keys.base + "idle",
                    keys.base + "xs:active:t-1"):  # fmt: skip
            assert raw.zscore(key, gone.id) is None, key
        assert raw.zscore(keys.base + "exp", f"{gone.id}\nt-1\nc-1") is None
        assert not raw.exists(keys.base + "k:3:t-1:c-1")
        assert any(e.conversation_id == gone.id for e in store.events())  # the log scan …
        assert store.sweep().purged == 0  # it was gone already: nothing to report …
        assert not any(e.conversation_id == gone.id for e in store.events())  # … is sweep's
        raw.close()


def test_sweep_erases_the_events_of_conversations_redis_reclaimed(prefix: str) -> None:
    clock = threadkeep.ManualClock()
    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}", clock=clock) as store:
        gone = store.start("c-1", retention=Retention(ttl=timedelta(hours=1)))
        store.append(gone.id, "user", "hi")
        kept = store.start("c-2", retention=Retention(ttl=None))
        raw = raw_client()
        raw.delete(*Keys(prefix).conversation_keys(gone.id))  # Redis reclaimed it
        raw.close()
        clock.advance(timedelta(hours=3))
        store.sweep()
        ids = {e.conversation_id for e in store.events()}
        assert gone.id not in ids and kept.id in ids


def test_a_resent_append_is_recognised_after_48_other_appends(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Internal retry keys are forgotten 16 at a time past 64: the newest 49 always remain."""
    from threadkeep.backends.redis import _flows

    def failing_once(send: Any) -> Any:
        """``send`` failing its first request (a connection error), as a lost reply would:
        the driver resends it as a resend (one that looks for its retry key)."""
        failed: list[object] = []

        def request(request: object) -> Any:
            if not failed:
                failed.append(request)
                raise redis.ConnectionError("the reply was lost")
            return send(request)

        return request

    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}") as store:
        backend: Any = store._raw
        conv = store.start("c-1")
        for round_ in range(4):  # the queue passes 64 and is cut back more than once
            lost = f"{round_ + 1:032x}"
            with monkeypatch.context() as patch:
                patch.setattr(_flows, "_token", lambda lost=lost: lost)  # the retry key
                first = store.append(conv.id, "user", f"the lost reply {round_}")
            for i in range(48):
                store.append(conv.id, "user", f"r{round_}-{i}")
            with monkeypatch.context() as patch:
                patch.setattr(_flows, "_token", lambda lost=lost: lost)  # the retry key
                patch.setattr(backend, "_request", failing_once(backend._request))
                again = store.append(conv.id, "user", f"the lost reply {round_}")
            assert again.seq == first.seq  # the resend: recognised, nothing appended
        raw = raw_client()
        retry = [k for k in raw.hkeys(Keys(prefix).idempotency(conv.id)) if k.startswith("\t")]
        assert 49 <= len(retry) <= 64
        assert store.get(conv.id).message_count == 4 * 49
        raw.close()


def test_index_ttls_follow_status_and_stage_changes_and_a_stale_mark(prefix: str) -> None:
    """An append skips the index TTL checks only while the record's mark holds for its status
    and stage; a change of either, or a mark run out, checks (and renews) them again."""
    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}") as store:
        conv = store.start("c-1", tenant="t-1", stage="Q1", retention=Retention(ttl=TTL))
        raw = raw_client()
        keys = Keys(prefix)
        record = keys.conversation(conv.id)

        def indexes() -> list[str]:
            status, stage = raw.hget(record, "st"), raw.hget(record, "sg")
            base = keys.base
            names = [base + "t:t-1", base + f"ts:{status}:t-1", base + "k:3:t-1:c-1"]
            return [*names, base + f"xs:{status}:t-1", base + f"xg:3:t-1:{stage}", base + "gs:t-1"]

        def outlive() -> None:
            at = raw.pexpiretime(record)
            assert at > 0
            for key in indexes():
                assert raw.pexpiretime(key) >= at, key
            upto, status, stage = raw.hget(record, "ix").split("\n")
            assert int(upto) >= at
            assert (status, stage) == (raw.hget(record, "st"), raw.hget(record, "sg"))

        store.append(conv.id, "user", "hi")
        outlive()
        store.set_status(conv.id, "waiting_agent")
        store.append(conv.id, "user", "still there?")
        outlive()
        store.set_stage(conv.id, "Q2")
        store.save_state(conv.id, {"n": 1})
        outlive()
        # a mark run out: the next append checks every index again and renews a short one
        raw.pexpire(indexes()[0], 60_000)
        raw.hset(record, "ix", "1\n" + raw.hget(record, "ix").split("\n", 1)[1])
        store.append(conv.id, "user", "later")
        outlive()
        # a status changed without a new mark (sweep idles this way): the mark no longer holds
        raw.pexpire(indexes()[1], 60_000)
        upto = raw.hget(record, "ix").split("\n")[0]
        raw.hset(record, "ix", f"{upto}\nidle\nQ2")
        store.append(conv.id, "user", "again")
        outlive()
        raw.close()
