r"""The legend of the Redis keys: one method per key builder of ``scripts/_lib.lua``.

The scripts build their keys in Lua (they run on the server); this class names every one of
them for Python, in the same order, and a test (``tests/backends/redis/test_redis_key_names.py``)
checks each against its Lua builder. The fields of the conversation hash are in ``_codec``.

Every key of a store starts with its prefix (so ``SCAN MATCH prefix{*`` finds it), then a hash
tag, so a script may touch a conversation, the tenant's indexes and the event log atomically:

- one-slot layout (``shard=none``): every key starts ``prefix{prefix}:`` (one Cluster slot);
- sharded layout (``shard=tenant``, ``_shards``): a tenant's keys start ``prefix{prefix:tag}:``,
  ``tag`` being the tenant's bucket (two characters); every name of the table then exists once
  per tag (the ``K_*`` ones are that tag's log, counters and sweep indexes), and the store's own
  ``layout``, ``tags`` and ``aliases`` keep the base ``prefix{prefix}:``.

A name inside a key that may hold ``:`` (a tenant before a contact) is preceded by its length.

| Lua | method | type | holds |
|---|---|---|---|
| ``kc(id)`` | conversation | hash | the conversation's fields (``_codec.FIELDS``) |
| ``km(id)`` | messages | list | kept messages, oldest first: ``"seq body"`` |
| ``ki(id)`` | idempotency | hash | key → ``"seq body"`` (internal retry keys: ``"\t" + key``) |
| ``kiq(id)`` | idempotency_order | list | caller keys, oldest first (bounds ``ki``) |
| ``krq(id)`` | retry_order | list | internal retry keys, oldest first |
| ``ks(id)`` | states | hash | version → ``"saved_us value_json"`` |
| ``ke(id)`` | event_ids | list | ids of the conversation's retained events |
| ``kt(tenant)`` | tenant | zset | conversation ids by activity (list) |
| ``kts(status, tenant)`` | tenant_status | zset | ids of one status, by activity |
| ``kct(tenant, contact)`` | contact | zset | a contact's ids, by activity (resume) |
| ``kf(tenant, contact)`` | facts | hash | key → ``"updated expires tier value_json"``; |
| | | | key + newline → source and history JSON, newline between |
| ``kxs(status, tenant)`` | status_counts | zset | ids of one status, by expiry (counts) |
| ``kxg(tenant, stage)`` | stage_counts | zset | ids of one stage, by expiry (counts) |
| ``kgs(tenant)`` | stages | set | the stages a tenant has used |
| ``K_EXP`` | expiries | zset | ``"id\ntenant\ncontact"`` by expiry (sweep) |
| ``K_IDLE`` | idle | zset | ids by idle time (sweep) |
| ``K_FX`` | fact_expiries | zset | ``"len:tenant:contact\nkey"`` by expiry (sweep) |
| ``K_ORPH`` | orphans | zset | ids Redis reclaimed whose events sweep() erases |
| ``K_EV`` | events | stream | the event log, ids ``"n-0"``; every script's routing key |
| ``K_EVN`` | event_number | string | the last event number |
| ``K_EVT`` | event_floor | string | events numbered up to this fell out of the log |
| (Python) | layout | string | ``"none"`` or ``"tenant"``: the store's recorded layout |
| (Python) | tags | set | a sharded store's tags in use (sweep, events without a tenant) |
| (Python) | aliases | hash | imported conversation id → its tag (an id made elsewhere) |
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names of one store (one ``prefix``), or of one slot tag of a sharded store.

    Attributes:
        prefix: the store's prefix.
        tag: None for the store's own hash tag ``{prefix}`` (the one-slot layout, and the
            home keys of a sharded store); else a slot tag (``_shards.tenant_tag``), whose
            keys carry the hash tag ``{prefix:tag}``.
    """

    prefix: str
    tag: str | None = None

    @property
    def base(self) -> str:
        """The common start of every key: the prefix, then the hash tag."""
        if self.tag is None:
            return self.prefix + "{" + self.prefix + "}:"
        return self.prefix + "{" + self.prefix + ":" + self.tag + "}:"

    def at(self, tag: str) -> Keys:
        """The key names of slot tag ``tag`` of this (sharded) store."""
        return Keys(self.prefix, tag)

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of the store."""
        return self.prefix + "{*"  # a prefix is letters, digits, "_" and "-": nothing to escape

    # ---- one conversation ----------------------------------------------------------------

    def conversation(self, conversation_id: str) -> str:
        """``kc``: the hash holding one conversation's fields."""
        return f"{self.base}c:{conversation_id}"

    def messages(self, conversation_id: str) -> str:
        """``km``: the list of a conversation's kept messages."""
        return f"{self.base}m:{conversation_id}"

    def idempotency(self, conversation_id: str) -> str:
        """``ki``: the hash of a conversation's remembered idempotency keys."""
        return f"{self.base}i:{conversation_id}"

    def idempotency_order(self, conversation_id: str) -> str:
        """``kiq``: the list of caller idempotency keys, oldest first (bounds the hash)."""
        return f"{self.base}iq:{conversation_id}"

    def retry_order(self, conversation_id: str) -> str:
        """``krq``: the list of internal retry keys, oldest first (bounds the hash)."""
        return f"{self.base}rq:{conversation_id}"

    def states(self, conversation_id: str) -> str:
        """``ks``: the hash of a conversation's kept state versions."""
        return f"{self.base}s:{conversation_id}"

    def event_ids(self, conversation_id: str) -> str:
        """``ke``: the ids of a conversation's retained events (erasure needs no scan)."""
        return f"{self.base}e:{conversation_id}"

    def conversation_keys(self, conversation_id: str) -> tuple[str, ...]:
        """Every key that belongs to one conversation alone."""
        return (
            self.conversation(conversation_id),
            self.messages(conversation_id),
            self.idempotency(conversation_id),
            self.idempotency_order(conversation_id),
            self.retry_order(conversation_id),
            self.states(conversation_id),
            self.event_ids(conversation_id),
        )

    # ---- a tenant's and a contact's indexes ----------------------------------------------

    def tenant(self, tenant: str) -> str:
        """``kt``: a tenant's conversations by activity."""
        return f"{self.base}t:{tenant}"

    def tenant_status(self, status: str, tenant: str) -> str:
        """``kts``: a tenant's conversations of one status by activity."""
        return f"{self.base}ts:{status}:{tenant}"

    def contact(self, tenant: str, contact_id: str) -> str:
        """``kct``: a contact's conversations by activity."""
        return f"{self.base}k:{len(tenant)}:{tenant}:{contact_id}"

    def facts(self, tenant: str, contact_id: str) -> str:
        """``kf``: the hash of a contact's facts."""
        return f"{self.base}f:{len(tenant)}:{tenant}:{contact_id}"

    def status_counts(self, status: str, tenant: str) -> str:
        """``kxs``: a tenant's conversations of one status by expiry (``counts``)."""
        return f"{self.base}xs:{status}:{tenant}"

    def stage_counts(self, tenant: str, stage: str) -> str:
        """``kxg``: a tenant's conversations of one stage by expiry (``counts``)."""
        return f"{self.base}xg:{len(tenant)}:{tenant}:{stage}"

    def stages(self, tenant: str) -> str:
        """``kgs``: the set of stages a tenant has used."""
        return f"{self.base}gs:{tenant}"

    # ---- the store's own ----------------------------------------------------------------

    @property
    def expiries(self) -> str:
        """``K_EXP``: every conversation by expiry (sweep)."""
        return self.base + "exp"

    @property
    def idle(self) -> str:
        """``K_IDLE``: every conversation by idle time (sweep)."""
        return self.base + "idle"

    @property
    def fact_expiries(self) -> str:
        """``K_FX``: every fact by expiry (sweep)."""
        return self.base + "fx"

    @property
    def orphans(self) -> str:
        """``K_ORPH``: conversations Redis reclaimed whose events sweep() erases."""
        return self.base + "orph"

    @property
    def events(self) -> str:
        """``K_EV``: the event stream; also the routing key of every script."""
        return self.base + "ev"

    @property
    def event_number(self) -> str:
        """``K_EVN``: the last event number."""
        return self.base + "evn"

    @property
    def event_floor(self) -> str:
        """``K_EVT``: events numbered up to this fell out of the bounded log."""
        return self.base + "evt"

    # ---- a sharded store's home keys (only Python reads and writes them) ------------------

    @property
    def layout(self) -> str:
        """``layout``: the store's recorded layout, ``"none"`` or ``"tenant"`` (``_shards``)."""
        return self.base + "layout"

    @property
    def tags(self) -> str:
        """``tags``: the set of slot tags a sharded store has used (store-wide work)."""
        return self.base + "tags"

    @property
    def aliases(self) -> str:
        """``aliases``: imported conversation id → its slot tag (ids that carry none)."""
        return self.base + "aliases"
