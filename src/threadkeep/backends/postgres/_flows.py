"""Every operation of the PostgreSQL backend, once, as a generator of SQL steps.

A flow yields ``(sql, params)`` and receives the rows the statement returned (``[]`` when it
returns none); it yields ``COMMIT`` to end a bounded transaction (sweep). The drivers in
``sync`` and ``aio`` run each flow inside one transaction and commit when it returns.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Generator
from typing import Any, Final, TypeVar

from threadkeep._rules import events as ev, ops
from threadkeep._rules.retention import is_expired
from threadkeep.backends.memory import parse_event_cursor
from threadkeep.backends.postgres import _schema as S

__all__ = ["COMMIT", "Flow", "Flows"]

T = TypeVar("T")
Step = tuple[str, dict[str, Any]]
COMMIT: Final[Step] = ("", {})
Flow = Generator[Step, list[tuple[Any, ...]], T]

#: Sweep erases at most this many messages per expired conversation of a batch in one
#: transaction (then commits and goes on), so a long history never makes one huge delete.
MESSAGES_PER_CONVERSATION: Final = 20


def _live(row: ops.ConvRow | None, tenant: str | None, now_us: int) -> ops.ConvRow | None:
    if row is None or is_expired(row.expires_us, now_us):
        return None
    if tenant is not None and row.tenant != tenant:
        return None
    return row


def _event_row(row: tuple[Any, ...]) -> ops.EventRow:
    return ops.EventRow(str(row[0]), row[1], row[2], row[3], row[4], row[5])


class Flows:
    """The flows of one store (its NOTIFY channel)."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.events_lock = "threadkeep:events:" + channel

    # ---- shared steps --------------------------------------------------------------------

    def _lock(self, conversation_id: str) -> Flow[tuple[ops.ConvRow, int, int] | None]:
        rows = yield S.LOCK_CONV, {"id": conversation_id}
        if not rows:
            return None
        return S.decode_conv(rows[0][:19]), rows[0][19], rows[0][20]

    def _save(self, row: ops.ConvRow) -> Flow[None]:
        yield S.UPDATE_CONV, S.conv_params(row)

    def _emit(
        self,
        tenant: str,
        conversation_id: str,
        at_us: int,
        event: tuple[str, dict[str, object]],
        keep: int,
    ) -> Flow[None]:
        kind, data = event
        yield (
            S.EMIT,
            {
                "kind": kind,
                "tenant": tenant,
                "cid": conversation_id,
                "data": json.dumps(data, separators=(",", ":")),
                "at": at_us,
                "keep": keep,
                "chan": self.channel,
                "lock": self.events_lock,
            },
        )

    def _erase(self, ids: builtins.list[str]) -> Flow[None]:
        for sql in S.ERASE:
            yield sql, {"ids": ids}

    # ---- operations ----------------------------------------------------------------------

    def ping(self) -> Flow[None]:
        """Check the server answers."""
        yield "SELECT 1", {}

    def create(self, op: ops.StartOp) -> Flow[tuple[ops.Outcome, ops.ConvRow]]:
        """See Backend.create."""
        row = op.row
        if op.resume:
            yield (
                "SELECT pg_advisory_xact_lock(hashtextextended(%(k)s, 0))",
                {"k": f"threadkeep:open:{row.tenant}\x1f{row.contact_id}"},
            )
            found = yield from self.find_open(
                ops.FindOpenOp(row.tenant, row.contact_id, op.open_statuses, row.created_us)
            )
            if found is not None:
                return ops.Outcome.EXISTING, found
        inserted = yield S.INSERT_CONV, S.conv_params(row)
        if not inserted:  # a resend whose first try committed (with its event)
            return ops.Outcome.CREATED, row
        yield from self._emit(
            row.tenant,
            row.id,
            row.activity_us,
            ev.started(row.contact_id, row.status, row.stage),
            op.events_kept,
        )
        return ops.Outcome.CREATED, row

    def get(self, op: ops.GetOp) -> Flow[ops.ConvRow | None]:
        """See Backend.get."""
        rows = yield S.GET_CONV, {"id": op.conversation_id, "now": op.now_us}
        return _live(S.decode_conv(rows[0]) if rows else None, op.tenant, op.now_us)

    def find_open(self, op: ops.FindOpenOp) -> Flow[ops.ConvRow | None]:
        """See Backend.find_open."""
        rows = yield (
            S.FIND_OPEN,
            {
                "tenant": op.tenant,
                "contact_id": op.contact_id,
                "statuses": list(op.open_statuses),
                "now": op.now_us,
            },
        )
        return S.decode_conv(rows[0]) if rows else None

    def append(
        self, op: ops.AppendOp, retry_key: str | None = None, resent: bool = False
    ) -> Flow[ops.AppendResult]:
        """See Backend.append.

        ``retry_key`` is stored with the message when the caller gave no key, and looked up
        when ``resent``, so a resend after a lost commit acknowledgement is harmless.
        """
        locked = yield from self._lock(op.conversation_id)
        row = _live(locked[0] if locked else None, op.tenant, op.now_us)
        if locked is None or row is None:
            return ops.AppendResult(ops.Outcome.NOT_FOUND)
        key = op.idempotency_key if op.idempotency_key is not None else retry_key
        if key is not None and (op.idempotency_key is not None or resent):
            found = yield S.FIND_KEY, {"id": row.id, "key": key}
            if found:
                stored = S.decode_msg(found[0])
                if op.idempotency_key is None:  # our own earlier attempt did commit
                    return ops.AppendResult(ops.Outcome.OK, stored)
                return ops.AppendResult(ops.Outcome.DUPLICATE, stored)
        if row.status not in op.on_message:
            return ops.AppendResult(ops.Outcome.CLOSED)
        if op.fence is not None:
            _, token, until = locked
            if token != op.fence or until <= op.now_us:
                return ops.AppendResult(ops.Outcome.FENCED)
        seq = row.last_seq + 1
        count = row.message_count + 1
        limit = row.retention.max_messages
        if limit is not None and count > limit:
            yield S.TRIM_MSGS, {"id": row.id, "floor": seq - limit}
            count = limit
        status = op.on_message[row.status]
        new = ops.touch(row, op.now_us, status=status, last_seq=seq, message_count=count)
        yield (
            S.INSERT_MSG,
            {
                "id": row.id,
                "seq": seq,
                "role": op.role,
                "content": S.encode_content(op.content),
                "now": op.now_us,
                "metadata_json": op.metadata_json,
                "key": key,
                "status": status,
                "expires_us": new.expires_us,
                "idle_us": new.idle_us,
                "count": count,
            },
        )
        yield from self._emit(
            new.tenant, new.id, op.now_us, ev.message_appended(seq, op.role), op.events_kept
        )
        if status != row.status:
            yield from self._emit(
                new.tenant,
                new.id,
                op.now_us,
                ev.status_changed(row.status, status),
                op.events_kept,
            )
        msg = ops.MsgRow(
            row.id, seq, op.role, op.content, op.now_us, op.metadata_json, op.idempotency_key
        )
        return ops.AppendResult(ops.Outcome.OK, msg)

    def read_messages(self, op: ops.ReadOp) -> Flow[builtins.list[ops.MsgRow] | None]:
        """See Backend.read_messages."""
        if op.window or op.last is not None:
            rows = yield (
                S.WINDOW,
                {
                    "id": op.conversation_id,
                    "n": None if op.window else max(0, op.last or 0),
                    "now": op.now_us,
                    "tenant": op.tenant,
                },
            )
            if not rows:
                return None
            return [S.decode_msg(r) for r in reversed(rows) if r[1] is not None]
        row = yield from self.get(ops.GetOp(op.conversation_id, op.tenant, op.now_us))
        if row is None:
            return None
        rows = yield S.AFTER, {"id": row.id, "after": op.after or 0, "n": op.limit}
        return [S.decode_msg(r) for r in rows]

    def update(self, op: ops.UpdateOp) -> Flow[ops.UpdateResult]:
        """See Backend.update."""
        locked = yield from self._lock(op.conversation_id)
        row = _live(locked[0] if locked else None, op.tenant, op.now_us)
        if row is None:
            return ops.UpdateResult(ops.Outcome.NOT_FOUND)
        event = ops.decide_update(row, op)
        if isinstance(event, ops.UpdateResult):
            return event
        new = ops.touch(row, op.now_us, **{op.field: op.value})
        yield from self._save(new)
        yield from self._emit(new.tenant, new.id, op.now_us, event, op.events_kept)
        return ops.UpdateResult(ops.Outcome.OK, new, row.status)

    def save_state(self, op: ops.SaveStateOp) -> Flow[ops.StateResult]:
        """See Backend.save_state."""
        locked = yield from self._lock(op.conversation_id)
        row = _live(locked[0] if locked else None, op.tenant, op.now_us)
        if row is None:
            return ops.StateResult(ops.Outcome.NOT_FOUND)
        current = row.state_version
        if op.expected_version is not None and op.expected_version != current:
            return ops.StateResult(ops.Outcome.CONFLICT, current=current)
        value = op.value_json
        if op.rollback_to is not None:
            old = yield (
                "SELECT value_json FROM states WHERE conversation_id = %(id)s AND version = %(v)s",
                {"id": row.id, "v": op.rollback_to},
            )
            if not old:
                return ops.StateResult(ops.Outcome.NO_VERSION, current=current)
            value = old[0][0]
        version = current + 1
        yield (
            "INSERT INTO states VALUES (%(id)s, %(v)s, %(value)s, %(now)s)",
            {"id": row.id, "v": version, "value": value, "now": op.now_us},
        )
        yield (
            "DELETE FROM states WHERE conversation_id = %(id)s AND version <= %(floor)s",
            {"id": row.id, "floor": version - op.keep},
        )
        new = ops.touch(row, op.now_us, state_version=version)
        yield from self._save(new)
        yield from self._emit(
            new.tenant, new.id, op.now_us, ev.state_saved(version), op.events_kept
        )
        return ops.StateResult(ops.Outcome.OK, version=version, saved_us=op.now_us, current=version)

    def load_state(self, op: ops.LoadStateOp) -> Flow[tuple[ops.Outcome, ops.StateRow | None]]:
        """See Backend.load_state."""
        row = yield from self.get(ops.GetOp(op.conversation_id, op.tenant, op.now_us))
        if row is None:
            return ops.Outcome.NOT_FOUND, None
        rows = yield (
            "SELECT version, value_json, saved_us FROM states WHERE conversation_id = %(id)s "
            "AND (%(v)s::integer IS NULL OR version = %(v)s) ORDER BY version DESC LIMIT 1",
            {"id": row.id, "v": op.version},
        )
        found = ops.StateRow(*rows[0]) if rows else None
        if op.version is not None and found is None:
            return ops.Outcome.NO_VERSION, None
        return ops.Outcome.OK, found

    def list(self, op: ops.ListOp) -> Flow[builtins.list[ops.ConvRow]]:
        """See Backend.list."""
        where = ["tenant = %(tenant)s", S.LIVE]
        params: dict[str, Any] = {"tenant": op.tenant, "now": op.now_us, "n": op.limit + 1}
        for name in ("status", "stage", "agent_id", "contact_id"):
            value = getattr(op, name)
            if value is not None:
                where.append(f"{name} = %({name})s")
                params[name] = value
        if op.cursor is not None:
            where.append("(activity_us, id) < (%(c_at)s, %(c_id)s)")
            params["c_at"], params["c_id"] = op.cursor
        rows = yield (
            f"SELECT {S.CONV_COLS} FROM conversations WHERE {' AND '.join(where)} "
            "ORDER BY activity_us DESC, id DESC LIMIT %(n)s",
            params,
        )
        return [S.decode_conv(r) for r in rows]

    def counts(self, op: ops.CountsOp) -> Flow[ops.CountsRow]:
        """See Backend.counts."""
        rows = yield (
            "SELECT status, stage, count(*) FROM conversations "
            f"WHERE tenant = %(tenant)s AND {S.LIVE} GROUP BY status, stage",
            {"tenant": op.tenant, "now": op.now_us},
        )
        by_status: dict[str, int] = {}
        by_stage: dict[str, int] = {}
        for status, stage, n in rows:
            by_status[status] = by_status.get(status, 0) + n
            if stage is not None:
                by_stage[stage] = by_stage.get(stage, 0) + n
        return ops.CountsRow(by_status, by_stage)

    def delete(self, op: ops.DeleteOp) -> Flow[bool]:
        """See Backend.delete."""
        locked = yield from self._lock(op.conversation_id)
        if locked is None or (op.tenant is not None and locked[0].tenant != op.tenant):
            return False
        row = locked[0]
        yield from self._erase([row.id])
        yield from self._emit(row.tenant, row.id, op.now_us, ev.deleted(), op.events_kept)
        return not is_expired(row.expires_us, op.now_us)

    def delete_contact(self, op: ops.DeleteContactOp) -> Flow[int]:
        """See Backend.delete_contact."""
        rows = yield (
            "SELECT id, expires_us FROM conversations WHERE tenant = %(tenant)s "
            "AND contact_id = %(contact)s ORDER BY id FOR UPDATE",
            {"tenant": op.tenant, "contact": op.contact_id},
        )
        ids = [r[0] for r in rows]
        yield (
            "DELETE FROM facts WHERE tenant = %(tenant)s AND contact_id = %(contact)s",
            {"tenant": op.tenant, "contact": op.contact_id},
        )
        if ids:
            yield from self._erase(ids)
            for cid in ids:  # events last: nothing waits on a lock while holding the log's
                yield from self._emit(op.tenant, cid, op.now_us, ev.deleted(), op.events_kept)
        return sum(not is_expired(r[1], op.now_us) for r in rows)

    def sweep(self, op: ops.SweepOp) -> Flow[ops.SweepRow]:
        """See Backend.sweep: bounded transactions of at most ``op.batch`` rows each."""
        now = {"now": op.now_us}
        idle_where = f"status = ANY(%(from)s) AND idle_us <= %(now)s AND {S.LIVE}"
        idle_params = {**now, "from": list(op.idle_from)}
        if op.dry_run:
            rows = yield (
                "SELECT (SELECT count(*) FROM conversations WHERE expires_us <= %(now)s), "
                f"(SELECT count(*) FROM conversations WHERE {idle_where}), "
                "(SELECT count(*) FROM facts WHERE expires_us <= %(now)s)",
                idle_params,
            )
            return ops.SweepRow(idled=rows[0][1], purged=rows[0][0], facts_purged=rows[0][2])
        batch = max(1, op.batch)
        purged = idled = facts = 0
        while True:
            # Expired rows are invisible already; erase them a bounded bite at a time: at most
            # ``batch`` conversations and ``batch * MESSAGES_PER_CONVERSATION`` messages per
            # transaction. A conversation row goes last, once its messages are all gone.
            rows = yield (
                "SELECT id FROM conversations WHERE expires_us <= %(now)s "
                "ORDER BY expires_us LIMIT %(n)s FOR UPDATE SKIP LOCKED",
                {**now, "n": batch},
            )
            ids = [r[0] for r in rows]
            if ids:
                bite = batch * MESSAGES_PER_CONVERSATION
                gone = yield S.PURGE_MESSAGES, {"ids": ids, "n": bite}
                if len(gone) < bite:
                    yield from self._erase(ids)
                    purged += len(ids)
            yield COMMIT
            if not ids:
                break
        while True:
            rows = yield (
                "UPDATE conversations c SET status = %(to)s FROM ("
                f"SELECT id, status FROM conversations WHERE {idle_where} "
                "ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED) o WHERE c.id = o.id "
                "RETURNING c.id, c.tenant, o.status",
                {**idle_params, "to": op.idle_to, "n": batch},
            )
            for cid, tenant, old in sorted(rows):  # creation order, like memory
                yield from self._emit(
                    tenant, cid, op.now_us, ev.status_changed(old, op.idle_to), op.events_kept
                )
            idled += len(rows)
            yield COMMIT
            if len(rows) < batch:
                break
        while True:
            rows = yield (
                "DELETE FROM facts WHERE (tenant, contact_id, key) IN (SELECT tenant, "
                "contact_id, key FROM facts WHERE expires_us <= %(now)s LIMIT %(n)s "
                "FOR UPDATE SKIP LOCKED) RETURNING 1",
                {**now, "n": batch},
            )
            facts += len(rows)
            yield COMMIT
            if len(rows) < batch:
                break
        return ops.SweepRow(idled=idled, purged=purged, facts_purged=facts)

    def read_events(self, op: ops.EventsOp) -> Flow[builtins.list[ops.EventRow] | None]:
        """Read events after the cursor once (None: the cursor fell out of the log).

        One statement, so the floor and the events come from one snapshot: a trim committed
        in between cannot make a stale cursor look valid.
        """
        after = None if op.after is None else parse_event_cursor(op.after)
        rows = yield S.READ_EVENTS, {"after": after, "tenant": op.tenant, "n": op.limit}
        if after is not None and after < rows[0][0]:
            return None
        return [_event_row(r[1:]) for r in rows if r[1] is not None]

    def acquire_lease(self, op: ops.LeaseOp) -> Flow[ops.LeaseResult]:
        """See Backend.acquire_lease."""
        locked = yield from self._lock(op.conversation_id)
        if locked is None or _live(locked[0], op.tenant, op.now_us) is None:
            return ops.LeaseResult(ops.Outcome.NOT_FOUND)
        _, token, until = locked
        if until > op.now_us:
            return ops.LeaseResult(ops.Outcome.BUSY)
        yield (
            "UPDATE conversations SET lease_token = %(t)s, lease_until_us = %(u)s "
            "WHERE id = %(id)s",
            {"t": token + 1, "u": op.until_us, "id": op.conversation_id},
        )
        return ops.LeaseResult(ops.Outcome.OK, token + 1)

    def release_lease(self, op: ops.ReleaseOp) -> Flow[None]:
        """See Backend.release_lease."""
        yield (
            "UPDATE conversations SET lease_until_us = 0 WHERE id = %(id)s AND lease_token = %(t)s",
            {"id": op.conversation_id, "t": op.token},
        )

    def remember(self, op: ops.RememberOp) -> Flow[ops.FactRow]:
        """See Backend.remember."""
        yield (
            "INSERT INTO facts VALUES (%(tenant)s, %(contact)s, %(key)s, %(value)s, %(tier)s, "
            "%(now)s, %(exp)s) ON CONFLICT (tenant, contact_id, key) DO UPDATE SET "
            "value_json = excluded.value_json, tier = excluded.tier, "
            "updated_us = excluded.updated_us, expires_us = excluded.expires_us",
            {
                "tenant": op.tenant,
                "contact": op.contact_id,
                "key": op.key,
                "value": op.value_json,
                "tier": op.tier,
                "now": op.now_us,
                "exp": op.expires_us,
            },
        )
        return ops.FactRow(op.key, op.value_json, op.tier, op.now_us, op.expires_us)

    def recall(self, op: ops.RecallOp) -> Flow[builtins.list[ops.FactRow]]:
        """See Backend.recall."""
        rows = yield (
            "SELECT key, value_json, tier, updated_us, expires_us FROM facts "
            "WHERE tenant = %(tenant)s AND contact_id = %(contact)s "
            "AND (%(key)s::text IS NULL OR key = %(key)s) AND expires_us > %(now)s "
            "ORDER BY key",
            {"tenant": op.tenant, "contact": op.contact_id, "key": op.key, "now": op.now_us},
        )
        return [ops.FactRow(*r) for r in rows]

    @staticmethod
    def migrate(schema: str) -> Flow[int]:
        """Apply the missing migrations under an advisory lock; return the versions applied."""
        yield (
            "SELECT pg_advisory_xact_lock(hashtextextended(%(k)s, 0))",
            {"k": f"threadkeep:migrate:{schema}"},
        )
        yield f'CREATE SCHEMA IF NOT EXISTS "{schema}"', {}
        yield f'SET LOCAL search_path TO "{schema}"', {}
        yield S.VERSION_TABLE, {}
        rows = yield "SELECT coalesce(max(version), 0) FROM schema_version", {}
        current: int = rows[0][0]
        for version, sql in enumerate(S.MIGRATIONS[current:], start=current + 1):
            yield sql, {}
            yield "INSERT INTO schema_version (version) VALUES (%(v)s)", {"v": version}
        return len(S.MIGRATIONS) - current
