"""The sharded layout (``?shard=tenant``) on the shared server: tags, ids, layouts, imports."""

from __future__ import annotations

import pytest

import threadkeep
from tests._servers import REDIS_BASE
from tests.backends.redis._helpers import raw_client
from threadkeep.backends.redis import _shards
from threadkeep.backends.redis._keys import Keys

pytestmark = pytest.mark.redis


def _open(prefix: str, shard: str | None = None) -> threadkeep.Store:
    option = "" if shard is None else f"&shard={shard}"
    return threadkeep.open(f"{REDIS_BASE}?prefix={prefix}{option}")


def test_tenant_tags_are_stable_and_spread() -> None:
    assert _shards.tenant_tag("acme") == _shards.tenant_tag("acme")
    tags = {_shards.tenant_tag(f"t-{i}") for i in range(5000)}
    assert len(tags) > 0.95 * _shards.BUCKETS  # 5,000 tenants use nearly every bucket
    assert _shards.id_tag(_shards.tagged("0" * 26, "k7")) == "k7"
    assert _shards.id_tag("order_12") is None  # only ids shaped like ours carry a tag


def test_a_sharded_store_keeps_each_tenant_in_its_own_tag(prefix: str) -> None:
    client = raw_client()
    try:
        with _open(prefix, "tenant") as store:
            a = store.start("c-1", tenant="acme")
            b = store.start("c-2", tenant="globex")
            store.append(a.id, "user", "hi")
            store.remember("c-1", "lang", "pt", tenant="acme")
            for conv, tenant in ((a, "acme"), (b, "globex")):
                tag = _shards.tenant_tag(tenant)
                assert conv.id.endswith("_" + tag)
                assert client.exists(Keys(prefix, tag).conversation(conv.id))
                assert client.zscore(Keys(prefix, tag).tenant(tenant), conv.id) is not None
            assert client.exists(Keys(prefix, _shards.tenant_tag("acme")).facts("acme", "c-1"))
            assert client.smembers(Keys(prefix).tags) == {
                _shards.tenant_tag("acme"), _shards.tenant_tag("globex")
            }  # fmt: skip
            assert client.get(Keys(prefix).layout) == "tenant"
            assert not client.exists(Keys(prefix).conversation(a.id))  # nothing in {prefix}
            # by id alone, with the right tenant, not with another
            assert store.get(a.id).tenant == "acme"
            assert store.messages(a.id, tenant="acme")[0].content == "hi"
            with pytest.raises(threadkeep.ConversationNotFound):
                store.get(a.id, tenant="globex")
            assert store.delete_contact("c-1", tenant="acme").conversations == (a.id,)
    finally:
        client.close()


def test_events_without_a_tenant_merge_every_tag(prefix: str) -> None:
    with _open(prefix, "tenant") as store:
        tenants = [f"t-{i}" for i in range(6)]
        assert len({_shards.tenant_tag(t) for t in tenants}) > 1
        for tenant in tenants:
            store.start("c", tenant=tenant)
        for tenant in tenants:  # each tenant's log: gap-free seqs, in order
            conv = store.list(tenant=tenant).items[0]
            for i in range(3):
                store.append(conv.id, "user", f"m{i}")
        events = list(store.events())
        assert len(events) == 6 * 5  # started, 3 appended, and new → active
        numbers = [int(e.id.removesuffix("-0")) for e in events]
        assert numbers == sorted(numbers)  # merged by number (each tag numbers its own log)
        for tenant in tenants:
            own = [e for e in events if e.tenant == tenant]
            assert own[0].kind == "conversation.started"
            appended = [e.data["seq"] for e in own if e.kind == "message.appended"]
            assert appended == [1, 2, 3]
            assert list(store.events(tenant=tenant)) == own
        # a cursor applies to every tag's numbers: what follows it, in every tag
        cursor = events[5].id
        later = [e for e in events if int(e.id.removesuffix("-0")) > numbers[5]]
        assert list(store.events(after=cursor)) == later


