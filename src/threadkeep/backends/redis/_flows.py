"""What each backend call does, written once as a generator of Redis requests.

A flow yields requests (a script by name, a plain command, or a blocking read of the event
stream) and receives each reply; its return value is the call's result. ``sync.py`` and
``aio.py`` pump the same flows, so the two drivers differ only in how they talk to Redis.
"""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from threadkeep._rules import events as ev, ops
from threadkeep._rules.lifecycle import Status
from threadkeep._rules.retention import is_expired
from threadkeep.backends.redis import _codec as codec
from threadkeep.backends.redis._keys import Keys

__all__ = ["Block", "Command", "Eval", "Flow", "Flows", "Request"]

T = TypeVar("T")


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

_ALL_STATUSES = ",".join(s.value for s in Status)
_SWEEP_ROUNDS = 100_000  # a sweep stops after this many batches even if work is left


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

    def _eval(self, name: str, *args: str | int) -> Eval:
        return Eval(name, (self.keys.base, *args))

    def ping(self) -> Flow[None]:
        """PING."""
        yield Command(("PING",))

    def create(self, op: ops.StartOp) -> Flow[tuple[ops.Outcome, ops.ConvRow]]:
        """See Backend.create (a retried call finds its own row and reports CREATED)."""
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
            *codec.encode_row(row),
        )
        return ops.Outcome(outcome), codec.decode_row(flat)

    def get(self, op: ops.GetOp) -> Flow[ops.ConvRow | None]:
        """See Backend.get: one HGETALL, expiry and tenant checked here."""
        fields = _as_dict((yield Command(("HGETALL", self.keys.conversation(op.conversation_id)))))
        if not fields:
            return None
        row = codec.decode_row(fields)
        if is_expired(row.expires_us, op.now_us):
            return None
        if op.tenant is not None and row.tenant != op.tenant:
            return None
        return row

    def find_open(self, op: ops.FindOpenOp) -> Flow[ops.ConvRow | None]:
        """See Backend.find_open."""
        flat = yield self._eval(
            "find_open", op.tenant, op.contact_id, _csv(op.open_statuses), op.now_us
        )
        return codec.decode_row(flat) if flat else None

    def append(self, op: ops.AppendOp) -> Flow[ops.AppendResult]:
        """See Backend.append; a call without a caller key gets an internal retry key."""
        retry_key = None if op.idempotency_key is not None else uuid.uuid4().hex
        on_message = ";".join(
            f"{source}={target}={ev.status_changed(source, target)[0]}"
            for source, target in op.on_message.items()
        )
        reply = yield self._eval(
            "append",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            codec.opt(op.idempotency_key),
            codec.opt(retry_key),
            codec.opt(op.fence),
            op.events_kept,
            on_message,
            codec.encode_message(
                op.role, op.content, op.now_us, op.metadata_json, op.idempotency_key
            ),
            ev.EventKind.MESSAGE_APPENDED.value,
            op.role,
            self.idempotency_kept,
            self.retry_kept,
        )
        outcome = ops.Outcome(reply[0])
        if len(reply) < 2:
            return ops.AppendResult(outcome)
        return ops.AppendResult(outcome, codec.decode_message(op.conversation_id, reply[1]))

    def _read(self, op: ops.ReadOp) -> Eval:
        if op.window:
            mode = "window"
        elif op.last is not None:
            mode = "last"
        else:
            mode = "after"
        return self._eval(
            "read",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            mode,
            op.last or 0,
            op.after or 0,
            op.limit,
        )

    def read_messages(self, op: ops.ReadOp) -> Flow[builtins.list[ops.MsgRow] | None]:
        """See Backend.read_messages."""
        reply = yield self._read(op)
        if reply[0] == ops.Outcome.NOT_FOUND.value:
            return None
        return [codec.decode_message(op.conversation_id, entry) for entry in reply[1]]

    def read_context(self, op: ops.ReadOp) -> Flow[builtins.list[tuple[str, str]] | None]:
        """See Backend.read_context: the same read, decoding only role and content."""
        reply = yield self._read(op)
        if reply[0] == ops.Outcome.NOT_FOUND.value:
            return None
        return [codec.decode_context(entry) for entry in reply[1]]

    def update(self, op: ops.UpdateOp) -> Flow[ops.UpdateResult]:
        """See Backend.update."""
        if op.field == "status":
            kind = ev.status_changed("", str(op.value))[0]
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
        if len(reply) < 3:
            return ops.UpdateResult(ops.Outcome(reply[0]))
        return ops.UpdateResult(ops.Outcome(reply[0]), codec.decode_row(reply[2]), reply[1])

    def save_state(self, op: ops.SaveStateOp) -> Flow[ops.StateResult]:
        """See Backend.save_state; a call token makes a retried save return its own version."""
        reply = yield self._eval(
            "save_state",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            op.value_json,
            codec.opt(op.expected_version),
            codec.opt(op.rollback_to),
            op.keep,
            op.events_kept,
            ev.EventKind.STATE_SAVED.value,
            uuid.uuid4().hex,
        )
        outcome = ops.Outcome(reply[0])
        if outcome is ops.Outcome.OK:
            version = int(reply[1])
            return ops.StateResult(outcome, version=version, saved_us=op.now_us, current=version)
        return ops.StateResult(outcome, current=int(reply[1]) if len(reply) > 1 else 0)

    def load_state(self, op: ops.LoadStateOp) -> Flow[tuple[ops.Outcome, ops.StateRow | None]]:
        """See Backend.load_state."""
        reply = yield self._eval(
            "load_state",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            codec.opt(op.version),
        )
        outcome = ops.Outcome(reply[0])
        if len(reply) < 3:
            return outcome, None
        saved, _, value_json = str(reply[2]).partition(" ")
        return outcome, ops.StateRow(int(reply[1]), value_json, int(saved))

    def list(self, op: ops.ListOp) -> Flow[builtins.list[ops.ConvRow]]:
        """See Backend.list."""
        activity, after_id = op.cursor if op.cursor is not None else (None, None)
        reply = yield self._eval(
            "list",
            op.tenant,
            op.now_us,
            codec.opt(op.status),
            codec.opt(op.stage),
            codec.opt(op.agent_id),
            codec.opt(op.contact_id),
            op.limit,
            codec.opt(activity),
            codec.opt(after_id),
        )
        return [codec.decode_row(flat) for flat in reply]

    def counts(self, op: ops.CountsOp) -> Flow[ops.CountsRow]:
        """See Backend.counts."""
        by_status, by_stage = yield self._eval("counts", op.tenant, op.now_us, _ALL_STATUSES)
        return ops.CountsRow(
            {k: int(v) for k, v in codec.pairs(by_status).items()},
            {k: int(v) for k, v in codec.pairs(by_stage).items()},
        )

    def _delete(self, mode: str, target: str, tenant: str | None, now_us: int, kept: int) -> Eval:
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

    def delete(self, op: ops.DeleteOp) -> Flow[bool]:
        """See Backend.delete."""
        live, _ = yield self._delete("id", op.conversation_id, op.tenant, op.now_us, op.events_kept)
        return bool(int(live))

    def delete_contact(self, op: ops.DeleteContactOp) -> Flow[int]:
        """See Backend.delete_contact."""
        live, _ = yield self._delete("contact", op.contact_id, op.tenant, op.now_us, op.events_kept)
        return int(live)

    def sweep(self, op: ops.SweepOp) -> Flow[ops.SweepRow]:
        """See Backend.sweep: one script per batch until no work is left."""
        idled = purged = facts = 0
        for _ in range(_SWEEP_ROUNDS):
            reply = yield self._eval(
                "sweep",
                op.now_us,
                "1" if op.dry_run else "0",
                op.idle_to,
                _csv(op.idle_from),
                op.batch,
                op.events_kept,
                ev.status_changed("", op.idle_to)[0],
                _ALL_STATUSES,
            )
            idled, purged, facts = idled + reply[0], purged + reply[1], facts + reply[2]
            if not reply[3]:
                break
        return ops.SweepRow(idled=idled, purged=purged, facts_purged=facts)

    def read_events(
        self, op: ops.EventsOp, wait: float
    ) -> Flow[builtins.list[ops.EventRow] | None]:
        """See Backend.read_events: XRANGE in a script, then XREAD BLOCK while nothing is new.

        ``after=None`` reads from the oldest retained event (as ops.EventsOp says), so it never
        reports an expired cursor.
        """
        after = codec.event_number(op.after)
        deadline = time.monotonic() + wait
        while True:
            reply = yield self._eval("events", codec.opt(after), codec.opt(op.tenant), op.limit)
            if reply[0] == "expired":
                return None
            rows = [codec.decode_event(entry) for entry in reply[2:]]
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return rows
            yield Block(reply[1], remaining)

    def acquire_lease(self, op: ops.LeaseOp) -> Flow[ops.LeaseResult]:
        """See Backend.acquire_lease."""
        reply = yield self._eval(
            "lease",
            "acquire",
            op.conversation_id,
            codec.opt(op.tenant),
            op.now_us,
            op.until_us,
            uuid.uuid4().hex,
        )
        if len(reply) < 2:
            return ops.LeaseResult(ops.Outcome(reply[0]))
        return ops.LeaseResult(ops.Outcome(reply[0]), int(reply[1]))

    def release_lease(self, op: ops.ReleaseOp) -> Flow[None]:
        """See Backend.release_lease."""
        yield self._eval("lease", "release", op.conversation_id, op.token)

    def remember(self, op: ops.RememberOp) -> Flow[ops.FactRow]:
        """See Backend.remember."""
        row = ops.FactRow(op.key, op.value_json, op.tier, op.now_us, op.expires_us)
        yield self._eval(
            "remember",
            op.tenant,
            op.contact_id,
            op.key,
            codec.encode_fact(row),
            op.expires_us,
            op.expires_us - op.now_us,
        )
        return row

    def recall(self, op: ops.RecallOp) -> Flow[builtins.list[ops.FactRow]]:
        """See Backend.recall: one HGETALL, expiry checked here."""
        hash_key = self.keys.facts(op.tenant, op.contact_id)
        stored = _as_dict((yield Command(("HGETALL", hash_key))))
        rows = [codec.decode_fact(key, blob) for key, blob in stored.items()]
        return sorted(
            (r for r in rows if (op.key is None or r.key == op.key) and r.expires_us > op.now_us),
            key=lambda r: r.key,
        )
