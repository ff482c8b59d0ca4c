"""Every operation of the PostgreSQL backend, once, as a generator of SQL steps.

A flow yields ``(sql, params)`` and receives the rows the statement returned (``[]`` when it
returns none, or when it is ``schema.Unread``: sent without waiting for its answer); it yields
``COMMIT`` to end a bounded transaction (sweep). Its return value is
the op's ``Result``. ``Flows.call(op)`` says how to run one: the flow of each attempt, and
whether it only reads or may not be resent after a commit of unknown outcome. The drivers in
``sync`` and ``aio`` run each attempt in one transaction and commit when it returns. The SQL is
in ``_schema``; the verdicts come from ``threadkeep._rules.decide``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Generic, TypeVar, cast

from threadkeep._exceptions import BackendError
from threadkeep._rules import decide, events as ev, lifecycle, ops
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
    WindowRow,
)
from threadkeep.backends import _common
from threadkeep.backends.postgres import _schema as schema

__all__ = ["COMMIT", "Run", "Flow", "Flows"]

T = TypeVar("T")
R = TypeVar("R")
Step = tuple[str, dict[str, Any]]
COMMIT: Final[Step] = ("", {})
Flow = Generator[Step, list[tuple[Any, ...]], T]
_OK = Outcome.OK

#: Sweep erases at most this many messages per expired conversation of a batch in one
#: transaction (then commits and goes on), so a long history never makes one huge delete.
MESSAGES_PER_CONVERSATION: Final = 20

#: Ops that only read: run in autocommit, nothing to commit.
_READS: Final = frozenset(
    {
        ops.GetOp,
        ops.FindOpenOp,
        ops.ReadOp,
        ops.KeyOp,
        ops.WindowOp,
        ops.LoadStateOp,
        ops.ListOp,
        ops.CountsOp,
        ops.EventsOp,
        ops.RecallOp,
        ops.FactContactsOp,
        ops.ArchivedOp,
    }
)
#: Ops not sent again when the connection is lost while committing (the outcome is unknown
#: and a resend could conflict with itself, report "not found", or find its own lease busy).
_ONCE: Final = frozenset({ops.SaveStateOp, ops.DeleteOp, ops.LeaseOp, ops.PopOp, ops.ReplaceOp})
#: Of those, the ones whose COMMIT travels with their ``Closing`` statement all the same (one
#: round trip): the commit (COMMIT, or the Sync of an implicit transaction) is queued only
#: behind that statement, so a connection lost before it
#: is still retried, and one lost after it is not (the outcome is unknown).
_ONCE_TOGETHER: Final = frozenset({ops.SaveStateOp})


#: A follower finding events held back by the horizon reads again after this pause, doubled
#: each time up to the second value (seconds), notified or not. One finding nothing waits for
#: a notification, but at most ``UNNOTIFIED_WAIT`` before it reads again: a writer whose
#: connection dropped between its COMMIT and its NOTIFY (sent after the commit) wakes nobody.
HELD_PAUSE: Final = (0.002, 0.1)
UNNOTIFIED_WAIT: Final = 1.0

#: Ops ``call`` runs itself: their flows take an internal key for safe resends.
_CALLED: Final = (ops.AppendOp, ops.AppendReadOp, ops.AppendManyOp)


@dataclass(frozen=True, slots=True)
class Run(Generic[T]):
    """How to run one op: ``attempt(n)`` makes the flow of the n-th attempt (1, 2 …)."""

    attempt: Callable[[int], Flow[T]]
    read: bool
    once: bool
    #: COMMIT may travel with the statements (``_conn.Ending.together``)
    together: bool = True


def _internal(key: str | None) -> bool:
    return key is not None and key.startswith(schema.INTERNAL_KEY)


def _in_batches(statement: str, params: Mapping[str, Any], batch: int) -> Flow[int]:
    """Run a bounded ``DELETE`` a transaction a batch until a batch comes back short.

    ``statement`` takes ``params`` and ``n`` (the batch) and runs from a generic plan; returns
    how many rows it deleted.
    """
    deleted = 0
    while True:
        yield schema.GENERIC_PLANS, {}
        rows = yield statement, {**params, "n": batch}
        deleted += len(rows)
        yield COMMIT
        if len(rows) < batch:
            return deleted


def _hide_keys(
    result: Result[list[tuple[MessageRow, bool]]],
) -> Result[list[tuple[MessageRow, bool]]]:
    """A batch's answer with its internal keys (retry safety) turned back into None."""
    answers = [
        (m._replace(idempotency_key=None) if _internal(m.idempotency_key) else m, replayed)
        for m, replayed in result.value
    ]
    return Result(result.outcome, answers)