def test_a_reader_of_every_tenant_misses_no_tag_that_numbered_behind_it(prefix: str) -> None:
    """Tags number their logs apart: one that lags (a quiet tenant) or is new must still
    number its next events above the cursor of a reader of every tenant's events."""
    busy, quiet, late = "t-busy", "t-quiet", "t-late"
    tags = {_shards.tenant_tag(t) for t in (busy, quiet, late)}
    assert len(tags) == 3  # three tags, numbered apart
    with _open(prefix, "tenant") as store:
        quiet_conv = store.start("c", tenant=quiet)  # its tag's log: numbers 1 and up
        conv = store.start("c", tenant=busy)
        for i in range(20):
            store.append(conv.id, "user", f"m{i}")  # the busy tag's numbers pass the quiet's
        cursor = list(store.events())[-1].id  # a reader of every tenant, at the end
        store.append(quiet_conv.id, "user", "from the quiet tenant")
        late_conv = store.start("c", tenant=late)  # a tag the store has not used yet
        store.append(late_conv.id, "user", "from a new tag")
        got = list(store.events(after=cursor))
        assert [(e.tenant, e.kind) for e in got] == [
            (quiet, "message.appended"),
            (quiet, "status.changed"),
            (late, "conversation.started"),
            (late, "message.appended"),
            (late, "status.changed"),
        ]
        assert list(store.events(after=got[-1].id)) == []
        # each tenant's own log holds the same events, in the same order
        assert [e for e in got if e.tenant == quiet] == list(store.events(tenant=quiet))[1:]
        assert [e for e in got if e.tenant == late] == list(store.events(tenant=late))


def test_the_recorded_layout_wins_and_a_mismatch_is_refused(prefix: str) -> None:
    with _open(prefix, "tenant") as store:
        conv = store.start("c-1", tenant="acme")
    with _open(prefix) as store:  # no option: the store's own layout
        assert store.get(conv.id).tenant == "acme"
    with pytest.raises(threadkeep.InvalidInput, match="in the shard=tenant layout") as caught:
        _open(prefix, "none").get(conv.id)
    assert "\n" not in str(caught.value)
    client = raw_client()
    try:
        client.delete(Keys(prefix).layout)  # a lost record: the set of tags tells
        with _open(prefix) as store:
            assert store.get(conv.id).tenant == "acme"
        assert client.get(Keys(prefix).layout) == "tenant"
    finally:
        client.close()


def test_an_old_store_stays_in_one_slot(prefix: str) -> None:
    """A store written before layouts were recorded holds data and no layout key."""
    with _open(prefix) as store:  # a new store on a single server: one slot
        conv = store.start("c-1", tenant="acme")
    client = raw_client()
    try:
        assert client.get(Keys(prefix).layout) == "none"
        client.delete(Keys(prefix).layout)
        with pytest.raises(threadkeep.InvalidInput, match="in the shard=none layout"):
            _open(prefix, "tenant").get(conv.id)
        with _open(prefix) as store:
            assert store.get(conv.id).tenant == "acme"
        assert client.get(Keys(prefix).layout) == "none"
    finally:
        client.close()


def test_imported_ids_keep_their_id_and_are_found_without_a_tenant(prefix: str) -> None:
    clock = threadkeep.ManualClock()
    with threadkeep.open(f"{REDIS_BASE}?prefix={prefix}&shard=tenant", clock=clock) as store:
        conv = store._create_with_id(
            "legacy-42", "c-1", tenant="acme", agent_id=None, channel=None, stage=None,
            metadata=None, retention=store.retention,
        )  # fmt: skip
        assert conv.id == "legacy-42"
        store.append("legacy-42", "user", "hi")  # no tenant: found through the aliases
        assert store.get("legacy-42").tenant == "acme"
        assert store.messages("legacy-42", tenant="acme")[0].content == "hi"
        with pytest.raises(threadkeep.ConversationNotFound):
            store.get("never-made")
        foreign = _shards.tagged("0" * 26, _shards.tenant_tag("globex"))
        with pytest.raises(threadkeep.InvalidInput, match="slot tag"):
            store._create_with_id(
                foreign, "c-1", tenant="acme", agent_id=None, channel=None, stage=None,
                metadata=None, retention=store.retention,
            )  # fmt: skip


def test_an_unknown_layout_is_refused() -> None:
    with pytest.raises(threadkeep.InvalidInput, match="'none' .* or 'tenant'"):
        threadkeep.open(f"{REDIS_BASE}?shard=bucket")
