"""The in-memory reference backend: one process, nothing persisted.

Every call runs under one lock, so each op is atomic; data lives as long as the Store object.
It is the executable model of the rules that the real backends are tested against.
"""

from __future__ import annotations

import bisect
import builtins
import json
import threading
import time
from collections import defaultdict
from dataclasses import replace

from threadkeep._exceptions import InvalidInput
from threadkeep._rules import events as ev, ops
from threadkeep._rules.retention import is_expired
from threadkeep._url import StoreURL

__all__ = ["MemoryBackend"]


def parse_event_cursor(after: str | None) -> int:
    """Return an integer event cursor (0 for None).

    Raises:
        InvalidInput: when it is not a non-negative integer.
    """
    if after is None:
        return 0
    if not after.isdigit():
        raise InvalidInput(f"events cursor {after!r} is malformed", field="after")
    return int(after)


class MemoryBackend:
    """Reference backend holding everything in dicts under one lock."""

    def __init__(self, url: StoreURL | None = None) -> None:
        self._lock = threading.Condition(threading.RLock())
        self._convs: dict[str, ops.ConvRow] = {}
        # per tenant, (activity_us, id) of its conversations in ascending order: list() walks it
        self._order: dict[str, builtins.list[tuple[int, str]]] = defaultdict(builtins.list)
        self._msgs: dict[str, list[ops.MsgRow]] = defaultdict(list)
        self._idem: dict[tuple[str, str], ops.MsgRow] = {}
        self._states: dict[str, list[ops.StateRow]] = defaultdict(list)
        self._leases: dict[str, tuple[int, int]] = {}
        self._lease_tokens: dict[str, int] = defaultdict(int)
        self._events: dict[int, ops.EventRow] = {}
        self._last_event = 0
        self._trimmed = 0  # events with ids up to this fell out of the bounded log
        self._facts: dict[tuple[str, str, str], ops.FactRow] = {}

    # ---- helpers (caller holds the lock) ------------------------------------------------

    def _live(self, conversation_id: str, tenant: str | None, now_us: int) -> ops.ConvRow | None:
        row = self._convs.get(conversation_id)
        if row is None or is_expired(row.expires_us, now_us):
            return None
        if tenant is not None and row.tenant != tenant:
            return None
        return row

    def _emit(self, row: ops.ConvRow, event: tuple[str, dict[str, object]], keep: int) -> None:
        self._last_event += 1
        kind, data = event
        self._events[self._last_event] = ops.EventRow(
            id=str(self._last_event),
            kind=kind,
            tenant=row.tenant,
            conversation_id=row.id,
            data_json=json.dumps(data, separators=(",", ":")),
            at_us=row.activity_us,
        )
        if self._last_event > keep:
            self._trimmed = self._last_event - keep
            self._events.pop(self._trimmed, None)
        self._lock.notify_all()

    def _unindex(self, row: ops.ConvRow) -> None:
        keys = self._order[row.tenant]
        del keys[bisect.bisect_left(keys, (row.activity_us, row.id))]

    def _put(self, row: ops.ConvRow) -> None:
        old = self._convs.get(row.id)
        if old is not None:
            self._unindex(old)
        bisect.insort(self._order[row.tenant], (row.activity_us, row.id))
        self._convs[row.id] = row

    def _erase(self, conversation_id: str) -> None:
        old = self._convs.pop(conversation_id, None)
        if old is not None:
            self._unindex(old)
        for msg in self._msgs.pop(conversation_id, []):
            if msg.idempotency_key is not None:
                self._idem.pop((conversation_id, msg.idempotency_key), None)
        for key in [k for k in self._idem if k[0] == conversation_id]:
            del self._idem[key]
        self._states.pop(conversation_id, None)
        self._leases.pop(conversation_id, None)
        for event_id in [
            i for i, e in self._events.items() if e.conversation_id == conversation_id
        ]:
            del self._events[event_id]

    # ---- Backend ------------------------------------------------------------------------

    def ping(self) -> None:
        """Always answers."""

    def close(self) -> None:
        """Nothing to release."""

    def create(self, op: ops.StartOp) -> tuple[ops.Outcome, ops.ConvRow]:
        """See Backend.create."""
        with self._lock:
            if op.resume:
                found = self._find_open(
                    ops.FindOpenOp(
                        op.row.tenant, op.row.contact_id, op.open_statuses, op.row.created_us
                    )
                )
                if found is not None:
                    return ops.Outcome.EXISTING, found
            self._put(op.row)
            self._emit(
                op.row, ev.started(op.row.contact_id, op.row.status, op.row.stage), op.events_kept
            )
            return ops.Outcome.CREATED, op.row

    def get(self, op: ops.GetOp) -> ops.ConvRow | None:
        """See Backend.get."""
        with self._lock:
            return self._live(op.conversation_id, op.tenant, op.now_us)

    def _find_open(self, op: ops.FindOpenOp) -> ops.ConvRow | None:
        candidates = [
            r
            for r in self._convs.values()
            if r.tenant == op.tenant
            and r.contact_id == op.contact_id
            and r.status in op.open_statuses
            and not is_expired(r.expires_us, op.now_us)
        ]
        return max(candidates, key=lambda r: (r.activity_us, r.id), default=None)

    def find_open(self, op: ops.FindOpenOp) -> ops.ConvRow | None:
        """See Backend.find_open."""
        with self._lock:
            return self._find_open(op)

    def append(self, op: ops.AppendOp) -> ops.AppendResult:
        """See Backend.append."""
        with self._lock:
            row = self._live(op.conversation_id, op.tenant, op.now_us)
            if row is None:
                return ops.AppendResult(ops.Outcome.NOT_FOUND)
            if op.idempotency_key is not None:
                stored = self._idem.get((row.id, op.idempotency_key))
                if stored is not None:
                    return ops.AppendResult(ops.Outcome.DUPLICATE, stored)
            if row.status not in op.on_message:
                return ops.AppendResult(ops.Outcome.CLOSED)
            if op.fence is not None:
                token, until = self._leases.get(row.id, (0, 0))
                if token != op.fence or until <= op.now_us:
                    return ops.AppendResult(ops.Outcome.FENCED)
            seq = row.last_seq + 1
            msg = ops.MsgRow(
                row.id, seq, op.role, op.content, op.now_us, op.metadata_json, op.idempotency_key
            )
            kept = self._msgs[row.id]
            kept.append(msg)
            limit = row.retention.max_messages
            if limit is not None and len(kept) > limit:
                del kept[: len(kept) - limit]
            if op.idempotency_key is not None:
                self._idem[(row.id, op.idempotency_key)] = msg
            status = op.on_message[row.status]
            new = ops.touch(row, op.now_us, status=status, last_seq=seq, message_count=len(kept))
            self._put(new)
            self._emit(new, ev.message_appended(seq, op.role), op.events_kept)
            if status != row.status:
                self._emit(new, ev.status_changed(row.status, status), op.events_kept)
            return ops.AppendResult(ops.Outcome.OK, msg)

    def read_messages(self, op: ops.ReadOp) -> list[ops.MsgRow] | None:
        """See Backend.read_messages."""
        with self._lock:
            row = self._live(op.conversation_id, op.tenant, op.now_us)
            if row is None:
                return None
            kept = self._msgs.get(row.id, [])
            last = row.retention.window if op.window else op.last
            if last is not None:
                return list(kept[-last:])
            after = op.after or 0
            return [m for m in kept if m.seq > after][: op.limit]

    def read_context(self, op: ops.ReadOp) -> builtins.list[tuple[str, str]] | None:
        """See Backend.read_context."""
        rows = self.read_messages(op)
        return None if rows is None else [(m.role, m.content) for m in rows]

    def update(self, op: ops.UpdateOp) -> ops.UpdateResult:
        """See Backend.update."""
        with self._lock:
            row = self._live(op.conversation_id, op.tenant, op.now_us)
            if row is None:
                return ops.UpdateResult(ops.Outcome.NOT_FOUND)
            decision = ops.decide_update(row, op)
            if isinstance(decision, ops.UpdateResult):
                return decision
            new = ops.touch(row, op.now_us, **{op.field: op.value})
            self._put(new)
            self._emit(new, decision, op.events_kept)
            return ops.UpdateResult(ops.Outcome.OK, new, row.status)

    def save_state(self, op: ops.SaveStateOp) -> ops.StateResult:
        """See Backend.save_state."""
        with self._lock:
            row = self._live(op.conversation_id, op.tenant, op.now_us)
            if row is None:
                return ops.StateResult(ops.Outcome.NOT_FOUND)
            current = row.state_version
            if op.expected_version is not None and op.expected_version != current:
                return ops.StateResult(ops.Outcome.CONFLICT, current=current)
            versions = self._states[row.id]
            value = op.value_json
            if op.rollback_to is not None:
                old = next((s for s in versions if s.version == op.rollback_to), None)
                if old is None:
                    return ops.StateResult(ops.Outcome.NO_VERSION, current=current)
                value = old.value_json
            version = current + 1
            versions.append(ops.StateRow(version, value, op.now_us))
            del versions[: max(0, len(versions) - op.keep)]
            new = ops.touch(row, op.now_us, state_version=version)
            self._put(new)
            self._emit(new, ev.state_saved(version), op.events_kept)
            return ops.StateResult(
                ops.Outcome.OK, version=version, saved_us=op.now_us, current=version
            )

    def load_state(self, op: ops.LoadStateOp) -> tuple[ops.Outcome, ops.StateRow | None]:
        """See Backend.load_state."""
        with self._lock:
            row = self._live(op.conversation_id, op.tenant, op.now_us)
            if row is None:
                return ops.Outcome.NOT_FOUND, None
            versions = self._states.get(row.id, [])
            if op.version is None:
                return ops.Outcome.OK, versions[-1] if versions else None
            found = next((s for s in versions if s.version == op.version), None)
            return (ops.Outcome.OK, found) if found else (ops.Outcome.NO_VERSION, None)

    def list(self, op: ops.ListOp) -> builtins.list[ops.ConvRow]:
        """See Backend.list."""
        with self._lock:
            keys = self._order.get(op.tenant, [])
            end = len(keys) if op.cursor is None else bisect.bisect_left(keys, op.cursor)
            rows: builtins.list[ops.ConvRow] = []
            for i in range(end - 1, -1, -1):  # newest first, without copying the index
                r = self._convs[keys[i][1]]
                if (
                    not is_expired(r.expires_us, op.now_us)
                    and (op.status is None or r.status == op.status)
                    and (op.stage is None or r.stage == op.stage)
                    and (op.agent_id is None or r.agent_id == op.agent_id)
                    and (op.contact_id is None or r.contact_id == op.contact_id)
                ):
                    rows.append(r)
                    if len(rows) > op.limit:
                        break
            return rows

    def counts(self, op: ops.CountsOp) -> ops.CountsRow:
        """See Backend.counts."""
        with self._lock:
            by_status: dict[str, int] = defaultdict(int)
            by_stage: dict[str, int] = defaultdict(int)
            for r in self._convs.values():
                if r.tenant == op.tenant and not is_expired(r.expires_us, op.now_us):
                    by_status[r.status] += 1
                    if r.stage is not None:
                        by_stage[r.stage] += 1
            return ops.CountsRow(dict(by_status), dict(by_stage))

    def delete(self, op: ops.DeleteOp) -> bool:
        """See Backend.delete."""
        with self._lock:
            row = self._convs.get(op.conversation_id)
            if row is None or (op.tenant is not None and row.tenant != op.tenant):
                return False
            self._erase(row.id)
            self._emit(replace(row, activity_us=op.now_us), ev.deleted(), op.events_kept)
            return not is_expired(row.expires_us, op.now_us)

    def delete_contact(self, op: ops.DeleteContactOp) -> int:
        """See Backend.delete_contact."""
        with self._lock:
            rows = [
                r
                for r in self._convs.values()
                if r.tenant == op.tenant and r.contact_id == op.contact_id
            ]
            for row in rows:
                self._erase(row.id)
                self._emit(replace(row, activity_us=op.now_us), ev.deleted(), op.events_kept)
            for key in [k for k in self._facts if k[:2] == (op.tenant, op.contact_id)]:
                del self._facts[key]
            return sum(not is_expired(r.expires_us, op.now_us) for r in rows)

    def sweep(self, op: ops.SweepOp) -> ops.SweepRow:
        """See Backend.sweep."""
        with self._lock:
            expired = [r for r in self._convs.values() if is_expired(r.expires_us, op.now_us)]
            idle = [
                r
                for r in self._convs.values()
                if r.status in op.idle_from
                and r.idle_us <= op.now_us
                and not is_expired(r.expires_us, op.now_us)
            ]
            facts = [k for k, f in self._facts.items() if f.expires_us <= op.now_us]
            if not op.dry_run:
                for row in expired:
                    self._erase(row.id)
                for row in idle:
                    self._put(new := replace(row, status=op.idle_to))
                    self._emit(
                        replace(new, activity_us=op.now_us),
                        ev.status_changed(row.status, op.idle_to),
                        op.events_kept,
                    )
                for key in facts:
                    del self._facts[key]
            return ops.SweepRow(idled=len(idle), purged=len(expired), facts_purged=len(facts))

    def read_events(self, op: ops.EventsOp, wait: float) -> builtins.list[ops.EventRow] | None:
        """See Backend.read_events."""
        after = parse_event_cursor(op.after)
        deadline = time.monotonic() + wait
        with self._lock:
            while True:
                if op.after is not None and after < self._trimmed:
                    return None  # None reads from the oldest retained event
                rows = [
                    e
                    for i, e in sorted(self._events.items())
                    if i > after and (op.tenant is None or e.tenant == op.tenant)
                ][: op.limit]
                remaining = deadline - time.monotonic()
                if rows or remaining <= 0:
                    return rows
                self._lock.wait(remaining)

    def acquire_lease(self, op: ops.LeaseOp) -> ops.LeaseResult:
        """See Backend.acquire_lease."""
        with self._lock:
            if self._live(op.conversation_id, op.tenant, op.now_us) is None:
                return ops.LeaseResult(ops.Outcome.NOT_FOUND)
            _, until = self._leases.get(op.conversation_id, (0, 0))
            if until > op.now_us:
                return ops.LeaseResult(ops.Outcome.BUSY)
            self._lease_tokens[op.conversation_id] += 1
            token = self._lease_tokens[op.conversation_id]
            self._leases[op.conversation_id] = (token, op.until_us)
            return ops.LeaseResult(ops.Outcome.OK, token)

    def release_lease(self, op: ops.ReleaseOp) -> None:
        """See Backend.release_lease."""
        with self._lock:
            token, _ = self._leases.get(op.conversation_id, (0, 0))
            if token == op.token:
                self._leases[op.conversation_id] = (token, 0)

    def remember(self, op: ops.RememberOp) -> ops.FactRow:
        """See Backend.remember."""
        row = ops.FactRow(op.key, op.value_json, op.tier, op.now_us, op.expires_us)
        with self._lock:
            self._facts[(op.tenant, op.contact_id, op.key)] = row
        return row

    def recall(self, op: ops.RecallOp) -> builtins.list[ops.FactRow]:
        """See Backend.recall."""
        with self._lock:
            return sorted(
                (
                    f
                    for (tenant, contact, key), f in self._facts.items()
                    if tenant == op.tenant
                    and contact == op.contact_id
                    and (op.key is None or key == op.key)
                    and f.expires_us > op.now_us
                ),
                key=lambda f: f.key,
            )