class Flows:
    """The flows of one store (its NOTIFY channel)."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._routes = _common.handlers(self, besides=_CALLED)

    def call(self, op: ops.Op[R]) -> Run[Result[R]]:
        """Return how to run ``op``.

        An append carries an internal idempotency key (stored with the message when the
        caller gave none) and looks it up when resent, so a resend after a lost commit
        acknowledgement is harmless.
        """
        kind = type(op)
        if isinstance(op, ops.AppendOp):
            key = schema.INTERNAL_KEY + uuid.uuid4().hex
            attempt = cast(
                "Callable[[int], Flow[Result[R]]]",
                lambda n: self._append(op, key, resent=n > 1),
            )
        elif isinstance(op, ops.AppendReadOp):
            key = schema.INTERNAL_KEY + uuid.uuid4().hex
            attempt = cast(
                "Callable[[int], Flow[Result[R]]]",
                lambda n: self._append_read(op, key, resent=n > 1),
            )
        elif isinstance(op, ops.AppendManyOp):
            batch = schema.INTERNAL_KEY + uuid.uuid4().hex
            attempt = cast(
                "Callable[[int], Flow[Result[R]]]",
                lambda n: self._append_many(op, batch, resent=n > 1),
            )
        else:
            make = cast("Callable[[ops.Op[R]], Flow[Result[R]]]", self._routes[kind])
            attempt = lambda n: make(op)  # noqa: E731
        once = kind in _ONCE
        return Run(attempt, kind in _READS, once, not once or kind in _ONCE_TOGETHER)

    # ---- shared steps --------------------------------------------------------------------

    def _lock(
        self, conversation_id: str, tenant: str | None
    ) -> Flow[tuple[ConversationRow | None, tuple[int, int]]]:
        """The conversation, locked, and its lease (token, until µs); another tenant's: None.

        Called without a tenant it is found by id alone; every later statement of the flow
        names the tenant of the row it found.
        """
        sql = schema.LOCK_CONVERSATION.pick(tenant)
        rows = yield sql, {"tenant": tenant, "id": conversation_id}
        if not rows:
            return None, (0, 0)
        return _common.decode_conversation(rows[0]), (rows[0][19], rows[0][20])

    def _emit(
        self,
        tenant: str,
        conversation_id: str,
        at_us: int,
        event: NewEvent,
        keep: int,
        rank: int = 0,
    ) -> Flow[None]:
        """Log ``event``, the ``rank``-th (from 0) its transaction logs.

        The first takes the log's shared lock (``schema.EMIT``); the others draw ids above it.
        """
        kind, data = event
        yield (
            schema.EMIT,
            {
                "kind": kind,
                "tenant": tenant,
                "cid": conversation_id,
                "data": ev.data_json(data),
                "at": at_us,
                "keep": keep,
                "n": rank,
            },
        )

    def _erase(self, tenants: list[str], ids: list[str]) -> Flow[dict[str, int]]:
        """Remove the rows of conversations (tenant, id pairwise); how many went, by name."""
        removed: dict[str, int] = {}
        for name, sql in zip(schema.ERASED, schema.ERASE, strict=True):
            rows = yield sql, {"tenants": tenants, "ids": ids}
            removed[name] = rows[0][0]
        return removed

    def _open_one(
        self, tenant: str, contact_id: str, statuses: tuple[str, ...], now_us: int
    ) -> Flow[ConversationRow | None]:
        rows = yield (
            schema.FIND_OPEN,
            {"tenant": tenant, "contact_id": contact_id, "statuses": list(statuses), "now": now_us},
        )
        return _common.decode_conversation(rows[0]) if rows else None

    # ---- operations ----------------------------------------------------------------------

    def ping(self) -> Flow[None]:
        """Check the server answers."""
        yield "SELECT 1", {}

    @_common.handles(ops.StartOp)
    def _create(self, op: ops.StartOp) -> Flow[Result[ConversationRow]]:
        """One ``Closing`` statement (after the contact's lock, for resume): one round trip.

        The statement inserts the row and logs its event only where ``decide.create`` would
        (resume: when the contact has no open conversation), and its answer is judged by
        ``decide.create`` as before. Resume's statement is ``Quiet``: the NOTIFY follows, a
        round trip of its own (``schema.WAKE``), only when it logged the event; ``start``'s
        travels with its commit.
        """
        row = op.row
        new = decide.create(op, None)  # what is written when none is open
        assert not isinstance(new, Result)
        kind, data = new.event
        params = {
            **schema.encode_conversation(row),
            "kind": kind,
            "data": ev.data_json(data),
            "keep": op.events_kept,
        }
        if not op.resume:
            yield schema.START, params
            return new.result()
        key = f"threadkeep:open:{row.tenant}\x1f{row.contact_id}"
        yield schema.LOCK_CONTACT, {"k": key}  # travels with RESUME
        params.update(statuses=list(op.open_statuses), now=row.created_us)
        found = (yield schema.RESUME, params)[0]
        if found[-1]:  # it inserted the row and logged its event (committed): wake listeners
            yield schema.WAKE, {"chan": self.channel}
        open_one = _common.decode_conversation(found) if found[0] is not None else None
        verdict = decide.create(op, open_one)
        if isinstance(verdict, Result):
            return verdict
        # RESUME inserted ``row`` and its event exactly when none was open, where the rules
        # create it (none inserted: a resend whose first try had committed them)
        return verdict.result()

    @_common.handles(ops.GetOp)
    def _get(self, op: ops.GetOp) -> Flow[Result[ConversationRow | None]]:
        rows = yield (
            schema.SELECT_CONVERSATION.pick(op.tenant),
            {"tenant": op.tenant, "id": op.conversation_id, "now": op.now_us},
        )
        found = _common.decode_conversation(rows[0]) if rows else None
        row = decide.visible(found, op.tenant, op.now_us)
        return Result(_OK if row is not None else Outcome.NOT_FOUND, row)

    @_common.handles(ops.FindOpenOp)
    def _find_open(self, op: ops.FindOpenOp) -> Flow[Result[ConversationRow | None]]:
        found = yield from self._open_one(op.tenant, op.contact_id, op.open_statuses, op.now_us)
        return Result(_OK, found)

    def _append_read(
        self, op: ops.AppendReadOp, retry_key: str, resent: bool
    ) -> Flow[Result[tuple[MessageRow, ConversationRow | None] | None]]:
        """``_append``, answering also the row it locked as the append left it.

        The row is None (the caller reads it) where the statement's answer does not tell it:
        the append trimmed (the cut is the function's), or was made by ``_append_locked``.
        """
        seen: list[ConversationRow | None] = []
        outcome, message = yield from self._append(op.append, retry_key, resent, seen)
        return Result(outcome, None if message is None else (message, seen[0] if seen else None))

    def _append(
        self,
        op: ops.AppendOp,
        retry_key: str,
        resent: bool,
        seen: list[ConversationRow | None] | None = None,
    ) -> Flow[Result[MessageRow | None]]:
        """One statement, committed in its own flush (``schema.APPEND``), judged here.

        The statement writes only what ``decide.append`` would write on the row it locked;
        its answer (that row, its lease and the key's stored message) is judged by
        ``decide.append`` all the same, which makes the answer. Should the rules append where
        the statement wrote nothing, the append is made as the rules say in a transaction
        of its own (``_append_locked``). ``seen`` (append_read's) gets the row as the append
        left it, when the answer tells it.

        A keyless first try goes first as ``schema.APPEND_ONE`` (no function), which appends
        only where the rules append without a status change; where it wrote
        nothing, ``APPEND`` follows in a transaction of its own and judges as above.
        """
        caller_key = op.idempotency_key
        stay = _STAY if op.on_message is _LIFECYCLE else _stay(op.on_message)
        if caller_key is None and not resent and op.events_kept > 0 and stay != "{}":
            yield schema.INDEX_SCANS, {}
            rows = yield (
                schema.APPEND_ONE.pick(op.tenant),
                {
                    "tenant": op.tenant,
                    "id": op.conversation_id,
                    "now": op.now_us,
                    "stay": stay,
                    "fence": op.fence,
                    "role": op.role,
                    "content": schema.encode_content(op.content),
                    "metadata_json": op.metadata_json,
                    "key": retry_key,
                    "payload": op.payload_json,
                    "link": op.link,
                    "appended": _APPENDED,
                    "keep": op.events_kept,
                },
            )
            if rows:  # appended: the row as written, the message as decide.append makes it
                row = _common.decode_conversation(rows[0])
                gone = rows[0][20]
                if gone is not None and gone > 0:  # its trim of the log found nothing
                    yield schema.TRIM_LOG_AGAIN, {"gone": gone}
                limit = row.retention.max_messages
                if seen is not None and (limit is None or row.message_count <= limit):
                    seen.append(row)  # (when it trimmed, the count written is the trim's)
                return Result(
                    _OK,
                    MessageRow(
                        row.id,
                        row.last_seq,
                        op.role,
                        op.content,
                        op.now_us,
                        op.metadata_json,
                        None,
                        op.payload_json,
                        op.link,
                    ),  # fmt: skip
                )
        rows = yield (
            schema.APPEND,
            {
                "tenant": op.tenant,
                "id": op.conversation_id,
                "now": op.now_us,
                "key": caller_key if caller_key is not None else retry_key,
                "look_up": caller_key is not None or resent,
                "fence": op.fence,
                **(_ON_MESSAGE if op.on_message is _LIFECYCLE else _on_message(op.on_message)),
                "appended": _APPENDED,
                "role": op.role,
                "content": schema.encode_content(op.content),
                "metadata_json": op.metadata_json,
                "payload": op.payload_json,
                "link": op.link,
                "keep": op.events_kept,
            },
        )
        if not rows:
            return cast("Result[MessageRow | None]", decide.append(None, op, None, (0, 0)))
        answer = rows[0]
        stored = schema.decode_message(answer[22:]) if answer[23] is not None else None
        row = _common.decode_conversation(answer[1:])
        if stored is not None and caller_key is None:  # our own earlier attempt did commit
            if seen is not None:
                seen.append(decide.visible(row, op.tenant, op.now_us))
            return Result(_OK, stored)
        verdict = decide.append(row, op, stored, (answer[20], answer[21]))
        if isinstance(verdict, Result):
            if seen is not None:  # a duplicate's row is as stored
                seen.append(row)
            return verdict
        if answer[0]:
            if seen is not None and verdict.trim_from is None:
                seen.append(verdict.row_after(row))
            return verdict.result()
        return (yield from self._append_locked(op, retry_key, resent))

    def _append_locked(
        self, op: ops.AppendOp, retry_key: str, resent: bool
    ) -> Flow[Result[MessageRow | None]]:
        """An append in statements judged one by one: lock, key lookups, then the writes."""
        row, lease = yield from self._lock(op.conversation_id, op.tenant)
        visible = decide.visible(row, op.tenant, op.now_us)
        where = {"tenant": visible.tenant, "id": visible.id} if visible is not None else {}
        if visible is not None and resent and op.idempotency_key is None:
            found = yield schema.FIND_KEY, {**where, "key": retry_key}
            if found:  # our own earlier attempt did commit
                return Result(_OK, schema.decode_message(found[0]))
        stored = None
        if visible is not None and op.idempotency_key is not None:
            found = yield schema.FIND_KEY, {**where, "key": op.idempotency_key}
            stored = schema.decode_message(found[0]) if found else None
        verdict = decide.append(row, op, stored, lease)
        if isinstance(verdict, Result):
            return verdict
        assert row is not None
        message = verdict.message
        if message.idempotency_key is None:
            message = message._replace(idempotency_key=retry_key)
        yield from self._write(row, verdict, (message,), op.now_us, op.events_kept)
        return verdict.result()

    def _write(
        self,
        row: ConversationRow,
        verdict: decide.Appended,
        messages: tuple[MessageRow, ...],
        now_us: int,
        keep: int,
    ) -> Flow[None]:
        """Write an append's verdict: ``messages`` (its own, keyed), the row, trim, events."""
        yield from self._insert(row, messages)
        yield schema.UPDATE_CONVERSATION, schema.encode_conversation(verdict.row_after(row))
        yield from self._trim(row.tenant, row.id, verdict.trim_from)
        for n, event in enumerate(verdict.events):
            yield from self._emit(row.tenant, row.id, now_us, event, keep, n)

    def _trim(self, tenant: str, conversation_id: str, trim_from: int | None) -> Flow[int | None]:
        """Trim to whole exchanges from ``trim_from`` (see decide.Appended); the cut seq."""
        if trim_from is None:
            return None
        where = {"tenant": tenant, "id": conversation_id, "from": trim_from}
        rows = yield schema.TRIM_MESSAGES, where
        return cast(int | None, rows[0][0])

    def _insert(self, row: ConversationRow, messages: tuple[MessageRow, ...]) -> Flow[None]:
        if messages:
            yield (
                schema.INSERT_MESSAGES,
                {
                    "tenant": row.tenant,
                    "id": row.id,
                    "seqs": [m.seq for m in messages],
                    "roles": [m.role for m in messages],
                    "contents": [schema.encode_content(m.content) for m in messages],
                    "times": [m.created_us for m in messages],
                    "metadata": [m.metadata_json for m in messages],
                    "keys": [m.idempotency_key for m in messages],
                    "payloads": [m.payload_json for m in messages],
                    "links": [m.link for m in messages],
                },
            )

    def _append_many(
        self, op: ops.AppendManyOp, batch_key: str, resent: bool
    ) -> Flow[Result[list[tuple[MessageRow, bool]]]]:
        """A batch; keyless items carry internal keys, so a resent batch replays itself."""
        items = tuple(
            item if item.idempotency_key is not None
            else item._replace(idempotency_key=f"{batch_key}:{n}")
            for n, item in enumerate(op.items)
        )  # fmt: skip
        row, lease = yield from self._lock(op.conversation_id, op.tenant)
        keys = [i.idempotency_key for i in items if resent or not _internal(i.idempotency_key)]
        stored: dict[str, MessageRow] = {}
        if keys and row is not None and decide.visible(row, op.tenant, op.now_us) is not None:
            where = {"tenant": row.tenant, "id": row.id}
            found = yield schema.FIND_KEYS, {**where, "keys": keys}
            for r in found:  # decode_message hides internal keys: key the raw column
                stored.setdefault(r[6], schema.decode_message(r))
        verdict = decide.append_many(row, replace(op, items=items), stored, lease)
        if isinstance(verdict, Result):
            return _hide_keys(verdict)
        assert row is not None
        yield from self._write(row, verdict, verdict.messages, op.now_us, op.events_kept)
        return _hide_keys(verdict.batch_result())

    def _rewrite(self, verdict: decide.Rewritten, keep: int) -> Flow[int | None]:
        row = verdict.row
        where = {"tenant": row.tenant, "id": row.id}
        yield schema.DELETE_FROM, {**where, "from": verdict.delete_from}
        yield from self._insert(row, verdict.messages)
        yield schema.UPDATE_CONVERSATION, schema.encode_conversation(row)
        cut = yield from self._trim(row.tenant, row.id, verdict.trim_from)
        yield from self._emit(row.tenant, row.id, row.activity_us, verdict.event, keep)
        return cut

    @_common.handles(ops.PopOp)
    def _pop(self, op: ops.PopOp) -> Flow[Result[MessageRow | None]]:
        row, _ = yield from self._lock(op.conversation_id, op.tenant)
        newest = None
        if row is not None:
            found = yield schema.NEWEST, {"tenant": row.tenant, "id": row.id}
            newest = schema.decode_message(found[0]) if found else None
        verdict = decide.pop(row, op, newest)
        if isinstance(verdict, Result):
            return verdict
        yield from self._rewrite(verdict, op.events_kept)
        return Result(_OK, newest)

    @_common.handles(ops.ClearOp)
    def _clear(self, op: ops.ClearOp) -> Flow[Result[int]]:
        row, _ = yield from self._lock(op.conversation_id, op.tenant)
        verdict = decide.clear(row, op)
        if isinstance(verdict, Result):
            return verdict
        yield from self._rewrite(verdict, op.events_kept)
        return Result(_OK, cast(ConversationRow, row).message_count)

    @_common.handles(ops.ReplaceOp)
    def _replace(self, op: ops.ReplaceOp) -> Flow[Result[tuple[list[MessageRow], int]]]:
        row, _ = yield from self._lock(op.conversation_id, op.tenant)
        verdict = decide.replace_history(row, op)
        if isinstance(verdict, Result):
            return verdict
        cut = yield from self._rewrite(verdict, op.events_kept)
        kept = [m for m in verdict.messages if cut is None or m.seq >= cut]
        return Result(_OK, (kept, verdict.row.last_seq))

    @_common.handles(ops.ReadOp)
    def _read(self, op: ops.ReadOp) -> Flow[Result[list[MessageRow]]]:
        if op.last is not None:
            rows = yield (
                schema.LAST.pick(op.tenant),
                {"id": op.conversation_id, "n": op.last, "now": op.now_us, "tenant": op.tenant},
            )
            if not rows:
                return Result(Outcome.NOT_FOUND, [])
            return Result(_OK, schema.decode_window(rows, op.conversation_id))
        found = yield from self._get(ops.GetOp(op.conversation_id, op.tenant, op.now_us))
        if found.value is None:
            return Result(Outcome.NOT_FOUND, [])
        where = {"tenant": found.value.tenant, "id": op.conversation_id, "n": op.limit}
        if op.before is not None:
            rows = yield schema.READ_BEFORE, {**where, "before": op.before}
            return Result(_OK, [schema.decode_message(r) for r in reversed(rows)])
        rows = yield schema.READ_AFTER, {**where, "after": op.after}
        return Result(_OK, [schema.decode_message(r) for r in rows])

    @_common.handles(ops.KeyOp)
    def _key(self, op: ops.KeyOp) -> Flow[Result[MessageRow | None]]:
        found = yield from self._get(ops.GetOp(op.conversation_id, op.tenant, op.now_us))
        if found.value is None:
            return Result(Outcome.NOT_FOUND, None)
        where = {"tenant": found.value.tenant, "id": op.conversation_id}
        rows = yield schema.KEPT_KEY, {**where, "key": op.key}
        return Result(_OK, schema.decode_message(rows[0]) if rows else None)

    @_common.handles(ops.DeliveryOp)
    def _delivery(self, op: ops.DeliveryOp) -> Flow[Result[MessageRow | None]]:
        locked, _ = yield from self._lock(op.conversation_id, op.tenant)
        row = decide.visible(locked, op.tenant, op.now_us)
        if row is None:
            return Result(Outcome.NOT_FOUND, None)
        where = {"tenant": row.tenant, "id": row.id, "seq": op.seq}
        found = yield schema.SELECT_MESSAGE, where
        message = schema.decode_message(found[0]) if found else None
        verdict = decide.delivery(message, op)
        if isinstance(verdict, Result):
            return verdict
        assert message is not None
        yield schema.UPDATE_METADATA, {**where, "meta": verdict.metadata_json}
        yield from self._emit(row.tenant, row.id, op.now_us, verdict.event, op.events_kept)
        return Result(_OK, message._replace(metadata_json=verdict.metadata_json))

    @_common.handles(ops.WindowOp)
    def _window(self, op: ops.WindowOp) -> Flow[Result[tuple[Sequence[WindowLike], int]]]:
        rows = yield (
            schema.WINDOW.pick(op.tenant),
            {"id": op.conversation_id, "extra": op.extra, "now": op.now_us, "tenant": op.tenant},
        )
        if not rows:
            return Result(Outcome.NOT_FOUND, ([], 0))
        window = [
            WindowRow(role, content.decode("utf-8", "surrogatepass"), payload, link)
            for seq, role, content, _, _, _, payload, link, _ in reversed(rows)
            if seq is not None
        ]
        return Result(_OK, (window, rows[0][8]))

    @_common.handles(ops.UpdateOp)
    def _update(self, op: ops.UpdateOp) -> Flow[Result[ConversationRow | None]]:
        return (yield from self._change(op, lambda row: decide.update(row, op)))

    @_common.handles(ops.RetainOp)
    def _retain(self, op: ops.RetainOp) -> Flow[Result[ConversationRow | None]]:
        return (yield from self._change(op, lambda row: decide.retain(row, op)))

    def _change(
        self, op: ops.UpdateOp | ops.RetainOp, judge: decide.Judge
    ) -> Flow[Result[ConversationRow | None]]:
        locked, _ = yield from self._lock(op.conversation_id, op.tenant)
        verdict = judge(locked)
        if isinstance(verdict, Result):
            return verdict
        row = verdict.row
        yield schema.UPDATE_CONVERSATION, schema.encode_conversation(row)
        yield from self._emit(row.tenant, row.id, op.now_us, verdict.event, op.events_kept)
        return verdict.result()

    @_common.handles(ops.SaveStateOp)
    def _save_state(self, op: ops.SaveStateOp) -> Flow[Result[int]]:
        """The row lock and one ``Closing`` statement (``schema.SAVE``): one round trip.

        The statement writes only what ``decide.save_state`` would write on the row it
        locked; its answer (that row and the rollback version's value) is judged by
        ``decide.save_state`` all the same, which makes the answer. Should the rules save
        where the statement wrote nothing, the save is made as the rules say in a
        transaction of its own (``_save_locked``).
        """
        where = {"tenant": op.tenant, "id": op.conversation_id}
        yield schema.LOCK_FOR_SAVE.pick(op.tenant), where  # travels with SAVE
        rows = yield (
            schema.SAVE.pick(op.tenant),
            {
                **where,
                "now": op.now_us,
                "expected": op.expected_version,
                "to": op.rollback_to,
                "value": op.value_json,
                "kept": op.versions_kept,
                "kind": _STATE_SAVED,
                "keep": op.events_kept,
            },
        )
        if not rows:
            return cast("Result[int]", decide.save_state(None, op, None))
        answer = rows[0]
        if not answer[23]:  # the row was busy: lock it (answered) before COMMIT is queued
            return (yield from self._save_locked(op))
        verdict = decide.save_state(_common.decode_conversation(answer[1:]), op, answer[22])
        if isinstance(verdict, Result):
            return verdict
        if answer[0]:
            return verdict.result()
        return (yield from self._save_locked(op))

    def _save_locked(self, op: ops.SaveStateOp) -> Flow[Result[int]]:
        """A state save in statements judged one by one: lock, the rollback's value, write."""
        row, _ = yield from self._lock(op.conversation_id, op.tenant)
        old = None
        if op.rollback_to is not None and row is not None:
            where = {"tenant": row.tenant, "id": row.id, "v": op.rollback_to}
            found = yield schema.SELECT_STATE, where
            old = str(found[0][1]) if found else None
        verdict = decide.save_state(row, op, old)
        if isinstance(verdict, Result):
            return verdict
        cid, tenant = op.conversation_id, cast(ConversationRow, row).tenant
        where = {"tenant": tenant, "id": cid}
        yield (
            schema.SAVE_STATE,
            {
                **where,
                "v": verdict.version,
                "value": verdict.value_json,
                "now": op.now_us,
                "floor": verdict.trim_to,
                "activity_us": verdict.activity_us,
                "expires_us": verdict.expires_us,
                "idle_us": verdict.idle_us,
            },
        )
        yield from self._emit(tenant, cid, op.now_us, verdict.event, op.events_kept)
        return verdict.result()

    @_common.handles(ops.LoadStateOp)
    def _load_state(self, op: ops.LoadStateOp) -> Flow[Result[StateRow | None]]:
        rows = yield (
            schema.LOAD_STATE.pick(op.tenant),
            {"tenant": op.tenant, "id": op.conversation_id, "v": op.version, "now": op.now_us},
        )
        if not rows:
            return Result(Outcome.NOT_FOUND, None)
        state = _common.decode_state(rows[0]) if rows[0][0] is not None else None
        if op.version is not None and state is None:
            return Result(Outcome.NO_VERSION, None)
        return Result(_OK, state)

    @_common.handles(ops.ListOp)
    def _list(self, op: ops.ListOp) -> Flow[Result[list[ConversationRow]]]:
        where, params = _common.list_filters(op, lambda name: f"%({name})s")
        where = ["tenant = %(tenant)s", schema.LIVE, *where]
        params.update(tenant=op.tenant, now=op.now_us, n=op.limit + 1)
        rows = yield schema.LIST.format(where=" AND ".join(where)), params
        return Result(_OK, [_common.decode_conversation(r) for r in rows])

    @_common.handles(ops.CountsOp)
    def _counts(self, op: ops.CountsOp) -> Flow[Result[TenantCounts]]:
        rows = yield schema.COUNTS, {"tenant": op.tenant, "now": op.now_us}
        return Result(_OK, _common.tenant_counts(rows))

    @_common.handles(ops.DeleteOp)
    def _delete(self, op: ops.DeleteOp) -> Flow[Result[None]]:
        row, _ = yield from self._lock(op.conversation_id, op.tenant)
        if row is None or not decide.erasable(row, op.tenant):
            return Result(Outcome.NOT_FOUND, None)
        yield from self._erase([row.tenant], [row.id])
        yield from self._emit(row.tenant, row.id, op.now_us, ev.deleted(), op.events_kept)
        return decide.erased(row, op.now_us)

    @_common.handles(ops.DeleteContactOp)
    def _delete_contact(self, op: ops.DeleteContactOp) -> Flow[Result[ErasureCounts]]:
        contact = {"tenant": op.tenant, "contact": op.contact_id}
        rows = yield schema.LOCK_CONTACT_CONVERSATIONS, contact
        ids = [r[0] for r in rows]
        facts = yield schema.FORGET_CONTACT, contact
        removed = {"messages": 0, "states": 0, "events": 0}
        if ids:
            removed = yield from self._erase([op.tenant] * len(ids), ids)
            for n, cid in enumerate(ids):
                yield from self._emit(op.tenant, cid, op.now_us, ev.deleted(), op.events_kept, n)
        live = sum(not is_expired(r[1], op.now_us) for r in rows)
        return Result(
            _OK,
            ErasureCounts(
                tuple(ids),
                live,
                removed["messages"],
                removed["states"],
                facts[0][0],
                removed["events"],
            ),
        )

    @_common.handles(ops.SweepOp)
    def _sweep(self, op: ops.SweepOp) -> Flow[Result[SweepCounts]]:
        """Bounded transactions of at most ``op.batch`` rows each, from generic plans."""
        now = {"now": op.now_us}
        due = {**now, "from": list(op.idle_from)}
        if op.dry_run:
            yield schema.GENERIC_PLANS, {}
            rows = yield schema.COUNT_DUE, due
            purged, idled, facts = rows[0]
            return Result(_OK, SweepCounts(idled=idled, purged=purged, facts_purged=facts))
        batch = max(1, op.batch)
        purged = idled = 0
        while True:
            # Expired rows are invisible already; erase them a bounded bite at a time: at most
            # ``batch`` conversations and ``batch * MESSAGES_PER_CONVERSATION`` messages per
            # transaction. A conversation row goes last, once its messages are all gone.
            yield schema.GENERIC_PLANS, {}
            rows = yield schema.DUE_PURGE, {**now, "n": batch}
            tenants, ids = [r[0] for r in rows], [r[1] for r in rows]
            if ids:
                bite = batch * MESSAGES_PER_CONVERSATION
                gone = yield schema.PURGE_MESSAGES, {"tenants": tenants, "ids": ids, "n": bite}
                if len(gone) < bite:
                    yield from self._erase(tenants, ids)
                    purged += len(ids)
            yield COMMIT
            if not ids:
                break
        for status in op.idle_from:
            while True:
                yield schema.GENERIC_PLANS, {}
                rows = yield (
                    schema.MARK_IDLE,
                    {**now, "status": status, "to": op.idle_to, "n": batch},
                )
                for n, (_, cid, tenant, old) in enumerate(sorted(rows)):  # creation order
                    event = lifecycle.status_changed(old, op.idle_to)
                    yield from self._emit(tenant, cid, op.now_us, event, op.events_kept, n)
                idled += len(rows)
                yield COMMIT
                if len(rows) < batch:
                    break
        facts = yield from _in_batches(schema.PURGE_FACTS, now, batch)
        # rows at or below the log's floor no trim will visit (none, mostly)
        yield from _in_batches(schema.PURGE_BELOW_FLOOR, {}, batch)
        return Result(_OK, SweepCounts(idled=idled, purged=purged, facts_purged=facts))

    @_common.handles(ops.EventsOp)
    def read_events(self, op: ops.EventsOp) -> Flow[Result[list[EventRow]]]:
        """Read events after the cursor once, without waiting (the drivers wait on NOTIFY)."""
        result, _ = yield from self.follow_events(op)
        return result

    def follow_events(self, op: ops.EventsOp) -> Flow[tuple[Result[list[EventRow]], bool]]:
        """``read_events``, and whether committed events after them are held back.

        One statement, so the floor, the horizon and the events come from one snapshot: a
        trim committed in between cannot make a stale cursor look valid, and no event below
        the horizon can commit later.
        """
        rows = yield (
            schema.READ_EVENTS.pick(op.tenant),
            {"after": op.after, "tenant": op.tenant, "n": op.limit},
        )
        if decide.cursor_expired(op.after, rows[0][0]):
            return Result(Outcome.EXPIRED, []), False
        events = [_common.decode_event(r[1:7]) for r in rows if r[1] is not None]
        return Result(_OK, events), bool(rows[0][7])

    @_common.handles(ops.LeaseOp)
    def _lease(self, op: ops.LeaseOp) -> Flow[Result[int]]:
        """One ``Quiet`` statement (``schema.TAKE_LEASE``), judged here; then COMMIT.

        Two round trips: a lease is not resent after a commit of unknown outcome, so its
        statement, which may wait for the row lock, is answered before COMMIT is queued (a
        connection lost in that wait is retried, as any failure before COMMIT).

        The statement takes the lease only where ``decide.lease`` grants it, on the row
        locked; a row whose lease looks busy is not locked (waiters polling a busy turn never
        wait on the row lock the holder's writes take, holding a pool connection the holder
        needs next). Its answer, the row as its snapshot has it, is judged by
        ``decide.lease`` all the same: a lease granted on that row that the statement did not
        take was taken, or the row changed, while it waited for the lock. Then the row is read
        once more (``PEEK_CONVERSATION``, one more round trip in that race only) and judged
        again: a conversation deleted or expired meanwhile is NOT_FOUND, as a lock would have
        found it; otherwise BUSY, as the next poll would find it.
        """
        rows = yield (
            schema.TAKE_LEASE.pick(op.tenant),
            {"tenant": op.tenant, "id": op.conversation_id, "now": op.now_us, "u": op.until_us},
        )
        verdict = _judge_lease(rows, op)
        if verdict.outcome is not _OK:
            return verdict
        taken = rows[0][21]
        if taken is None:
            rows = yield (
                schema.PEEK_CONVERSATION.pick(op.tenant),
                {"tenant": op.tenant, "id": op.conversation_id},
            )
            again = _judge_lease(rows, op)
            return again if again.outcome is Outcome.NOT_FOUND else Result(Outcome.BUSY, 0)
        # the newest token + 1: the snapshot's + 1 (verdict.value), or more where another
        # request took and gave back the lease while this one waited for the lock
        return Result(_OK, taken)

    @_common.handles(ops.ReleaseOp)
    def _release(self, op: ops.ReleaseOp) -> Flow[Result[None]]:
        yield schema.RELEASE_LEASE, {"id": op.conversation_id, "t": op.token}
        return Result(_OK, None)

    @_common.handles(ops.RememberOp)
    def _remember(self, op: ops.RememberOp) -> Flow[Result[FactRow]]:
        where = {"tenant": op.tenant, "contact": op.contact_id, "key": op.key}
        yield (
            schema.LOCK_CONTACT,
            {"k": f"threadkeep:fact:{op.tenant}\x1f{op.contact_id}\x1f{op.key}"},
        )
        old = yield schema.FACT_FOR_UPDATE, where
        fact = decide.supersede(_common.decode_fact(old[0]) if old else None, op)
        yield (
            schema.REMEMBER,
            {
                **where,
                "value": fact.value_json,
                "tier": fact.tier,
                "now": fact.updated_us,
                "exp": fact.expires_us,
                "source": fact.source_json,
                "history": fact.history_json,
            },
        )
        return Result(_OK, fact)

    @_common.handles(ops.RecallOp)
    def _recall(self, op: ops.RecallOp) -> Flow[Result[list[FactRow]]]:
        rows = yield (
            schema.RECALL,
            {"tenant": op.tenant, "contact": op.contact_id, "key": op.key, "now": op.now_us},
        )
        return Result(_OK, [_common.decode_fact(r) for r in rows])

    @_common.handles(ops.RewriteOp)
    def _rewrite_values(self, op: ops.RewriteOp) -> Flow[Result[int]]:
        """One compare-and-set UPDATE per value; how many rows they changed."""
        where = {"tenant": op.tenant, "id": op.conversation_id}
        writes = [
            (schema.REWRITE_MESSAGE, {**where, "seq": old.seq, **_message_pair(old, new)})
            for old, new in op.messages
        ]
        writes += [
            (
                schema.REWRITE_ARCHIVED,
                {**where, "key": old.idempotency_key, **_message_pair(old, new)},
            )
            for old, new in op.archived
        ]
        writes += [
            (schema.REWRITE_STATE,
             {**where, "version": old.version, "value": new.value_json, "old": old.value_json})
            for old, new in op.states
        ]  # fmt: skip
        writes += [
            (schema.REWRITE_FACT,
             {"tenant": op.tenant, "contact": op.contact_id, "key": old.key,
              "value": new.value_json, "history": new.history_json,
              "old_value": old.value_json, "old_history": old.history_json})
            for old, new in op.facts
        ]  # fmt: skip
        done = 0
        for statement, params in writes:
            done += len((yield statement, params))
        return Result(_OK, done)

    @_common.handles(ops.ArchivedOp)
    def _archived(self, op: ops.ArchivedOp) -> Flow[Result[tuple[list[MessageRow], str]]]:
        rows = yield (
            schema.ARCHIVED,
            {
                "tenant": op.tenant,
                "id": op.conversation_id,
                "cursor": op.cursor,
                "limit": op.limit + 1,
            },
        )
        page = [schema.decode_message(r) for r in rows[: op.limit]]
        last = page[-1].idempotency_key or "" if len(rows) > op.limit else ""
        return Result(_OK, (page, last))

    @_common.handles(ops.FactContactsOp)
    def _fact_contacts(self, op: ops.FactContactsOp) -> Flow[Result[tuple[list[str], str]]]:
        rows = yield (
            schema.FACT_CONTACTS,
            {"tenant": op.tenant, "cursor": op.cursor, "limit": op.limit + 1},
        )
        page = [r[0] for r in rows[: op.limit]]
        return Result(_OK, (page, page[-1] if len(rows) > op.limit else ""))

    @staticmethod
    def migrate(name: str, partitions: int | None = None) -> Flow[tuple[int, int]]:
        """Apply the missing migrations under an advisory lock.

        A schema created here with ``partitions`` (> 0) gets its tables hash-partitioned by
        tenant. Returns how many versions were applied and the schema's partition count.
        """
        yield schema.LOCK_MIGRATIONS, {"k": f"threadkeep:migrate:{name}"}
        yield f'CREATE SCHEMA IF NOT EXISTS "{name}"', {}
        yield f'SET LOCAL search_path TO "{name}"', {}
        yield schema.VERSION_TABLE, {}
        rows = yield schema.CURRENT_VERSION, {}
        current: int = rows[0][0]
        if current > len(schema.MIGRATIONS):
            raise BackendError(
                f'postgresql schema "{name}" has version {current}, newer than this threadkeep '
                f"knows (version {len(schema.MIGRATIONS)}): upgrade threadkeep to open it"
            )
        for version, sql in enumerate(schema.MIGRATIONS[current:], start=current + 1):
            yield sql, {}
            yield schema.RECORD_VERSION, {"v": version}
        if current == 0 and partitions:
            yield schema.SET_PARTITIONS, {"n": str(partitions)}
            yield schema.PARTITION, {}
        rows = yield schema.PARTITIONS, {}
        return len(schema.MIGRATIONS) - current, rows[0][0]


def _on_message(table: Mapping[str, str]) -> dict[str, str]:
    """The on-message table as ``schema.APPEND``'s parameters: from, to, each change's event.

    Each is a ``text[]`` written as its array literal here (cast in the statement): psycopg
    would dump a list of str element by element, a regex substitution each, on every append.
    """
    changes = [lifecycle.status_changed(source, target) for source, target in table.items()]
    return {
        "sources": _text_array(table),
        "targets": _text_array(table.values()),
        "changes": _text_array(kind for kind, _ in changes),
        "change_data": _text_array(ev.data_json(data) for _, data in changes),
    }


def _stay(table: Mapping[str, str]) -> str:
    """The statuses an append keeps (``table`` maps them to themselves): ``APPEND_ONE``'s."""
    return _text_array(source for source, target in table.items() if source == target)


def _text_array(items: Iterable[str]) -> str:
    """PostgreSQL's array literal of ``items``: each element quoted, backslash and quote escaped."""
    quoted = (item.replace("\\", "\\\\").replace('"', '\\"') for item in items)
    return "{" + ",".join(f'"{item}"' for item in quoted) + "}"


_LIFECYCLE: Final = lifecycle.ON_MESSAGE_VALUES
_ON_MESSAGE: Final = _on_message(_LIFECYCLE)
_STAY: Final = _stay(_LIFECYCLE)
_APPENDED: Final = ev.EventKind.MESSAGE_APPENDED.value
_STATE_SAVED: Final = ev.EventKind.STATE_SAVED.value


def _message_pair(old: MessageRow, new: MessageRow) -> dict[str, Any]:
    """A message rewrite's values: the new content and payload, and those it read."""
    return {
        "content": schema.encode_content(new.content),
        "payload": new.payload_json,
        "old_content": schema.encode_content(old.content),
        "old_payload": old.payload_json,
    }


def _judge_lease(rows: list[tuple[Any, ...]], op: ops.LeaseOp) -> Result[int]:
    """``decide.lease`` on a conversation row (its columns, then the lease's two).

    No row: NOT_FOUND.
    """
    if not rows:
        return Result(Outcome.NOT_FOUND, 0)
    row = rows[0]
    return decide.lease(_common.decode_conversation(row), op, (row[19], row[20]))
