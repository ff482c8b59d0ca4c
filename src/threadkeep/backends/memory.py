"""The in-memory backend: one process, nothing persisted.

Every op runs under one lock, so each is atomic; data lives as long as the Store object. It
is the simplest I/O around the verdicts of ``threadkeep._rules.decide``, and the reference the
differential test (``tests/conformance/test_differential.py``) holds the other backends to.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar, cast

from threadkeep._rules import decide, events as ev, history, lifecycle, ops
from threadkeep._rules.events import NewEvent
from threadkeep._rules.ops import Outcome, Result
from threadkeep._rules.retention import is_expired
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
)
from threadkeep._url import StoreURL
from threadkeep.backends._common import handlers, handles

__all__ = ["MemoryBackend"]

R = TypeVar("R")
_OK = Outcome.OK


class MemoryBackend:
    """A backend holding everything in dicts under one lock."""

    def __init__(self, url: StoreURL | None = None) -> None:
        self._lock = threading.Condition(threading.RLock())
        self._convs: dict[str, ConversationRow] = {}
        # per tenant, (activity_us, id) of its conversations in ascending order: list() walks it
        self._order: dict[str, list[tuple[int, str]]] = defaultdict(list)
        # per (tenant, contact), its conversations' ids: resume and erasure walk only those
        self._by_contact: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._msgs: dict[str, list[MessageRow]] = defaultdict(list)
        # per conversation, idempotency key → message (kept after max_messages trims it)
        self._idem: dict[str, dict[str, MessageRow]] = defaultdict(dict)
        self._states: dict[str, list[StateRow]] = defaultdict(list)
        self._leases: dict[str, tuple[int, int]] = {}  # conversation → (token, until µs)
        self._events: dict[int, EventRow] = {}
        # per conversation, the numbers of its retained events: erasing one needs no log scan
        self._event_numbers: dict[str, set[int]] = defaultdict(set)
        self._last_event = 0
        self._trimmed = 0  # events with numbers up to this fell out of the bounded log
        self._facts: dict[tuple[str, str, str], FactRow] = {}
        self._routes = handlers(self)

    # ---- Backend ------------------------------------------------------------------------

    def execute(self, op: ops.Op[R]) -> Result[R]:
        """Carry out ``op`` under the store's lock."""
        with self._lock:
            return cast("Result[R]", self._routes[type(op)](op))

    def ping(self) -> None:
        """Always answers."""

    def close(self) -> None:
        """Nothing to release."""

    # ---- helpers (the caller holds the lock) --------------------------------------------

    def _emit(
        self, tenant: str, conversation_id: str, event: NewEvent, at_us: int, keep: int
    ) -> None:
        self._last_event += 1
        kind, data = event
        self._events[self._last_event] = EventRow(
            str(self._last_event),
            kind,
            tenant,
            conversation_id,
            ev.data_json(data),
            at_us,
        )
        self._event_numbers[conversation_id].add(self._last_event)
        if self._last_event > keep:
            self._trimmed = self._last_event - keep
            gone = self._events.pop(self._trimmed, None)
            if gone is not None:
                numbers = self._event_numbers[gone.conversation_id]
                numbers.discard(self._trimmed)
                if not numbers:
                    del self._event_numbers[gone.conversation_id]
        self._lock.notify_all()

    def _put(self, row: ConversationRow) -> None:
        old = self._convs.get(row.id)
        if old is not None:
            keys = self._order[old.tenant]
            del keys[bisect.bisect_left(keys, (old.activity_us, old.id))]
        else:
            self._by_contact[row.tenant, row.contact_id].add(row.id)
        bisect.insort(self._order[row.tenant], (row.activity_us, row.id))
        self._convs[row.id] = row

    def _erase(self, row: ConversationRow) -> tuple[int, int, int]:
        """Remove a conversation; return how many messages, state versions, events went."""
        keys = self._order[row.tenant]
        del keys[bisect.bisect_left(keys, (row.activity_us, row.id))]
        del self._convs[row.id]
        messages = len(self._msgs.get(row.id, ()))
        states = len(self._states.get(row.id, ()))
        ids = self._by_contact[row.tenant, row.contact_id]
        ids.discard(row.id)
        if not ids:
            del self._by_contact[row.tenant, row.contact_id]
        for table in (self._msgs, self._idem, self._states, self._leases):
            table.pop(row.id, None)
        events = self._event_numbers.pop(row.id, ())
        for number in events:
            del self._events[number]
        return messages, states, len(events)

    # ---- conversations ------------------------------------------------------------------

    @handles(ops.StartOp)
    def _create(self, op: ops.StartOp) -> Result[ConversationRow]:
        open_one = self._open_one(
            op.row.tenant, op.row.contact_id, op.open_statuses, op.row.created_us
        )
        verdict = decide.create(op, open_one if op.resume else None)
        if isinstance(verdict, Result):
            return verdict
        row = verdict.row
        self._put(row)
        self._emit(row.tenant, row.id, verdict.event, row.created_us, op.events_kept)
        return verdict.result()

    @handles(ops.GetOp)
    def _get(self, op: ops.GetOp) -> Result[ConversationRow | None]:
        row = decide.visible(self._convs.get(op.conversation_id), op.tenant, op.now_us)
        return Result(_OK if row is not None else Outcome.NOT_FOUND, row)

    def _open_one(
        self, tenant: str, contact_id: str, statuses: tuple[str, ...], now_us: int
    ) -> ConversationRow | None:
        candidates = [
            r
            for r in map(self._convs.__getitem__, self._by_contact.get((tenant, contact_id), ()))
            if r.status in statuses and not is_expired(r.expires_us, now_us)
        ]
        return max(candidates, key=lambda r: (r.activity_us, r.id), default=None)

    @handles(ops.FindOpenOp)
    def _find_open(self, op: ops.FindOpenOp) -> Result[ConversationRow | None]:
        return Result(_OK, self._open_one(op.tenant, op.contact_id, op.open_statuses, op.now_us))

    @handles(ops.UpdateOp)
    def _update(self, op: ops.UpdateOp) -> Result[ConversationRow | None]:
        return self._change(op, lambda row: decide.update(row, op))

    @handles(ops.RetainOp)
    def _retain(self, op: ops.RetainOp) -> Result[ConversationRow | None]:
        return self._change(op, lambda row: decide.retain(row, op))

    def _change(
        self, op: ops.UpdateOp | ops.RetainOp, judge: decide.Judge
    ) -> Result[ConversationRow | None]:
        verdict = judge(self._convs.get(op.conversation_id))
        if isinstance(verdict, Result):
            return verdict
        row = verdict.row
        self._put(row)
        self._emit(row.tenant, row.id, verdict.event, op.now_us, op.events_kept)
        return verdict.result()

    @handles(ops.ListOp)
    def _list(self, op: ops.ListOp) -> Result[list[ConversationRow]]:
        keys = self._order.get(op.tenant, [])
        end = len(keys) if op.cursor is None else bisect.bisect_left(keys, op.cursor)
        rows: list[ConversationRow] = []
        for i in range(end - 1, -1, -1):  # newest first, without copying the index
            r = self._convs[keys[i][1]]
            if (
                not is_expired(r.expires_us, op.now_us)
                and op.status in (None, r.status)
                and op.stage in (None, r.stage)
                and op.agent_id in (None, r.agent_id)
                and op.contact_id in (None, r.contact_id)
            ):
                rows.append(r)
                if len(rows) > op.limit:
                    break
        return Result(_OK, rows)

    @handles(ops.CountsOp)
    def _counts(self, op: ops.CountsOp) -> Result[TenantCounts]:
        by_status: dict[str, int] = defaultdict(int)
        by_stage: dict[str, int] = defaultdict(int)
        for r in self._convs.values():
            if r.tenant == op.tenant and not is_expired(r.expires_us, op.now_us):
                by_status[r.status] += 1
                if r.stage is not None:
                    by_stage[r.stage] += 1
        return Result(_OK, TenantCounts(dict(by_status), dict(by_stage)))

    @handles(ops.DeleteOp)
    def _delete(self, op: ops.DeleteOp) -> Result[None]:
        row = self._convs.get(op.conversation_id)
        if row is None or not decide.erasable(row, op.tenant):
            return Result(Outcome.NOT_FOUND, None)
        self._erase(row)
        self._emit(row.tenant, row.id, ev.deleted(), op.now_us, op.events_kept)
        return decide.erased(row, op.now_us)

    @handles(ops.DeleteContactOp)
    def _delete_contact(self, op: ops.DeleteContactOp) -> Result[ErasureCounts]:
        ids = self._by_contact.get((op.tenant, op.contact_id), ())
        rows = sorted(map(self._convs.__getitem__, ids), key=lambda r: (r.created_us, r.id))
        messages = states = events = 0
        for row in rows:
            m, s, e = self._erase(row)
            messages, states, events = messages + m, states + s, events + e
            self._emit(row.tenant, row.id, ev.deleted(), op.now_us, op.events_kept)
        facts = [k for k in self._facts if k[:2] == (op.tenant, op.contact_id)]
        for key in facts:
            del self._facts[key]
        live = sum(not is_expired(r.expires_us, op.now_us) for r in rows)
        erased = ErasureCounts(
            tuple(r.id for r in rows), live, messages, states, len(facts), events
        )
        return Result(_OK, erased)

    @handles(ops.SweepOp)
    def _sweep(self, op: ops.SweepOp) -> Result[SweepCounts]:
        """In batches of ``op.batch``, letting other calls take the lock between batches.

        Each row is judged again when its batch runs, as it may have changed meanwhile.
        """
        now = op.now_us
        expired = [r.id for r in self._convs.values() if is_expired(r.expires_us, now)]
        idle = [
            r.id
            for r in sorted(
                (r for r in self._convs.values() if decide.idle_due(r, op)),
                key=lambda r: (r.created_us, r.id),
            )
        ]
        facts = [k for k, f in self._facts.items() if decide.fact_due(f, now)]
        if op.dry_run:
            return Result(_OK, SweepCounts(len(idle), len(expired), len(facts)))
        purged = idled = forgotten = 0
        for start in range(0, max(len(expired), len(idle), len(facts)), max(1, op.batch)):
            stop = start + max(1, op.batch)
            for cid in expired[start:stop]:
                row = self._convs.get(cid)
                if row is not None and is_expired(row.expires_us, now):
                    self._erase(row)
                    purged += 1
            for cid in idle[start:stop]:
                row = self._convs.get(cid)
                if row is not None and decide.idle_due(row, op):
                    self._put(replace(row, status=op.idle_to))  # marking idle is not activity
                    event = lifecycle.status_changed(row.status, op.idle_to)
                    self._emit(row.tenant, row.id, event, now, op.events_kept)
                    idled += 1
            for key in facts[start:stop]:
                fact = self._facts.get(key)
                if fact is not None and decide.fact_due(fact, now):
                    del self._facts[key]
                    forgotten += 1
            self._lock.release()  # other calls run between batches
            self._lock.acquire()
        return Result(_OK, SweepCounts(idled, purged, forgotten))

    # ---- messages -----------------------------------------------------------------------

    def _trim(self, kept: list[MessageRow], trim_from: int | None) -> int | None:
        """Trim ``kept`` to whole exchanges from seq ``trim_from``; return the cut seq."""
        if trim_from is None:
            return None
        start = history.trim_start([m.link for m in kept], trim_from - kept[0].seq)
        if start is None:
            return None
        cut = kept[start].seq
        del kept[:start]
        return cut

    def _forget(self, conversation_id: str, gone: list[MessageRow]) -> None:
        """Free the idempotency keys of removed messages (trimmed ones keep replaying)."""
        keys = self._idem.get(conversation_id, {})
        for message in gone:
            if message.idempotency_key is not None and keys.get(message.idempotency_key) == message:
                del keys[message.idempotency_key]

    def _write(self, row: ConversationRow, verdict: decide.Appended, events_kept: int) -> None:
        kept = self._msgs[row.id]
        kept.extend(verdict.messages)
        for message in verdict.messages:
            if message.idempotency_key is not None:
                self._idem[row.id][message.idempotency_key] = message
        cut = self._trim(kept, verdict.trim_from)
        self._put(verdict.row_after(row, cut))
        for event in verdict.events:
            self._emit(row.tenant, row.id, event, verdict.activity_us, events_kept)

    @handles(ops.AppendOp)
    def _append(self, op: ops.AppendOp) -> Result[MessageRow | None]:
        row = self._convs.get(op.conversation_id)
        key = op.idempotency_key
        stored = None if key is None else self._idem.get(op.conversation_id, {}).get(key)
        verdict = decide.append(row, op, stored, self._leases.get(op.conversation_id, (0, 0)))
        if isinstance(verdict, Result):
            return verdict
        assert row is not None
        self._write(row, verdict, op.events_kept)
        return verdict.result()

    @handles(ops.AppendReadOp)
    def _append_read(
        self, op: ops.AppendReadOp
    ) -> Result[tuple[MessageRow, ConversationRow | None] | None]:
        outcome, message = self._append(op.append)
        if message is None:
            return Result(outcome, None)
        return Result(outcome, (message, self._convs[message.conversation_id]))

    @handles(ops.AppendManyOp)
    def _append_many(self, op: ops.AppendManyOp) -> Result[list[tuple[MessageRow, bool]]]:
        row = self._convs.get(op.conversation_id)
        keys = self._idem.get(op.conversation_id, {})
        stored = {i.idempotency_key: keys[i.idempotency_key] for i in op.items
                  if i.idempotency_key in keys}  # fmt: skip
        lease = self._leases.get(op.conversation_id, (0, 0))
        verdict = decide.append_many(row, op, stored, lease)
        if isinstance(verdict, Result):
            return verdict
        assert row is not None
        self._write(row, verdict, op.events_kept)
        return verdict.batch_result()

    def _rewrite(self, verdict: decide.Rewritten, events_kept: int) -> None:
        row = verdict.row
        kept = self._msgs[row.id]
        gone = [m for m in kept if m.seq >= verdict.delete_from]
        kept[:] = [m for m in kept if m.seq < verdict.delete_from]
        self._forget(row.id, gone)
        kept.extend(verdict.messages)
        for message in verdict.messages:
            if message.idempotency_key is not None:
                self._idem[row.id][message.idempotency_key] = message
        cut = self._trim(kept, verdict.trim_from)
        self._put(verdict.row_after(cut))
        self._emit(row.tenant, row.id, verdict.event, row.activity_us, events_kept)

    @handles(ops.PopOp)
    def _pop(self, op: ops.PopOp) -> Result[MessageRow | None]:
        kept = self._msgs.get(op.conversation_id)
        verdict = decide.pop(self._convs.get(op.conversation_id), op, kept[-1] if kept else None)
        if isinstance(verdict, Result):
            return verdict
        newest = self._msgs[op.conversation_id][-1]
        self._rewrite(verdict, op.events_kept)
        return Result(_OK, newest)

    @handles(ops.ClearOp)
    def _clear(self, op: ops.ClearOp) -> Result[int]:
        verdict = decide.clear(self._convs.get(op.conversation_id), op)
        if isinstance(verdict, Result):
            return verdict
        removed = len(self._msgs[op.conversation_id])
        self._rewrite(verdict, op.events_kept)
        return Result(_OK, removed)

    @handles(ops.ReplaceOp)
    def _replace(self, op: ops.ReplaceOp) -> Result[tuple[list[MessageRow], int]]:
        verdict = decide.replace_history(self._convs.get(op.conversation_id), op)
        if isinstance(verdict, Result):
            return verdict
        self._rewrite(verdict, op.events_kept)
        return Result(_OK, (list(self._msgs[op.conversation_id]), verdict.row.last_seq))

    @handles(ops.KeyOp)
    def _key(self, op: ops.KeyOp) -> Result[MessageRow | None]:
        row = decide.visible(self._convs.get(op.conversation_id), op.tenant, op.now_us)
        if row is None:
            return Result(Outcome.NOT_FOUND, None)
        found = self._idem.get(row.id, {}).get(op.key)
        kept = found is not None and found.seq > row.last_seq - row.message_count
        return Result(_OK, found if kept else None)

    @handles(ops.ReadOp)
    def _read(self, op: ops.ReadOp) -> Result[list[MessageRow]]:
        row = decide.visible(self._convs.get(op.conversation_id), op.tenant, op.now_us)
        if row is None:
            return Result(Outcome.NOT_FOUND, [])
        kept = self._msgs.get(row.id, [])
        if op.last is not None:
            return Result(_OK, kept[-op.last :])
        if op.before is not None:
            below = [m for m in kept if m.seq < op.before]
            return Result(_OK, below[max(len(below) - op.limit, 0) :])
        return Result(_OK, [m for m in kept if m.seq > op.after][: op.limit])

    @handles(ops.DeliveryOp)
    def _delivery(self, op: ops.DeliveryOp) -> Result[MessageRow | None]:
        row = decide.visible(self._convs.get(op.conversation_id), op.tenant, op.now_us)
        if row is None:
            return Result(Outcome.NOT_FOUND, None)
        kept = self._msgs.get(row.id, [])
        index = next((i for i, m in enumerate(kept) if m.seq == op.seq), None)
        verdict = decide.delivery(None if index is None else kept[index], op)
        if isinstance(verdict, Result):
            return verdict
        assert index is not None
        message = kept[index]._replace(metadata_json=verdict.metadata_json)
        kept[index] = message
        keys = self._idem.get(row.id, {})
        if message.idempotency_key is not None and message.idempotency_key in keys:
            keys[message.idempotency_key] = message
        self._emit(row.tenant, row.id, verdict.event, op.now_us, op.events_kept)
        return Result(_OK, message)

    @handles(ops.WindowOp)
    def _window(self, op: ops.WindowOp) -> Result[tuple[Sequence[WindowLike], int]]:
        row = decide.visible(self._convs.get(op.conversation_id), op.tenant, op.now_us)
        if row is None:
            return Result(Outcome.NOT_FOUND, ([], 0))
        window = row.retention.window
        return Result(_OK, (self._msgs.get(row.id, [])[-(window + op.extra) :], window))

    # ---- state --------------------------------------------------------------------------

    @handles(ops.SaveStateOp)
    def _save_state(self, op: ops.SaveStateOp) -> Result[int]:
        row = self._convs.get(op.conversation_id)
        versions = self._states.get(op.conversation_id, [])
        old = next((s.value_json for s in versions if s.version == op.rollback_to), None)
        verdict = decide.save_state(row, op, old)
        if isinstance(verdict, Result):
            return verdict
        assert row is not None
        versions = self._states[row.id]
        versions.append(StateRow(verdict.version, verdict.value_json, op.now_us))
        versions[:] = [s for s in versions if s.version > verdict.trim_to]
        self._put(verdict.row_after(row))
        self._emit(row.tenant, row.id, verdict.event, op.now_us, op.events_kept)
        return verdict.result()

    @handles(ops.LoadStateOp)
    def _load_state(self, op: ops.LoadStateOp) -> Result[StateRow | None]:
        row = decide.visible(self._convs.get(op.conversation_id), op.tenant, op.now_us)
        if row is None:
            return Result(Outcome.NOT_FOUND, None)
        version = row.state_version if op.version is None else op.version
        found = next((s for s in self._states.get(row.id, []) if s.version == version), None)
        if found is None and op.version is not None:
            return Result(Outcome.NO_VERSION, None)
        return Result(_OK, found)

    # ---- events, leases, facts ----------------------------------------------------------

    @handles(ops.EventsOp)
    def _read_events(self, op: ops.EventsOp) -> Result[list[EventRow]]:
        after = op.after
        deadline = time.monotonic() + op.wait
        while True:
            if decide.cursor_expired(after, self._trimmed):
                return Result(Outcome.EXPIRED, [])
            start = self._trimmed if after is None else after
            rows = [
                e
                for n, e in sorted(self._events.items())
                if n > start and op.tenant in (None, e.tenant)
            ][: op.limit]
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return Result(_OK, rows)
            self._lock.wait(remaining)

    @handles(ops.LeaseOp)
    def _lease(self, op: ops.LeaseOp) -> Result[int]:
        held = self._leases.get(op.conversation_id, (0, 0))
        verdict = decide.lease(self._convs.get(op.conversation_id), op, held)
        if verdict.outcome is _OK:
            self._leases[op.conversation_id] = (verdict.value, op.until_us)
        return verdict

    @handles(ops.ReleaseOp)
    def _release(self, op: ops.ReleaseOp) -> Result[None]:
        token, _ = self._leases.get(op.conversation_id, (0, 0))
        if token == op.token:
            self._leases[op.conversation_id] = (token, 0)
        return Result(_OK, None)

    @handles(ops.RememberOp)
    def _remember(self, op: ops.RememberOp) -> Result[FactRow]:
        key = (op.tenant, op.contact_id, op.key)
        row = decide.supersede(self._facts.get(key), op)
        self._facts[key] = row
        return Result(_OK, row)

    @handles(ops.RecallOp)
    def _recall(self, op: ops.RecallOp) -> Result[list[FactRow]]:
        rows = [
            f
            for (tenant, contact, key), f in self._facts.items()
            if (tenant, contact) == (op.tenant, op.contact_id)
            and op.key in (None, key)
            and f.expires_us > op.now_us
        ]
        return Result(_OK, sorted(rows, key=lambda f: f.key))

    # ---- key rotation -------------------------------------------------------------------

    @handles(ops.RewriteOp)
    def _rewrite_values(self, op: ops.RewriteOp) -> Result[int]:
        done = 0
        kept = self._msgs.get(op.conversation_id or "", [])
        for old, new in op.messages:
            index = next((i for i, m in enumerate(kept) if m.seq == old.seq), None)
            if index is None or (kept[index].content, kept[index].payload_json) != (
                old.content,
                old.payload_json,
            ):
                continue
            kept[index] = kept[index]._replace(content=new.content, payload_json=new.payload_json)
            keys = self._idem.get(old.conversation_id, {})
            if old.idempotency_key is not None and keys.get(old.idempotency_key) is not None:
                keys[old.idempotency_key] = kept[index]
            done += 1
        versions = self._states.get(op.conversation_id or "", [])
        for old_state, new_state in op.states:
            for i, s in enumerate(versions):
                if s.version == old_state.version and s.value_json == old_state.value_json:
                    versions[i] = s._replace(value_json=new_state.value_json)
                    done += 1
        archive = self._idem.get(op.conversation_id or "", {})
        for old, new in op.archived:
            found = archive.get(old.idempotency_key or "")
            if found is not None and (found.content, found.payload_json) == (
                old.content,
                old.payload_json,
            ):
                archive[old.idempotency_key or ""] = found._replace(
                    content=new.content, payload_json=new.payload_json
                )
                done += 1
        for old_fact, new_fact in op.facts:
            key = (op.tenant or "", op.contact_id or "", old_fact.key)
            fact = self._facts.get(key)
            if fact is not None and (fact.value_json, fact.history_json) == (
                old_fact.value_json,
                old_fact.history_json,
            ):
                self._facts[key] = fact._replace(
                    value_json=new_fact.value_json, history_json=new_fact.history_json
                )
                done += 1
        return Result(_OK, done)

    @handles(ops.FactContactsOp)
    def _fact_contacts(self, op: ops.FactContactsOp) -> Result[tuple[list[str], str]]:
        contacts = sorted({c for t, c, _ in self._facts if t == op.tenant and c > op.cursor})
        page = contacts[: op.limit]
        return Result(_OK, (page, page[-1] if len(contacts) > op.limit else ""))

    @handles(ops.ArchivedOp)
    def _archived(self, op: ops.ArchivedOp) -> Result[tuple[list[MessageRow], str]]:
        row = self._convs.get(op.conversation_id)
        first_kept = 0 if row is None else row.last_seq - row.message_count
        keys = self._idem.get(op.conversation_id, {})
        trimmed = sorted(k for k, m in keys.items() if k > op.cursor and m.seq <= first_kept)
        page = trimmed[: op.limit]
        return Result(_OK, ([keys[k] for k in page], page[-1] if len(trimmed) > op.limit else ""))
