"""What each op does, written once as a generator of Redis requests.

A flow yields requests (a script by name, a plain command, or a blocking read of the event
stream) and receives each reply; its return value is the op's ``Result``. ``sync.py`` and
``aio.py`` pump the same flows (``Flows.flow(op)``), so the two drivers differ only in how
they talk to Redis. The verdicts of changes are in the Lua scripts, which keep their own copy
of ``threadkeep._rules.decide`` for atomicity on the server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final, TypeVar

from threadkeep._exceptions import InvalidInput
from threadkeep._rules import decide, events as ev, lifecycle, ops
from threadkeep._rules.builders import fast_builder
from threadkeep._rules.lifecycle import Status
from threadkeep._rules.ops import Outcome, Result
from threadkeep._rules.rows import (
    ConversationRow,
    ErasureCounts,
    EventRow,
    FactRow,
    MessageRow,
    StateRow,
    SweepCounts,
    TenantCounts,
    WindowLike,
    WindowRow,
)
from threadkeep.backends._common import handlers, handles
from threadkeep.backends.redis import _codec as codec, _shards as shards
from threadkeep.backends.redis._keys import Keys

__all__ = ["READY", "Block", "Command", "Eval", "Flow", "Flows", "Pause", "Request", "Transaction"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Eval:
    """Run the script ``name`` (EVALSHA) with ``route`` (an event stream) as its routing key.

    ``again``: the arguments to send instead when the request is sent again (after a lost
    reply, ``Eval.resent``); None: the same. A first attempt can say that what it carries is
    new (an id made for it: create.lua), so the script need not look for it.
    """

    name: str
    route: str
    args: tuple[str | int, ...]
    again: tuple[str | int, ...] | None = None

    def resent(self) -> Eval:
        """The request to send again: ``again``'s arguments, if any."""
        return self if self.again is None else Eval(self.name, self.route, self.again)


