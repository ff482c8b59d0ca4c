"""What each op does, written once as a generator of Redis requests.

A flow yields requests (a script by name, a plain command, or a blocking read of the event
stream) and receives each reply; its return value is the op's ``Result``. ``sync.py`` and
``aio.py`` pump the same flows (``Flows.flow(op)``), so the two drivers differ only in how
they talk to Redis. The verdicts of changes are in the Lua scripts, which keep their own copy
of ``threadkeep._rules.decide`` for atomicity on the server.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from threadkeep._rules import decide, events as ev, lifecycle, ops
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
from threadkeep.backends.redis import _codec as codec
from threadkeep.backends.redis._keys import Keys

__all__ = ["Block", "Command", "Eval", "Flow", "Flows", "Request"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Eval:
    """Run the script ``name`` (EVALSHA) with the event stream as its routing key."""

    name: str
    args: tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Command:
    """Run one plain Redis command."""

    args: tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Block:
    """Wait up to ``seconds`` for an event after ``after_id`` (XREAD BLOCK)."""

    after_id: str
    seconds: float


Request = Eval | Command | Block
Flow = Generator[Request, Any, T]
_OK = Outcome.OK

_ALL_STATUSES = ",".join(s.value for s in Status)
_SWEEP_ROUNDS = 100_000  # a sweep stops after this many batches even if work is left
#: Most index entries one list script examines (then the next script resumes after them).
LIST_SCAN = 1000


def _csv(values: tuple[str, ...]) -> str:
    return ",".join(values)


def _as_dict(reply: Any) -> Mapping[str, str]:
    return reply if isinstance(reply, Mapping) else codec.pairs(reply)


class Flows:
    """The flows of one store.

    Args:
        keys: the store's key names.
        idempotency_kept: caller idempotency keys remembered per conversation (newest).
        retry_kept: internal retry keys remembered per conversation (newest).
    """

    def __init__(self, keys: Keys, idempotency_kept: int, retry_kept: int = 64) -> None:
        self.keys = keys
        self.idempotency_kept = idempotency_kept
        self.retry_kept = retry_kept
        self._routes = handlers(self)

    def flow(self, op: ops.Op[R]) -> Flow[Result[R]]:
        """Return the flow that carries out ``op``."""
        make = cast("Callable[[ops.Op[R]], Flow[Result[R]]]", self._routes[type(op)])
        return make(op)

    def _eval(self, name: str, *args: str | int) -> Eval:
        return Eval(name, (self.keys.base, *args))

    def ping(self) -> Flow[None]:
        """PING."""
        yield Command(("PING",))

    # ---- conversations ------------------------------------------------------------------

    @handles(ops.StartOp)
    def _create(self, op: ops.StartOp) -> Flow[Result[ConversationRow]]:
        """A retried call finds its own row and reports CREATED."""
        row = op.row
        kind, data = ev.started(row.contact_id, row.status, row.stage)
        outcome, flat = yield self._eval(
            "create",
            "1" if op.resume else "0",
            _csv(op.open_statuses),
            op.events_kept,
            kind,
            codec.json_text(data),
            _ALL_STATUSES,
            *codec.encode_conversation(row),
        )
        return Result(Outcome(outcome), codec.decode_conversation(flat))

    @handles(ops.GetOp)
    def _get(self, op: ops.GetOp) -> Flow[Result[ConversationRow | None]]:
        """One HGETALL; the visibility verdict taken here."""
        reply = yield Command(("HGETALL", self.keys.conversation(op.conversation_id)))
        fields = _as_dict(reply)
        found = codec.decode_conversation(fields) if fields else None
        row = decide.visible(found, op.tenant, op.now_us)
        return Result(_OK if row is not None else Outcome.NOT_FOUND, row)

    @handles(ops.FindOpenOp)
    def _find_open(self, op: ops.FindOpenOp) -> Flow[Result[ConversationRow | None]]:
        flat = yield self._eval(
            "find_open", op.tenant, op.contact_id, _csv(op.open_statuses), op.now_us
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
        reply = yield self._eval(
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
        reply = yield self._eval(
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
        while True:
            flats, scan = yield self._eval(
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
        by_status, by_stage = yield self._eval("counts", op.tenant, op.now_us, _ALL_STATUSES)
        return Result(
            _OK,
            TenantCounts(
                {k: int(v) for k, v in codec.pairs(by_status).items()},
                {k: int(v) for k, v in codec.pairs(by_stage).items()},
            ),
        )

    def _erase(self, mode: str, target: str, tenant: str | None, now_us: int, kept: int) -> Eval:
        kind, data = ev.deleted()
        return self._eval(
            "delete",
            mode,
            target,
            codec.opt(tenant),
            now_us,
            kept,
            kind,
            codec.json_text(data),
            _ALL_STATUSES,
            uuid.uuid4().hex,
        )

    @handles(ops.DeleteOp)
    def _delete(self, op: ops.DeleteOp) -> Flow[Result[None]]:
        reply = yield self._erase("id", op.conversation_id, op.tenant, op.now_us, op.events_kept)
        return Result(_OK if int(reply[0]) else Outcome.NOT_FOUND, None)

    @handles(ops.DeleteContactOp)
    def _delete_contact(self, op: ops.DeleteContactOp) -> Flow[Result[ErasureCounts]]:
        reply = yield self._erase("contact", op.contact_id, op.tenant, op.now_us, op.events_kept)
        live, messages, states, facts, events = (int(n) for n in reply[:5])
        return Result(_OK, ErasureCounts(tuple(reply[5:]), live, messages, states, facts, events))

    @handles(ops.SweepOp)
    def _sweep(self, op: ops.SweepOp) -> Flow[Result[SweepCounts]]:
        """One script per batch until no work is left (a dry run too: bounded counts)."""
        idled = purged = facts = 0
        for n in range(_SWEEP_ROUNDS):
            reply = yield self._eval(
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
        return Result(_OK, SweepCounts(idled=idled, purged=purged, facts_purged=facts))

    # ---- messages -----------------------------------------------------------------------

    @handles(ops.AppendOp)
    def _append(self, op: ops.AppendOp) -> Flow[Result[MessageRow | None]]:
        """A call without a caller key gets an internal retry key."""
        retry_key = None if op.idempotency_key is not None else uuid.uuid4().hex
        reply = yield self._eval(
            "append",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            codec.opt(op.idempotency_key),
            codec.opt(retry_key),
            codec.opt(op.fence),
            op.events_kept,
            _ON_MESSAGE if op.on_message is _LIFECYCLE else _on_message(op.on_message),
            codec.encode_message(
                op.role,
                op.content,
                op.now_us,
                op.metadata_json,
                op.idempotency_key,
                op.payload_json,
                op.link,
            ),  # fmt: skip
            ev.EventKind.MESSAGE_APPENDED.value,
            op.role,
            self.idempotency_kept,
            self.retry_kept,
        )
        message = codec.decode_message(op.conversation_id, reply[1]) if len(reply) > 1 else None
        return Result(Outcome(reply[0]), message)

    @handles(ops.AppendManyOp)
    def _append_many(self, op: ops.AppendManyOp) -> Flow[Result[list[tuple[MessageRow, bool]]]]:
        """A call token makes a resent batch answer as it did."""
        items: list[str | int] = []
        for item in op.items:
            items += [codec.opt(item.idempotency_key), codec.encode_new(item, op.now_us), item.role]
        reply = yield self._eval(
            "append_many",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            uuid.uuid4().hex,
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

    def _rewrite(self, name: str, op: ops.PopOp | ops.ClearOp, kind: ev.EventKind) -> Eval:
        return self._eval(
            name,
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            uuid.uuid4().hex,
            op.events_kept,
            kind.value,
            self.retry_kept,
            Status.CLOSED.value,
        )

    @handles(ops.PopOp)
    def _pop(self, op: ops.PopOp) -> Flow[Result[MessageRow | None]]:
        """A call token makes a resent pop answer as it did (and pop nothing more)."""
        reply = yield self._rewrite("pop", op, ev.EventKind.MESSAGE_POPPED)
        popped = codec.decode_message(op.conversation_id, reply[1]) if len(reply) > 1 else None
        return Result(Outcome(reply[0]), popped)

    @handles(ops.ClearOp)
    def _clear(self, op: ops.ClearOp) -> Flow[Result[int]]:
        """A call token makes a resent clear answer as it did."""
        reply = yield self._rewrite("clear", op, ev.EventKind.MESSAGES_CLEARED)
        return Result(Outcome(reply[0]), int(reply[1]) if len(reply) > 1 else 0)

    @handles(ops.ReplaceOp)
    def _replace(self, op: ops.ReplaceOp) -> Flow[Result[tuple[list[MessageRow], int]]]:
        """A call token makes a resent replace answer as it did."""
        items: list[str | int] = []
        for item in op.items:
            items += [codec.opt(item.idempotency_key), codec.encode_new(item, op.now_us)]
        reply = yield self._eval(
            "replace",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            uuid.uuid4().hex,
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
        if op.last is not None:
            mode, point = "last", 0
        elif op.before is not None:
            mode, point = "before", op.before
        else:
            mode, point = "after", op.after
        reply = yield self._eval(
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

    @handles(ops.KeyOp)
    def _key(self, op: ops.KeyOp) -> Flow[Result[MessageRow | None]]:
        """The read script, by idempotency key (the newest ``idempotency_keys`` are kept)."""
        reply = yield self._eval(
            "read", op.conversation_id, codec.opt(op.tenant), op.now_us, "key", 0, op.key, 0
        )
        if reply[0] == Outcome.NOT_FOUND.value:
            return Result(Outcome.NOT_FOUND, None)
        found = [codec.decode_message(op.conversation_id, e) for e in reply[1]]
        return Result(_OK, found[0] if found else None)

    @handles(ops.DeliveryOp)
    def _delivery(self, op: ops.DeliveryOp) -> Flow[Result[MessageRow | None]]:
        """Read the message, decide in Python, replace it if unchanged since (else again)."""
        cid, tenant = op.conversation_id, codec.opt(op.tenant)
        while True:
            reply = yield self._eval("delivery", cid, tenant, op.now_us, op.seq, "", "", "", "", 0)
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
                "delivery", cid, tenant, op.now_us, op.seq, entry, new, kind,
                codec.json_text(data), op.events_kept,
            )  # fmt: skip
            if reply[0] == Outcome.NOT_FOUND.value:
                return Result(Outcome.NOT_FOUND, None)
            if reply[0] == _OK.value:
                return Result(_OK, message._replace(metadata_json=verdict.metadata_json))

    @handles(ops.WindowOp)
    def _window(self, op: ops.WindowOp) -> Flow[Result[tuple[Sequence[WindowLike], int]]]:
        """The same read script: the window and ``extra`` messages before it."""
        reply = yield self._eval(
            "read", op.conversation_id, codec.opt(op.tenant), op.now_us, "window", op.extra, 0, 0
        )
        if reply[0] == Outcome.NOT_FOUND.value:
            return Result(Outcome.NOT_FOUND, ([], 0))
        messages = [codec.decode_message(op.conversation_id, e) for e in reply[1]]
        window = [WindowRow(m.role, m.content, m.payload_json, m.link) for m in messages]
        return Result(_OK, (window, int(reply[2])))

    # ---- state --------------------------------------------------------------------------

    @handles(ops.SaveStateOp)
    def _save_state(self, op: ops.SaveStateOp) -> Flow[Result[int]]:
        """A call token makes a retried save return its own version."""
        reply = yield self._eval(
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
            uuid.uuid4().hex,
        )
        return Result(Outcome(reply[0]), int(reply[1]) if len(reply) > 1 else 0)

    @handles(ops.LoadStateOp)
    def _load_state(self, op: ops.LoadStateOp) -> Flow[Result[StateRow | None]]:
        reply = yield self._eval(
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
        """XRANGE in a script, then XREAD BLOCK while nothing is new."""
        deadline = time.monotonic() + op.wait
        while True:
            reply = yield self._eval("events", codec.opt(op.after), codec.opt(op.tenant), op.limit)
            if reply[0] == Outcome.EXPIRED.value:
                return Result(Outcome.EXPIRED, [])
            rows = [codec.decode_event(entry) for entry in reply[2:]]
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return Result(_OK, rows)
            yield Block(reply[1], remaining)

    @handles(ops.LeaseOp)
    def _lease(self, op: ops.LeaseOp) -> Flow[Result[int]]:
        reply = yield self._eval(
            "lease",
            "acquire",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            op.until_us,
            uuid.uuid4().hex,
        )
        return Result(Outcome(reply[0]), int(reply[1]) if len(reply) > 1 else 0)

    @handles(ops.ReleaseOp)
    def _release(self, op: ops.ReleaseOp) -> Flow[Result[None]]:
        yield self._eval("lease", "release", op.conversation_id, op.token)
        return Result(_OK, None)

    @handles(ops.RememberOp)
    def _remember(self, op: ops.RememberOp) -> Flow[Result[FactRow]]:
        row = FactRow(op.key, op.value_json, op.tier, op.now_us, op.expires_us, op.source_json)
        history = yield self._eval(
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
        """One HGETALL, expiry checked here."""
        stored = _as_dict((yield Command(("HGETALL", self.keys.facts(op.tenant, op.contact_id)))))
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
        done = 0
        if op.messages:
            args: list[str | int] = []
            for old, new in op.messages:
                args += (_entry(old), _entry(new), old.idempotency_key or "")
            done += yield self._eval("rewrite", "messages", op.conversation_id or "", *args)
        if op.states:
            args = []
            for old_state, new_state in op.states:
                saved = f"{old_state.saved_us} "
                args += (
                    old_state.version,
                    saved + old_state.value_json,
                    saved + new_state.value_json,
                )
            done += yield self._eval("rewrite", "states", op.conversation_id or "", *args)
        if op.archived:
            args = []
            for old, new in op.archived:
                args += (old.idempotency_key or "", _entry(old), _entry(new))
            done += yield self._eval("rewrite", "keys", op.conversation_id or "", *args)
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
            done += yield self._eval(
                "rewrite", "facts", op.tenant or "", op.contact_id or "", *args
            )
        return Result(_OK, done)

    @handles(ops.ArchivedOp)
    def _archived(self, op: ops.ArchivedOp) -> Flow[Result[tuple[list[MessageRow], str]]]:
        """One HSCAN of the idempotency hash (the retry fields, tab-prefixed, left out)."""
        after, fields = yield Command(
            ("HSCAN", self.keys.idempotency(op.conversation_id), op.cursor or "0",
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
        head = f"{len(op.tenant)}:{op.tenant}:"
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in head) + "*"
        after, members = yield Command(
            ("ZSCAN", self.keys.fact_expiries, op.cursor or "0", "MATCH", pattern,
             "COUNT", op.limit)
        )  # fmt: skip
        contacts = dict.fromkeys(m[len(head) :].split("\n", 1)[0] for m, _ in members)
        return Result(_OK, (list(contacts), "" if str(after) == "0" else str(after)))


def _entry(row: MessageRow) -> str:
    """A stored message entry, ``"seq body"``, as the scripts keep it."""
    body = codec.encode_message(
        row.role, row.content, row.created_us, row.metadata_json, row.idempotency_key,
        row.payload_json, row.link,
    )  # fmt: skip
    return f"{row.seq} {body}"


def _on_message(table: Mapping[str, str]) -> str:
    """The on-message table as the append script reads it: "from=to=event kind;…"."""
    return ";".join(
        f"{source}={target}={lifecycle.change_kind(target).value}"
        for source, target in table.items()
    )


_LIFECYCLE = lifecycle.ON_MESSAGE_VALUES
_ON_MESSAGE = _on_message(_LIFECYCLE)