@dataclass(frozen=True, slots=True)
class Command:
    """Run one plain Redis command."""

    args: tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Block:
    """Wait up to ``seconds`` for an event after ``after_id`` in ``stream`` (XREAD BLOCK)."""

    stream: str
    after_id: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Pause:
    """Sleep ``seconds`` (a sharded store's follower without a tenant polls its tags)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Transaction:
    """Run plain commands in one ``MULTI``/``EXEC``: one snapshot; the reply lists theirs."""

    commands: tuple[tuple[str | int, ...], ...]


Request = Eval | Command | Block | Pause | Transaction
#: A request that does nothing: a driver sends it before its first flow, so that it has asked
#: the server what it is and read the store's layout (``Flows.layout``) before a flow starts.
READY: Final = Pause(0.0)
Flow = Generator[Request, Any, T]
_OK = Outcome.OK

_ALL_STATUSES = ",".join(s.value for s in Status)
_SWEEP_ROUNDS = 100_000  # a sweep stops after this many batches even if work is left
#: Most index entries one list script examines (then the next script resumes after them).
LIST_SCAN = 1000
#: How often a follower of a sharded store's events without a tenant reads its tags again.
POLL_SECONDS = 0.1


def _csv(values: tuple[str, ...]) -> str:
    return ",".join(values)


def _as_dict(reply: Any) -> Mapping[str, str]:
    return reply if isinstance(reply, Mapping) else codec.pairs(reply)


class Flows:
    """The flows of one store.

    Until ``layout`` ran (the drivers run it on first use) a store is read in the one-slot
    layout; in the sharded one (``sharded``) every op first finds its slot tag (``_shards``).

    Args:
        keys: the store's key names (its home keys, in the sharded layout).
        idempotency_kept: caller idempotency keys remembered per conversation (newest).
        retry_kept: internal retry keys remembered per conversation (newest).
    """

    def __init__(self, keys: Keys, idempotency_kept: int, retry_kept: int = 64) -> None:
        self.keys = keys
        self.idempotency_kept = idempotency_kept
        self.retry_kept = retry_kept
        self._kept = (str(idempotency_kept), str(retry_kept))  # an append's, as text (once)
        self.sharded = False
        self.cluster = False  # on a Redis Cluster (``layout`` says): reads go through scripts
        self._registered: set[str] = set()  # tags known to be in the store's set of tags
        self._home = (keys.events, keys.base)  # the routing key and key base of ``keys``
        self._routes = handlers(self)

    def layout(self, wanted: str | None, cluster: bool) -> Generator[Command, Any, None]:
        """Read the store's recorded layout (record it for a new store); refuse a mismatch.

        A store that holds one-slot data but records no layout was written before layouts
        were recorded: it is in the one-slot layout, recorded now (and a sharded store whose
        record was lost is known by its set of tags).

        Raises:
            InvalidInput: ``wanted`` is not the layout the store records.
        """
        home = self.keys
        recorded = yield Command(("GET", home.layout))
        if recorded is None:
            old = yield Command(("EXISTS", home.event_number, home.fact_expiries, home.idle))
            spread = yield Command(("EXISTS", home.tags))
            fresh = shards.TENANT if cluster else shards.NONE
            choice = shards.NONE if old else shards.TENANT if spread else (wanted or fresh)
            yield Command(("SET", home.layout, choice, "NX"))
            recorded = yield Command(("GET", home.layout))
        if wanted is not None and wanted != recorded:
            raise InvalidInput(
                f"redis store {home.prefix!r} is in the shard={recorded} layout; open it with "
                f"?shard={recorded} (or without ?shard), or use another prefix for shard={wanted}",
                field="shard",
            )
        self.sharded = recorded == shards.TENANT
        self.cluster = cluster

    # ---- routing ------------------------------------------------------------------------

    def _route(self, conversation_id: str, tenant: str | None) -> Flow[Keys]:
        """The keys of a conversation's slot: the tenant's tag, the id's own, or its alias."""
        if not self.sharded:
            return self.keys
        if tenant is not None:
            return self.keys.at(shards.tenant_tag(tenant))
        tag = shards.id_tag(conversation_id)
        if tag is None:  # imported: recorded in the aliases (absent: no such conversation)
            tag = yield Command(("HGET", self.keys.aliases, conversation_id))
        return self.keys.at(tag or shards.tenant_tag(conversation_id))

    def _tenant(self, tenant: str, register: bool = False) -> Flow[Keys]:
        """The keys of a tenant's slot; ``register``: add its tag to the store's set first."""
        if not self.sharded:
            return self.keys
        tag = shards.tenant_tag(tenant)
        keys = self.keys.at(tag)
        if register and tag not in self._registered:
            yield Command(("SADD", self.keys.tags, tag))
            if not (yield Command(("EXISTS", keys.event_number))):
                yield from self._number_from_the_top(keys)
            self._registered.add(tag)
        return keys

    def _number_from_the_top(self, keys: Keys) -> Flow[None]:
        """Start a new tag's event numbers above every number any tag has given so far.

        Every tag numbers its own log and a reader of every tenant's events goes on from one
        number (``_merged_events``): a new tag numbering from 1 would write below it. Done
        after the tag joined the store's set, so a reader that saw the set without the tag
        read numbers no higher than these; one that saw the tag moved its numbering itself
        (``events_upto.lua``; then this ``SET NX`` does nothing). A process that stopped in
        between leaves the tag without a number: the next one to register it does this.
        """
        top = yield from self._top_number((yield from self._every_tag()))
        yield Command(("SET", keys.event_number, top, "NX"))

    @staticmethod
    def _top_number(tags: list[Keys]) -> Flow[int]:
        """The highest event number any of ``tags`` has given (0: none)."""
        top = 0
        for keys in tags:
            top = max(top, int((yield Command(("GET", keys.event_number))) or 0))
        return top

    def _every_tag(self) -> Flow[list[Keys]]:
        """The keys of every slot the store has used (store-wide work)."""
        if not self.sharded:
            return [self.keys]
        tags = yield Command(("SMEMBERS", self.keys.tags))
        return [self.keys.at(tag) for tag in sorted(tags)]

    def _imported(self, row: ConversationRow) -> Flow[ConversationRow | None]:
        """Record an imported id's slot (the tenant's) in the aliases.

        Returns:
            None, or the conversation that already has the id in another slot.

        Raises:
            InvalidInput: the id looks made by a sharded store for another tenant's slot.
        """
        tag = shards.tenant_tag(row.tenant)
        own = shards.id_tag(row.id)
        if own is not None:
            if own != tag:
                raise InvalidInput(
                    f"conversation id {row.id!r} carries the slot tag {own!r} of another "
                    f"tenant than {row.tenant!r}; import it into its own tenant",
                    field="conversation_id",
                )
            return None
        if (yield Command(("HSETNX", self.keys.aliases, row.id, tag))):
            return None
        old = yield Command(("HGET", self.keys.aliases, row.id))
        if old != tag:
            found = _as_dict((yield Command(("HGETALL", self.keys.at(old).conversation(row.id)))))
            if found:
                return codec.decode_conversation(found)
            yield Command(("HSET", self.keys.aliases, row.id, tag))  # that one is gone
        return None

    def flow(self, op: ops.Op[R]) -> Flow[Result[R]]:
        """Return the flow that carries out ``op``."""
        make: Callable[[ops.Op[R]], Flow[Result[R]]] = self._routes[type(op)]  # (no cast call)
        return make(op)

    def _eval(
        self, keys: Keys, name: str, *args: str | int, again: Sequence[str | int] | None = None
    ) -> Eval:
        """Run script ``name`` on ``keys``'s slot (``again``: the arguments of a resend)."""
        if keys is self.keys:  # the store's own (every op of a one-slot store): names made once
            events, base = self._home
        else:
            events, base = keys.events, keys.base
        return Eval(name, events, (base, *args), None if again is None else (base, *again))

    def ping(self) -> Flow[None]:
        """PING."""
        yield Command(("PING",))

    # ---- conversations ------------------------------------------------------------------

    @handles(ops.StartOp)
    def _create(self, op: ops.StartOp) -> Flow[Result[ConversationRow]]:
        """A retried call finds its own row and reports CREATED."""
        row = op.row
        if self.sharded and op.given_id:
            other = yield from self._imported(row)
            if other is not None:  # the id is taken in another slot: what a retry would see
                return Result(Outcome.CREATED, other)
        elif self.sharded:
            row = replace(row, id=shards.tagged(row.id, shards.tenant_tag(row.tenant)))
        keys = yield from self._tenant(row.tenant, register=True)
        kind, data = ev.started(row.contact_id, row.status, row.stage)
        head = (
            "1" if op.resume else "0",
            _csv(op.open_statuses),
            op.events_kept,
            kind,
            codec.json_text(data),
            _ALL_STATUSES,
        )
        fields = codec.encode_conversation(row)
        # a first attempt with an id made here (80 random bits): no row of it can exist yet
        first = "1" if op.given_id else "0"
        reply = yield self._eval(keys, "create", *head, first, *fields, again=(*head, "1", *fields))
        if len(reply) == 1:  # made now: stored as given (the script echoes no row back)
            return Result(Outcome.CREATED, row)
        return Result(Outcome(reply[0]), codec.decode_conversation(reply[1]))

    @handles(ops.GetOp)
    def _get(self, op: ops.GetOp) -> Flow[Result[ConversationRow | None]]:
        """One HGETALL; the visibility verdict taken here."""
        keys = yield from self._route(op.conversation_id, op.tenant)
        reply = yield Command(("HGETALL", keys.conversation(op.conversation_id)))
        fields = _as_dict(reply)
        found = codec.decode_conversation(fields) if fields else None
        row = decide.visible(found, op.tenant, op.now_us)
        return Result(_OK if row is not None else Outcome.NOT_FOUND, row)

    @handles(ops.FindOpenOp)
    def _find_open(self, op: ops.FindOpenOp) -> Flow[Result[ConversationRow | None]]:
        keys = yield from self._tenant(op.tenant)
        flat = yield self._eval(
            keys, "find_open", op.tenant, op.contact_id, _csv(op.open_statuses), op.now_us
        )
        return Result(_OK, codec.decode_conversation(flat) if flat else None)

    @handles(ops.UpdateOp)
    def _update(self, op: ops.UpdateOp) -> Flow[Result[ConversationRow | None]]:
        if op.field == "status":
            kind = lifecycle.change_kind(str(op.value)).value
        elif op.field == "agent_id":
            kind = ev.EventKind.AGENT_ASSIGNED.value
        else:
            kind = ev.EventKind.STAGE_CHANGED.value
        keys = yield from self._route(op.conversation_id, op.tenant)
        reply = yield self._eval(
            keys,
            "update",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            op.field,
            codec.opt(op.value),
            _csv(op.allowed_from),
            op.events_kept,
            kind,
        )
        row = codec.decode_conversation(reply[2]) if len(reply) > 2 else None
        return Result(Outcome(reply[0]), row)

    @handles(ops.RetainOp)
    def _retain(self, op: ops.RetainOp) -> Flow[Result[ConversationRow | None]]:
        r = op.retention
        keys = yield from self._route(op.conversation_id, op.tenant)
        reply = yield self._eval(
            keys,
            "retain",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            codec.opt(r.ttl_us),
            r.idle_after_us,
            r.window,
            codec.opt(r.max_messages),
            op.events_kept,
            ev.EventKind.RETENTION_CHANGED.value,
        )
        row = codec.decode_conversation(reply[1]) if len(reply) > 1 else None
        return Result(Outcome(reply[0]), row)

    @handles(ops.ListOp)
    def _list(self, op: ops.ListOp) -> Flow[Result[list[ConversationRow]]]:
        """One script per ``LIST_SCAN`` index entries, until the page is full or none is left.

        A filter the index does not serve (stage, agent) may have to look at every
        conversation of the tenant; in bounded scripts, other clients' commands run between.
        """
        activity, after_id = op.cursor if op.cursor is not None else (None, None)
        rows: list[ConversationRow] = []
        scan: Sequence[str | int] = ()
        keys = yield from self._tenant(op.tenant)
        while True:
            flats, scan = yield self._eval(
                keys,
                "list",
                op.tenant,
                op.now_us,
                codec.opt(op.status),
                codec.opt(op.stage),
                codec.opt(op.agent_id),
                codec.opt(op.contact_id),
                op.limit - len(rows),
                codec.opt(activity),
                codec.opt(after_id),
                *(codec.opt(part) for part in scan or (None, None)),
                LIST_SCAN,
            )
            rows += [codec.decode_conversation(flat) for flat in flats]
            if not scan or len(rows) > op.limit:
                return Result(_OK, rows)

    @handles(ops.CountsOp)
    def _counts(self, op: ops.CountsOp) -> Flow[Result[TenantCounts]]:
        keys = yield from self._tenant(op.tenant)
        by_status, by_stage = yield self._eval(keys, "counts", op.tenant, op.now_us, _ALL_STATUSES)
        return Result(
            _OK,
            TenantCounts(
                {k: int(v) for k, v in codec.pairs(by_status).items()},
                {k: int(v) for k, v in codec.pairs(by_stage).items()},
            ),
        )

    def _erase(
        self, keys: Keys, mode: str, target: str, tenant: str | None, now_us: int, kept: int
    ) -> Eval:
        kind, data = ev.deleted()
        return self._eval(
            keys,
            "delete",
            mode,
            target,
            codec.opt(tenant),
            now_us,
            kept,
            kind,
            codec.json_text(data),
            _ALL_STATUSES,
            _token(),
        )

    @handles(ops.DeleteOp)
    def _delete(self, op: ops.DeleteOp) -> Flow[Result[None]]:
        keys = yield from self._route(op.conversation_id, op.tenant)
        reply = yield self._erase(
            keys, "id", op.conversation_id, op.tenant, op.now_us, op.events_kept
        )
        return Result(_OK if int(reply[0]) else Outcome.NOT_FOUND, None)

    @handles(ops.DeleteContactOp)
    def _delete_contact(self, op: ops.DeleteContactOp) -> Flow[Result[ErasureCounts]]:
        keys = yield from self._tenant(op.tenant)
        reply = yield self._erase(
            keys, "contact", op.contact_id, op.tenant, op.now_us, op.events_kept
        )
        live, messages, states, facts, events = (int(n) for n in reply[:5])
        return Result(_OK, ErasureCounts(tuple(reply[5:]), live, messages, states, facts, events))

    @handles(ops.SweepOp)
    def _sweep(self, op: ops.SweepOp) -> Flow[Result[SweepCounts]]:
        """One script per batch until no work is left (a dry run too: bounded counts), per tag."""
        idled = purged = facts = 0
        for keys in (yield from self._every_tag()):
            counts = yield from self._sweep_tag(keys, op)
            idled, purged, facts = idled + counts[0], purged + counts[1], facts + counts[2]
        return Result(_OK, SweepCounts(idled=idled, purged=purged, facts_purged=facts))

    def _sweep_tag(self, keys: Keys, op: ops.SweepOp) -> Flow[tuple[int, int, int]]:
        idled = purged = facts = 0
        for n in range(_SWEEP_ROUNDS):
            reply = yield self._eval(
                keys,
                "sweep",
                op.now_us,
                "1" if op.dry_run else "0",
                op.idle_to,
                _csv(op.idle_from),
                op.batch,
                op.events_kept,
                lifecycle.change_kind(op.idle_to).value,
                _ALL_STATUSES,
                n * op.batch if op.dry_run else 0,  # a dry run removes nothing: it moves on
            )
            idled, purged, facts = idled + reply[0], purged + reply[1], facts + reply[2]
            if not reply[3]:
                break
        return idled, purged, facts

    # ---- messages -----------------------------------------------------------------------

    @handles(ops.AppendOp)
    def _append(self, op: ops.AppendOp) -> Flow[Result[MessageRow | None]]:
        """One script; its outcome read by name (``_OUTCOMES``), the Result made as a tuple.

        A message stored by this call comes back as its seq alone (append.lua): the row is
        the one ``decode_message`` would read from the entry the script stored.
        """
        if self.sharded:
            keys = yield from self._route(op.conversation_id, op.tenant)
        else:  # no generator of _route's for the store's own keys
            keys = self.keys
        reply = yield self._append_eval(keys, op)
        if len(reply) < 2:
            return Result(_OUTCOMES[reply[0]], None)
        stored = reply[1]
        if type(stored) is int:  # stored now: its seq; the rest is what was sent (no decoding)
            message = _NEW_TUPLE(MessageRow, (
                op.conversation_id, stored, op.role, op.content, op.now_us, op.metadata_json,
                op.idempotency_key, op.payload_json, op.link,
            ))  # fmt: skip
            return _NEW_TUPLE(Result, (_OK, message))
        message = codec.decode_message(op.conversation_id, stored)  # a replay: as it was stored
        return _NEW_TUPLE(Result, (_OUTCOMES[reply[0]], message))

    @handles(ops.AppendReadOp)
    def _append_read(
        self, op: ops.AppendReadOp
    ) -> Flow[Result[tuple[MessageRow, ConversationRow | None] | None]]:
        """The append script, answering also the record as it left it (its HGETALL)."""
        append = op.append
        keys = yield from self._route(append.conversation_id, append.tenant)
        reply = yield self._append_eval(keys, append, "1")
        if len(reply) < 3:
            return Result(_OUTCOMES[reply[0]], None)
        message = codec.decode_message(append.conversation_id, reply[1])
        return Result(_OUTCOMES[reply[0]], (message, codec.decode_conversation(reply[2])))

    def _append_eval(self, keys: Keys, op: ops.AppendOp, *read: str) -> Eval:
        """The run of ``append.lua`` (``read``: "1" to end the reply with the record).

        A call without a caller key gets an internal retry key. Every append makes one: its
        arguments are written out here (``codec.opt`` and ``codec.encode_message`` inlined,
        the event kind a module constant), the Eval built by its ``fast_builder``.
        """
        key, tenant, fence = op.idempotency_key, op.tenant, op.fence
        if keys is self.keys:  # the store's own (every op of a one-slot store): names made once
            events, base = self._home
        else:
            events, base = keys.events, keys.base
        # the body as codec.encode_message makes it (test_the_append_body_is_the_codecs)
        body = (
            f"{op.role}\n{op.now_us}:{op.link}\n{'' if key is None else '+' + key}\n"
            f"{op.metadata_json}\n{'' if op.payload_json is None else '+' + op.payload_json}\n"
            f"{op.content}"
        )
        args: tuple[str | int, ...] = (
            base,
            op.conversation_id,
            op.now_us,
            op.events_kept,
            _ON_MESSAGE if op.on_message is _LIFECYCLE else _on_message(op.on_message),
            body,
            _APPENDED,
            op.role,
            *self._kept,
            "+" + _token() if key is None else "",
        )
        # the optional tail: left out from its last non-empty argument on (append.lua)
        if read or fence is not None:
            args += ("" if tenant is None else f"+{tenant}", "" if key is None else f"+{key}",
                     "" if fence is None else f"+{fence}", *read)  # fmt: skip
        elif key is not None:
            args += ("" if tenant is None else f"+{tenant}", f"+{key}")
        elif tenant is not None:
            args += (f"+{tenant}",)
        return _new_eval("append", events, args, None)

    @handles(ops.AppendManyOp)
    def _append_many(self, op: ops.AppendManyOp) -> Flow[Result[list[tuple[MessageRow, bool]]]]:
        """A call token makes a resent batch answer as it did."""
        items: list[str | int] = []
        for item in op.items:
            items += [codec.opt(item.idempotency_key), codec.encode_new(item, op.now_us), item.role]
        keys = yield from self._route(op.conversation_id, op.tenant)
        reply = yield self._eval(
            keys,
            "append_many",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            _token(),
            codec.opt(op.fence),
            op.events_kept,
            _ON_MESSAGE if op.on_message is _LIFECYCLE else _on_message(op.on_message),
            ev.EventKind.MESSAGE_APPENDED.value,
            self.idempotency_kept,
            self.retry_kept,
            *items,
        )
        if reply[0] != _OK.value:
            return Result(Outcome(reply[0]), [])
        flat = reply[1]
        answers = [
            (codec.decode_message(op.conversation_id, flat[i]), flat[i + 1] == "1")
            for i in range(0, len(flat), 2)
        ]
        return Result(_OK, answers)

    def _rewrite(self, name: str, op: ops.PopOp | ops.ClearOp, kind: ev.EventKind) -> Flow[Any]:
        keys = yield from self._route(op.conversation_id, op.tenant)
        return (yield self._eval(
            keys,
            name,
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            _token(),
            op.events_kept,
            kind.value,
            self.retry_kept,
            Status.CLOSED.value,
        ))  # fmt: skip

    @handles(ops.PopOp)
    def _pop(self, op: ops.PopOp) -> Flow[Result[MessageRow | None]]:
        """A call token makes a resent pop answer as it did (and pop nothing more)."""
        reply = yield from self._rewrite("pop", op, ev.EventKind.MESSAGE_POPPED)
        popped = codec.decode_message(op.conversation_id, reply[1]) if len(reply) > 1 else None
        return Result(Outcome(reply[0]), popped)

    @handles(ops.ClearOp)
    def _clear(self, op: ops.ClearOp) -> Flow[Result[int]]:
        """A call token makes a resent clear answer as it did."""
        reply = yield from self._rewrite("clear", op, ev.EventKind.MESSAGES_CLEARED)
        return Result(Outcome(reply[0]), int(reply[1]) if len(reply) > 1 else 0)

    @handles(ops.ReplaceOp)
    def _replace(self, op: ops.ReplaceOp) -> Flow[Result[tuple[list[MessageRow], int]]]:
        """A call token makes a resent replace answer as it did."""
        items: list[str | int] = []
        for item in op.items:
            items += [codec.opt(item.idempotency_key), codec.encode_new(item, op.now_us)]
        keys = yield from self._route(op.conversation_id, op.tenant)
        reply = yield self._eval(
            keys,
            "replace",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            _token(),
            codec.opt(op.expected_last_seq),
            op.events_kept,
            ev.EventKind.MESSAGES_REPLACED.value,
            self.idempotency_kept,
            self.retry_kept,
            Status.CLOSED.value,
            *items,
        )
        outcome = Outcome(reply[0])
        if outcome is Outcome.CONFLICT:
            return Result(outcome, ([], int(reply[1])))
        if outcome is not _OK:
            return Result(outcome, ([], 0))
        kept = [codec.decode_message(op.conversation_id, e) for e in reply[1]]
        return Result(_OK, (kept, int(reply[2])))

    @handles(ops.ReadOp)
    def _read(self, op: ops.ReadOp) -> Flow[Result[list[MessageRow]]]:
        if op.last is not None and not self.cluster:
            return (yield from self._read_last(op, op.last))
        if op.last is not None:
            mode, point = "last", 0
        elif op.before is not None:
            mode, point = "before", op.before
        else:
            mode, point = "after", op.after
        keys = yield from self._route(op.conversation_id, op.tenant)
        reply = yield self._eval(
            keys,
            "read",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            mode,
            op.last or 0,
            point,
            op.limit,
        )
        if reply[0] == Outcome.NOT_FOUND.value:
            return Result(Outcome.NOT_FOUND, [])
        return Result(_OK, [codec.decode_message(op.conversation_id, e) for e in reply[1]])

    def _read_last(self, op: ops.ReadOp, last: int) -> Flow[Result[list[MessageRow]]]:
        """The last messages without a script: ``HMGET`` and ``LRANGE`` in one ``MULTI``.

        The same snapshot as the read script (``EXEC`` runs both at once), the same visibility
        verdict taken here; a list's tail needs nothing from the record. Redis then copies no
        entry through Lua: about 5 us of server time instead of 25 for 21 entries. On a Redis
        Cluster the script stays (redis-py's cluster pipelines and transactions differ by
        version).
        """
        cid = op.conversation_id
        keys = yield from self._route(cid, op.tenant)
        (tenant, expires), entries = yield Transaction(
            (
                ("HMGET", keys.conversation(cid), "tn", "exp"),
                ("LRANGE", keys.messages(cid), -last if last > 0 else 0, -1),
            )
        )
        if (
            tenant is None
            or (op.tenant is not None and tenant != op.tenant)
            or (expires is not None and int(expires) <= op.now_us)
        ):
            return Result(Outcome.NOT_FOUND, [])
        return Result(_OK, [codec.decode_message(cid, e) for e in entries])

    @handles(ops.KeyOp)
    def _key(self, op: ops.KeyOp) -> Flow[Result[MessageRow | None]]:
        """The read script, by idempotency key (the newest ``idempotency_keys`` are kept)."""
        keys = yield from self._route(op.conversation_id, op.tenant)
        reply = yield self._eval(
            keys, "read", op.conversation_id, codec.opt(op.tenant), op.now_us, "key", 0, op.key, 0
        )
        if reply[0] == Outcome.NOT_FOUND.value:
            return Result(Outcome.NOT_FOUND, None)
        found = [codec.decode_message(op.conversation_id, e) for e in reply[1]]
        return Result(_OK, found[0] if found else None)

    @handles(ops.DeliveryOp)
    def _delivery(self, op: ops.DeliveryOp) -> Flow[Result[MessageRow | None]]:
        """Read the message, decide in Python, replace it if unchanged since (else again)."""
        cid, tenant = op.conversation_id, codec.opt(op.tenant)
        keys = yield from self._route(cid, op.tenant)
        while True:
            reply = yield self._eval(
                keys, "delivery", cid, tenant, op.now_us, op.seq, "", "", "", "", 0
            )
            if reply[0] == Outcome.NOT_FOUND.value:
                return Result(Outcome.NOT_FOUND, None)
            entry = str(reply[1])
            message = codec.decode_message(cid, entry) if entry else None
            verdict = decide.delivery(message, op)
            if isinstance(verdict, Result):
                return verdict
            assert message is not None
            new = f"{message.seq} " + codec.encode_message(
                message.role, message.content, message.created_us, verdict.metadata_json,
                message.idempotency_key, message.payload_json, message.link,
            )  # fmt: skip
            kind, data = verdict.event
            reply = yield self._eval(
                keys, "delivery", cid, tenant, op.now_us, op.seq, entry, new, kind,
                codec.json_text(data), op.events_kept,
            )  # fmt: skip
            if reply[0] == Outcome.NOT_FOUND.value:
                return Result(Outcome.NOT_FOUND, None)
            if reply[0] == _OK.value:
                return Result(_OK, message._replace(metadata_json=verdict.metadata_json))

    @handles(ops.WindowOp)
    def _window(self, op: ops.WindowOp) -> Flow[Result[tuple[Sequence[WindowLike], int]]]:
        """The same read script: the window and ``extra`` messages before it."""
        keys = yield from self._route(op.conversation_id, op.tenant)
        reply = yield self._eval(
            keys, "read", op.conversation_id, codec.opt(op.tenant), op.now_us, "window",
            op.extra, 0, 0,
        )  # fmt: skip
        if reply[0] == Outcome.NOT_FOUND.value:
            return Result(Outcome.NOT_FOUND, ([], 0))
        messages = [codec.decode_message(op.conversation_id, e) for e in reply[1]]
        window = [WindowRow(m.role, m.content, m.payload_json, m.link) for m in messages]
        return Result(_OK, (window, int(reply[2])))

    # ---- state --------------------------------------------------------------------------

    @handles(ops.SaveStateOp)
    def _save_state(self, op: ops.SaveStateOp) -> Flow[Result[int]]:
        """A call token makes a retried save return its own version."""
        keys = yield from self._route(op.conversation_id, op.tenant)
        reply = yield self._eval(
            keys,
            "save_state",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            op.value_json,
            codec.opt(op.expected_version),
            codec.opt(op.rollback_to),
            op.versions_kept,
            op.events_kept,
            ev.EventKind.STATE_SAVED.value,
            _token(),
        )
        return Result(Outcome(reply[0]), int(reply[1]) if len(reply) > 1 else 0)

    @handles(ops.LoadStateOp)
    def _load_state(self, op: ops.LoadStateOp) -> Flow[Result[StateRow | None]]:
        keys = yield from self._route(op.conversation_id, op.tenant)
        reply = yield self._eval(
            keys,
            "load_state",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            codec.opt(op.version),
        )
        if len(reply) < 3:
            return Result(Outcome(reply[0]), None)
        saved, _, value_json = str(reply[2]).partition(" ")
        return Result(Outcome(reply[0]), StateRow(int(reply[1]), value_json, int(saved)))

    # ---- events, leases, facts ----------------------------------------------------------

    @handles(ops.EventsOp)
    def _read_events(self, op: ops.EventsOp) -> Flow[Result[list[EventRow]]]:
        """XRANGE in a script, then XREAD BLOCK while nothing is new.

        A read that found nothing (of its tenant) scanned the log up to its last number: the
        next read of this wait starts there, so a follower of one tenant scans each event of
        the others once, not again from its cursor on every write. That skips nothing: a script
        numbers and adds an event in one step (``emit``), so no event can later appear at or
        below a number the log had given. A read that finds events once moved on reads again
        from the caller's cursor and answers that: the answer is the one a read from the
        cursor gives (``CursorExpired`` for a cursor below the floor; events that a failover
        which lost writes numbered again below the position are not passed over). A read
        from the oldest retained (``after`` None) whose position then fell out of the log reads
        from the oldest retained again, as it was asked.

        A sharded store without a tenant reads every tag's log instead and polls.
        """
        if self.sharded and op.tenant is None:
            return (yield from self._merged_events(op))
        keys = self.keys if op.tenant is None else (yield from self._tenant(op.tenant))
        deadline = time.monotonic() + op.wait
        after = op.after
        while True:
            reply = yield self._eval(
                keys, "events", codec.opt(after), codec.opt(op.tenant), op.limit
            )
            if reply[0] == Outcome.EXPIRED.value:
                if op.after is None and after is not None:
                    after = None
                    continue
                return Result(Outcome.EXPIRED, [])
            rows = [codec.decode_event(entry) for entry in reply[2:]]
            if rows and after != op.after:
                # found once moved on: the answer is read from the caller's cursor again, so
                # it is what a read from there tells (an expired cursor, events a failover
                # renumbered below the position), at one scan per wake that finds events
                after = op.after
                continue
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return Result(_OK, rows)
            after = max(after or 0, _number(reply[1]))
            yield Block(keys.events, reply[1], remaining)

    def _merged_events(self, op: ops.EventsOp) -> Flow[Result[list[EventRow]]]:
        """Every tag's events numbered after the cursor, merged by number (then tag); polls.

        Each tag numbers its own log, so a number names one event per tag: a page ends between
        two numbers (past ``limit`` when many tags share its last number), and never past the
        last event read of a tag that had more, so the next read after its last number misses
        none. A tag whose numbers lag behind another's would give its next events numbers the
        reader has passed: so each tag first moves its numbering past the highest number any
        tag had given when the read began (``events_upto.lua``), and the read returns events
        up to that number only. The cursor is expired when any tag's log no longer holds what
        follows it.
        """
        deadline = time.monotonic() + op.wait
        while True:
            rows: list[tuple[int, str, EventRow]] = []
            bound = _NO_BOUND
            tags = yield from self._every_tag()
            upto = yield from self._top_number(tags)
            for keys in tags:
                reply = yield self._eval(keys, "events_upto", codec.opt(op.after), upto, op.limit)
                if reply[0] == Outcome.EXPIRED.value:
                    return Result(Outcome.EXPIRED, [])
                found = [codec.decode_event(entry) for entry in reply[2:]]
                if len(found) >= op.limit:
                    bound = min(bound, _number(found[-1].id))
                rows += [(_number(row.id), keys.base, row) for row in found]
            rows.sort(key=lambda item: item[:2])
            page = [item for item in rows if item[0] <= bound]
            if len(page) > op.limit:  # cut before the first number that does not fit whole
                cut = page[op.limit][0]
                page = [item for item in page if item[0] < cut] or [
                    item for item in page if item[0] == cut
                ]
            remaining = deadline - time.monotonic()
            if page or remaining <= 0:
                return Result(_OK, [row for _, _, row in page])
            yield Pause(min(remaining, POLL_SECONDS))

    @handles(ops.LeaseOp)
    def _lease(self, op: ops.LeaseOp) -> Flow[Result[int]]:
        keys = yield from self._route(op.conversation_id, op.tenant)
        reply = yield self._eval(
            keys,
            "lease",
            "acquire",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            op.until_us,
            _token(),
        )
        return Result(Outcome(reply[0]), int(reply[1]) if len(reply) > 1 else 0)

    @handles(ops.ReleaseOp)
    def _release(self, op: ops.ReleaseOp) -> Flow[Result[None]]:
        keys = yield from self._route(op.conversation_id, None)
        yield self._eval(keys, "lease", "release", op.conversation_id, op.token)
        return Result(_OK, None)

    @handles(ops.RememberOp)
    def _remember(self, op: ops.RememberOp) -> Flow[Result[FactRow]]:
        row = FactRow(op.key, op.value_json, op.tier, op.now_us, op.expires_us, op.source_json)
        keys = yield from self._tenant(op.tenant, register=True)
        history = yield self._eval(
            keys,
            "remember",
            op.tenant,
            op.contact_id,
            op.key,
            codec.encode_fact(row),
            op.expires_us,
            op.expires_us - op.now_us,
            op.source_json,
            decide.HISTORY_KEPT,
        )
        return Result(_OK, row._replace(history_json=str(history)))

    @handles(ops.RecallOp)
    def _recall(self, op: ops.RecallOp) -> Flow[Result[list[FactRow]]]:
        """One HMGET of the key's two fields (HGETALL for all facts), expiry checked here.

        A contact's hash grows with its facts (the service notes every Idempotency-Key there
        for a day), so recalling one fact reads only that fact's fields.
        """
        keys = yield from self._tenant(op.tenant)
        facts = keys.facts(op.tenant, op.contact_id)
        if op.key is not None:
            blob, meta = yield Command(("HMGET", facts, op.key, op.key + "\n"))
            rows = [] if blob is None else [codec.decode_fact(op.key, blob, meta)]
        else:
            stored = _as_dict((yield Command(("HGETALL", facts))))
            rows = [
                codec.decode_fact(key, blob, stored.get(key + "\n"))
                for key, blob in stored.items()
                if not key.endswith("\n")
            ]
        return Result(
            _OK,
            sorted(
                (r for r in rows if op.key in (None, r.key) and r.expires_us > op.now_us),
                key=lambda r: r.key,
            ),
        )

    @handles(ops.RewriteOp)
    def _rewrite_values(self, op: ops.RewriteOp) -> Flow[Result[int]]:
        """One script per kind of value (messages, key records, states, facts) it carries."""
        done, cid = 0, op.conversation_id or ""
        keys = (yield from self._route(cid, op.tenant)) if cid else self.keys
        if op.messages:
            args: list[str | int] = []
            for old, new in op.messages:
                args += (_entry(old), _entry(new), old.idempotency_key or "")
            done += yield self._eval(keys, "rewrite", "messages", cid, *args)
        if op.states:
            args = []
            for old_state, new_state in op.states:
                saved = f"{old_state.saved_us} "
                args += (
                    old_state.version,
                    saved + old_state.value_json,
                    saved + new_state.value_json,
                )
            done += yield self._eval(keys, "rewrite", "states", cid, *args)
        if op.archived:
            args = []
            for old, new in op.archived:
                args += (old.idempotency_key or "", _entry(old), _entry(new))
            done += yield self._eval(keys, "rewrite", "keys", cid, *args)
        if op.facts:
            args = []
            for old_fact, new_fact in op.facts:
                args += (
                    old_fact.key,
                    codec.encode_fact(old_fact),
                    codec.encode_fact(new_fact),
                    f"{old_fact.source_json}\n{old_fact.history_json}",
                    f"{new_fact.source_json}\n{new_fact.history_json}",
                )
            at = yield from self._tenant(op.tenant)
            done += yield self._eval(at, "rewrite", "facts", op.tenant, op.contact_id or "", *args)
        return Result(_OK, done)

    @handles(ops.ArchivedOp)
    def _archived(self, op: ops.ArchivedOp) -> Flow[Result[tuple[list[MessageRow], str]]]:
        """One HSCAN of the idempotency hash (the retry fields, tab-prefixed, left out)."""
        keys = yield from self._route(op.conversation_id, None)
        after, fields = yield Command(
            ("HSCAN", keys.idempotency(op.conversation_id), op.cursor or "0",
             "COUNT", op.limit)
        )  # fmt: skip
        rows = [
            codec.decode_message(op.conversation_id, entry)
            for field, entry in _as_dict(fields).items()
            if not field.startswith("\t")
        ]
        return Result(_OK, (rows, "" if str(after) == "0" else str(after)))

    @handles(ops.FactContactsOp)
    def _fact_contacts(self, op: ops.FactContactsOp) -> Flow[Result[tuple[list[str], str]]]:
        """One ZSCAN of the fact index, whose members start ``"len:tenant:contact"``."""
        keys = yield from self._tenant(op.tenant)
        head = f"{len(op.tenant)}:{op.tenant}:"
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in head) + "*"
        after, members = yield Command(
            ("ZSCAN", keys.fact_expiries, op.cursor or "0", "MATCH", pattern,
             "COUNT", op.limit)
        )  # fmt: skip
        contacts = dict.fromkeys(m[len(head) :].split("\n", 1)[0] for m, _ in members)
        return Result(_OK, (list(contacts), "" if str(after) == "0" else str(after)))


def _token() -> str:
    """A random call token or internal retry key: 32 hex digits (``uuid4().hex`` costs 3x)."""
    return os.urandom(16).hex()


def _entry(row: MessageRow) -> str:
    """A stored message entry, ``"seq body"``, as the scripts keep it."""
    body = codec.encode_message(
        row.role, row.content, row.created_us, row.metadata_json, row.idempotency_key,
        row.payload_json, row.link,
    )  # fmt: skip
    return f"{row.seq} {body}"


_NO_BOUND = 1 << 63


def _number(event_id: str) -> int:
    """The number of an event id (``"12-0"``)."""
    return int(event_id.partition("-")[0])


def _on_message(table: Mapping[str, str]) -> str:
    """The on-message table as the append script reads it: "from=to=event kind;…"."""
    return ";".join(
        f"{source}={target}={lifecycle.change_kind(target).value}"
        for source, target in table.items()
    )


_LIFECYCLE = lifecycle.ON_MESSAGE_VALUES
_ON_MESSAGE = _on_message(_LIFECYCLE)
#: An append's names, bound once: on Python 3.11 an enum member's class-attribute lookup
#: (``Outcome.OK``) and its ``.value`` each go through a slow path, and ``Outcome(text)`` runs
#: ``EnumType.__call__``; a Result and an Eval are made without their ``__new__``/``__init__``
#: frames (a NamedTuple by ``tuple.__new__``, a frozen dataclass by its ``fast_builder``).
_OUTCOMES: Final = MappingProxyType({outcome.value: outcome for outcome in Outcome})
_APPENDED: Final = ev.EventKind.MESSAGE_APPENDED.value
_NEW_TUPLE: Final = tuple.__new__
_new_eval: Final[
    Callable[[str, str, tuple[str | int, ...], tuple[str | int, ...] | None], Eval]
] = fast_builder(Eval)
