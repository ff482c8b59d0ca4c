"""The Store front: plan an op (validate, stamp the time), hand it to the backend, finish.

``_StoreBase`` holds everything that does no I/O; ``Store`` and ``AsyncStore`` differ only by
``await``. Multi-step flows (waiting for a turn lease, following events) are generators pumped
by a sync and an async driver, so their logic exists once.
"""

from __future__ import annotations

import asyncio
import builtins
import enum
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar, overload

from threadkeep._clock import Clock, SystemClock
from threadkeep._config import DEFAULT_LIMITS, DEFAULT_RETENTION, Limits, Retention, Tier
from threadkeep._exceptions import (
    ConversationNotFound,
    CursorExpired,
    InvalidInput,
    StoreClosed,
    TurnInProgress,
)
from threadkeep._ids import check_id, new_id
from threadkeep._models import (
    Conversation,
    Counts,
    Event,
    Fact,
    Message,
    Page,
    StateSnapshot,
    SweepReport,
)
from threadkeep._rules import lifecycle, ops, outcomes, validate
from threadkeep._rules.retention import check_tier, fact_expiry, retention_us
from threadkeep._rules.times import from_us, to_us
from threadkeep._serde import dump_state, load_state
from threadkeep.backends._protocol import AsyncBackend, Backend

__all__ = ["AsyncStore", "AsyncTurn", "Store", "Turn"]

T = TypeVar("T")

_EVENT_BATCH = 500
_SWEEP_BATCH = 500
_LEASE_POLL = (0.01, 0.2)  # first and longest pause between lease attempts, seconds


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


class _StoreBase:
    """What Store and AsyncStore share: planning ops and finishing results, no I/O."""

    def __init__(
        self,
        *,
        url: str,
        clock: Clock | None = None,
        retention: Retention | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.url = url
        self.clock: Clock = clock or SystemClock()
        self.retention = retention or DEFAULT_RETENTION
        self.limits = limits or DEFAULT_LIMITS
        self._state = _State.OPEN

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} {self._state.value}>"

    def _now_us(self) -> int:
        if self._state is _State.CLOSED:
            raise StoreClosed()
        return to_us(self.clock.now())

    # ---- plans --------------------------------------------------------------------------

    def _plan_start(
        self,
        contact_id: str,
        *,
        tenant: str,
        agent_id: str | None,
        channel: str | None,
        stage: str | None,
        metadata: dict[str, Any] | None,
        retention: Retention | None,
        resume: bool,
        conversation_id: str | None = None,
    ) -> ops.StartOp:
        now = self._now_us()
        kept = retention_us(retention or self.retention)
        row = ops.ConvRow(
            # An id is given only by import (threadkeep._transfer), which checks it is free.
            id=new_id() if conversation_id is None else check_id(conversation_id),
            tenant=validate.check_name(tenant, "tenant"),
            contact_id=validate.check_name(contact_id, "contact_id"),
            agent_id=validate.check_name(agent_id, "agent_id", optional=True),
            channel=validate.check_name(channel, "channel", optional=True, max_len=64),
            status=lifecycle.Status.NEW.value,
            stage=validate.check_name(stage, "stage", optional=True, max_len=128),
            metadata_json=validate.dump_metadata(metadata, self.limits),
            created_us=now,
            activity_us=now,
            expires_us=kept.expires_at(now),
            idle_us=kept.idle_at(now),
            message_count=0,
            last_seq=0,
            state_version=0,
            retention=kept,
        )
        return ops.StartOp(row, resume, tuple(sorted(lifecycle.OPEN)), self.limits.events_kept)

    def _finish_create(self, result: tuple[ops.Outcome, ops.ConvRow]) -> Conversation:
        outcome, row = result
        return outcomes.finish_conversation(row, created=outcome is ops.Outcome.CREATED)

    def _tenant(self, tenant: str | None) -> str | None:
        return None if tenant is None else validate.check_name(tenant, "tenant")

    def _plan_get(self, conversation_id: str, tenant: str | None) -> ops.GetOp:
        return ops.GetOp(check_id(conversation_id), self._tenant(tenant), self._now_us())

    def _plan_find_open(self, contact_id: str, tenant: str) -> ops.FindOpenOp:
        return ops.FindOpenOp(
            validate.check_name(tenant, "tenant"),
            validate.check_name(contact_id, "contact_id"),
            tuple(sorted(lifecycle.OPEN)),
            self._now_us(),
        )

    def _plan_append(
        self,
        conversation_id: str,
        role: str,
        content: str,
        metadata: dict[str, Any] | None,
        idempotency_key: str | None,
        tenant: str | None,
        fence: int | None = None,
    ) -> ops.AppendOp:
        return ops.AppendOp(
            conversation_id=check_id(conversation_id),
            tenant=self._tenant(tenant),
            now_us=self._now_us(),
            role=validate.check_role(role),
            content=validate.check_content(content, self.limits),
            metadata_json=validate.dump_metadata(metadata, self.limits),
            idempotency_key=validate.check_name(idempotency_key, "idempotency_key", optional=True),
            on_message=lifecycle.ON_MESSAGE_VALUES,
            fence=fence,
            events_kept=self.limits.events_kept,
        )

    def _plan_messages(
        self,
        conversation_id: str,
        last: int | None,
        after: int | None,
        limit: int | None,
        tenant: str | None,
        window: bool = False,
    ) -> ops.ReadOp:
        if last is not None and (after is not None or limit is not None):
            raise InvalidInput("pass either last=, or after= with limit=, not both", field="last")
        return ops.ReadOp(
            conversation_id=check_id(conversation_id),
            tenant=self._tenant(tenant),
            now_us=self._now_us(),
            window=window,
            last=None if last is None else validate.check_limit(last, "last", self.limits),
            after=None if after is None else validate.check_seq(after, "after"),
            limit=validate.check_limit(
                self.limits.max_page if limit is None else limit, "limit", self.limits
            ),
        )

    def _finish_messages(self, rows: list[ops.MsgRow] | None, op: ops.ReadOp) -> list[Message]:
        if rows is None:
            raise ConversationNotFound(op.conversation_id)
        return [outcomes.finish_message(r) for r in rows]

    def _finish_context(
        self, rows: list[tuple[str, str]] | None, op: ops.ReadOp
    ) -> list[dict[str, str]]:
        if rows is None:
            raise ConversationNotFound(op.conversation_id)
        return [{"role": role, "content": content} for role, content in rows]

    def _plan_save_state(
        self,
        conversation_id: str,
        state: object,
        expected_version: int | None,
        tenant: str | None,
        rollback_to: int | None = None,
    ) -> ops.SaveStateOp:
        if expected_version is not None:
            validate.check_seq(expected_version, "expected_version")
        return ops.SaveStateOp(
            conversation_id=check_id(conversation_id),
            tenant=self._tenant(tenant),
            now_us=self._now_us(),
            value_json="null" if rollback_to is not None else dump_state(state, self.limits),
            expected_version=expected_version,
            rollback_to=None
            if rollback_to is None
            else validate.check_seq(rollback_to, "to_version"),
            keep=self.limits.state_versions_kept,
            events_kept=self.limits.events_kept,
        )

    def _finish_save_state(self, result: ops.StateResult, op: ops.SaveStateOp) -> int:
        expected = (
            op.rollback_to if result.outcome is ops.Outcome.NO_VERSION else op.expected_version
        )
        return outcomes.finish_state(result, op.conversation_id, expected)

    def _plan_load_state(
        self, conversation_id: str, version: int | None, tenant: str | None
    ) -> ops.LoadStateOp:
        return ops.LoadStateOp(
            conversation_id=check_id(conversation_id),
            tenant=self._tenant(tenant),
            now_us=self._now_us(),
            version=None if version is None else validate.check_seq(version, "version"),
        )

    def _finish_load_state(
        self,
        result: tuple[ops.Outcome, ops.StateRow | None],
        op: ops.LoadStateOp,
        model: type[T] | None,
    ) -> StateSnapshot[T]:
        outcome, row = result
        if outcome is ops.Outcome.NOT_FOUND:
            raise ConversationNotFound(op.conversation_id)
        if outcome is ops.Outcome.NO_VERSION:
            raise InvalidInput(
                f"state version {op.version} of conversation {op.conversation_id!r} is not kept",
                field="version",
            )
        if row is None:
            return StateSnapshot(value=None, version=0, saved_at=None)
        return StateSnapshot(load_state(row.value_json, model), row.version, from_us(row.saved_us))

    def _plan_status(self, conversation_id: str, status: str, tenant: str | None) -> ops.UpdateOp:
        target = lifecycle.check_status(status)
        return ops.UpdateOp(
            conversation_id=check_id(conversation_id),
            tenant=self._tenant(tenant),
            now_us=self._now_us(),
            field="status",
            value=target.value,
            allowed_from=lifecycle.sources_for(target),
            events_kept=self.limits.events_kept,
        )

    def _plan_stage(
        self, conversation_id: str, stage: str | None, tenant: str | None
    ) -> ops.UpdateOp:
        return ops.UpdateOp(
            conversation_id=check_id(conversation_id),
            tenant=self._tenant(tenant),
            now_us=self._now_us(),
            field="stage",
            value=validate.check_name(stage, "stage", optional=True, max_len=128),
            allowed_from=tuple(sorted(lifecycle.OPEN)),
            events_kept=self.limits.events_kept,
        )

    def _finish_update(self, result: ops.UpdateResult, op: ops.UpdateOp) -> Conversation:
        return outcomes.finish_update(result, op.conversation_id, op.value)

    def _plan_list(
        self,
        tenant: str,
        status: str | None,
        stage: str | None,
        agent_id: str | None,
        contact_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> ops.ListOp:
        return ops.ListOp(
            tenant=validate.check_name(tenant, "tenant"),
            now_us=self._now_us(),
            status=None if status is None else lifecycle.check_status(status).value,
            stage=validate.check_name(stage, "stage", optional=True, max_len=128),
            agent_id=validate.check_name(agent_id, "agent_id", optional=True),
            contact_id=validate.check_name(contact_id, "contact_id", optional=True),
            limit=validate.check_limit(limit, "limit", self.limits),
            cursor=None if cursor is None else outcomes.decode_cursor(cursor),
        )

    def _plan_counts(self, tenant: str) -> ops.CountsOp:
        return ops.CountsOp(validate.check_name(tenant, "tenant"), self._now_us())

    def _finish_counts(self, row: ops.CountsRow) -> Counts:
        return Counts(sum(row.by_status.values()), row.by_status, row.by_stage)

    def _plan_delete(self, conversation_id: str, tenant: str | None) -> ops.DeleteOp:
        return ops.DeleteOp(
            check_id(conversation_id), self._tenant(tenant), self._now_us(), self.limits.events_kept
        )

    def _finish_delete(self, existed: bool, op: ops.DeleteOp) -> None:
        if not existed:
            raise ConversationNotFound(op.conversation_id)

    def _plan_delete_contact(self, contact_id: str, tenant: str) -> ops.DeleteContactOp:
        return ops.DeleteContactOp(
            validate.check_name(tenant, "tenant"),
            validate.check_name(contact_id, "contact_id"),
            self._now_us(),
            self.limits.events_kept,
        )

    def _plan_sweep(self, dry_run: bool) -> ops.SweepOp:
        return ops.SweepOp(
            now_us=self._now_us(),
            dry_run=bool(dry_run),
            idle_to=lifecycle.Status.IDLE.value,
            idle_from=tuple(s.value for s in lifecycle.IDLE_FROM),
            batch=_SWEEP_BATCH,
            events_kept=self.limits.events_kept,
        )

    def _finish_sweep(self, row: ops.SweepRow, op: ops.SweepOp) -> SweepReport:
        return SweepReport(row.idled, row.purged, row.facts_purged, op.dry_run)

    def _plan_remember(
        self, contact_id: str, key: str, value: Any, tenant: str, tier: str
    ) -> ops.RememberOp:
        now = self._now_us()
        return ops.RememberOp(
            tenant=validate.check_name(tenant, "tenant"),
            contact_id=validate.check_name(contact_id, "contact_id"),
            key=validate.check_name(key, "key", max_len=128),
            value_json=validate.dump_json(value, "value", self.limits.max_metadata_bytes),
            tier=check_tier(tier),
            now_us=now,
            expires_us=fact_expiry(check_tier(tier), now),
        )

    def _plan_recall(self, contact_id: str, key: str | None, tenant: str) -> ops.RecallOp:
        return ops.RecallOp(
            tenant=validate.check_name(tenant, "tenant"),
            contact_id=validate.check_name(contact_id, "contact_id"),
            key=validate.check_name(key, "key", optional=True, max_len=128),
            now_us=self._now_us(),
        )

    def _finish_recall(self, rows: list[ops.FactRow]) -> list[Fact]:
        return [outcomes.finish_fact(r) for r in rows]

    # ---- flows --------------------------------------------------------------------------

    def _lease_flow(
        self,
        conversation_id: str,
        lease: float | timedelta,
        timeout: float | None,
        tenant: str | None,
    ) -> Generator[ops.LeaseOp | _Sleep, ops.LeaseResult | None, int]:
        check_id(conversation_id)
        seconds = lease.total_seconds() if isinstance(lease, timedelta) else float(lease)
        if seconds <= 0:
            raise InvalidInput("lease must be a positive number of seconds", field="lease")
        if timeout is not None and timeout < 0:
            raise InvalidInput("timeout must be zero or more seconds, or None", field="timeout")
        tenant = self._tenant(tenant)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _LEASE_POLL[0]
        while True:
            now = self._now_us()
            result = yield ops.LeaseOp(conversation_id, tenant, now, now + int(seconds * 1_000_000))
            assert result is not None
            if result.outcome is ops.Outcome.OK:
                return result.token
            if result.outcome is ops.Outcome.NOT_FOUND:
                raise ConversationNotFound(conversation_id)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TurnInProgress(conversation_id)
            yield _Sleep(pause if remaining is None else min(pause, remaining))
            pause = min(pause * 2, _LEASE_POLL[1])

    def _plan_events(
        self, tenant: str | None, after: str | None, timeout: float | None
    ) -> _EventsCursor:
        self._now_us()  # raises StoreClosed
        if timeout is not None and timeout < 0:
            raise InvalidInput("timeout must be zero or more seconds, or None", field="timeout")
        return _EventsCursor(self._tenant(tenant), after, timeout)


class _EventsCursor:
    """The state of an events() walk: what to read next, and when to stop waiting.

    ``timeout`` is how long to wait, once caught up, with no new event before stopping
    (None: never stop). Both drivers pump this object; the logic lives here once.
    """

    def __init__(self, tenant: str | None, after: str | None, timeout: float | None) -> None:
        self.tenant = tenant
        self.after = after
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.done = False

    def next_request(self) -> tuple[ops.EventsOp, float] | None:
        """Return the next read to make and how long it may wait, or None when done."""
        if self.done:
            return None
        wait = 5.0 if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        return ops.EventsOp(self.tenant, self.after, _EVENT_BATCH), wait

    def take(self, rows: list[ops.EventRow] | None) -> list[Event]:
        """Return the events of a read and advance the cursor.

        Raises:
            CursorExpired: the backend says the cursor fell out of the log.
        """
        if rows is None:
            raise CursorExpired(str(self.after))
        now = time.monotonic()
        if rows:
            self.after = rows[-1].id
            if self.timeout is not None:
                self.deadline = now + self.timeout
        elif self.deadline is not None and now >= self.deadline:
            self.done = True
        return [outcomes.finish_event(r) for r in rows]


class _TurnBase:
    def __init__(self, conversation_id: str, token: int, tenant: str | None) -> None:
        self.conversation_id = conversation_id
        self.token = token
        self.tenant = tenant

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.conversation_id} token={self.token}>"


class Turn(_TurnBase):
    """A held turn lease: append through it and the write is fenced by the lease token."""

    def __init__(self, store: Store, conversation_id: str, token: int, tenant: str | None):
        super().__init__(conversation_id, token, tenant)
        self._store = store

    def append(
        self,
        role: str,
        content: str,
        *,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Message:
        """Append to the turn's conversation, only while this lease is still current.

        Raises:
            TurnInProgress: the lease ran out and another worker took the turn.
            ConversationNotFound: the conversation is gone.
            ConversationClosed: the conversation was closed.
            InvalidInput: bad role, content or metadata.
        """
        store = self._store
        op = store._plan_append(
            self.conversation_id, role, content, metadata, idempotency_key, self.tenant, self.token
        )
        return outcomes.finish_append(store._backend.append(op), op.conversation_id)


class AsyncTurn(_TurnBase):
    """A held turn lease of an AsyncStore; see Turn."""

    def __init__(self, store: AsyncStore, conversation_id: str, token: int, tenant: str | None):
        super().__init__(conversation_id, token, tenant)
        self._store = store

    async def append(
        self,
        role: str,
        content: str,
        *,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Message:
        """Append to the turn's conversation, fenced by the lease (see Turn.append)."""
        store = self._store
        op = store._plan_append(
            self.conversation_id, role, content, metadata, idempotency_key, self.tenant, self.token
        )
        return outcomes.finish_append(await (await store._use()).append(op), op.conversation_id)


class Store(_StoreBase):
    """A conversation store; open one with ``threadkeep.open(url)``.

    Use it as a context manager, or call ``close()``, to release its connections.
    """

    def __init__(self, backend: Backend, **options: Any) -> None:
        super().__init__(**options)
        self._backend = backend

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the store's connections; further calls raise StoreClosed."""
        if self._state is _State.OPEN:
            self._state = _State.CLOSED
            self._backend.close()

    def ping(self) -> None:
        """Check that the backend answers.

        Raises:
            BackendUnavailable: it does not.
            StoreClosed: the store was closed.
        """
        self._now_us()
        self._backend.ping()

    def start(
        self,
        contact_id: str,
        *,
        tenant: str = "default",
        agent_id: str | None = None,
        channel: str | None = None,
        stage: str | None = None,
        metadata: dict[str, Any] | None = None,
        retention: Retention | None = None,
    ) -> Conversation:
        """Start a new conversation (status ``new``).

        Args:
            contact_id: the customer (phone number, CRM id …).
            tenant: namespace of the conversation.
            agent_id: the bot or persona answering.
            channel: ``web``, ``whatsapp``, ``sms`` …
            stage: initial domain stage such as ``"Q0"``.
            metadata: JSON object stored with the conversation.
            retention: overrides the store's retention for this conversation.

        Returns:
            The new conversation.

        Raises:
            InvalidInput: a bad name or metadata.
        """
        op = self._plan_start(
            contact_id,
            tenant=tenant,
            agent_id=agent_id,
            channel=channel,
            stage=stage,
            metadata=metadata,
            retention=retention,
            resume=False,
        )
        return self._finish_create(self._backend.create(op))

    def resume(
        self,
        contact_id: str,
        *,
        tenant: str = "default",
        agent_id: str | None = None,
        channel: str | None = None,
        stage: str | None = None,
        metadata: dict[str, Any] | None = None,
        retention: Retention | None = None,
    ) -> Conversation:
        """Return the contact's open conversation, or start one, atomically.

        Two workers resuming the same contact at once get the same conversation. The other
        arguments are used only when a conversation is started.

        Raises:
            InvalidInput: a bad name or metadata.
        """
        op = self._plan_start(
            contact_id,
            tenant=tenant,
            agent_id=agent_id,
            channel=channel,
            stage=stage,
            metadata=metadata,
            retention=retention,
            resume=True,
        )
        return self._finish_create(self._backend.create(op))

    def _create_with_id(
        self,
        conversation_id: str,
        contact_id: str,
        *,
        tenant: str,
        agent_id: str | None,
        channel: str | None,
        stage: str | None,
        metadata: dict[str, Any] | None,
        retention: Retention,
    ) -> Conversation:
        """Start a conversation with a given id: the path of ``threadkeep._transfer`` (import).

        The caller makes sure the id is free (import looks it up first).
        """
        op = self._plan_start(
            contact_id, tenant=tenant, agent_id=agent_id, channel=channel, stage=stage,
            metadata=metadata, retention=retention, resume=False, conversation_id=conversation_id,
        )  # fmt: skip
        return self._finish_create(self._backend.create(op))

    def get(self, conversation_id: str, *, tenant: str | None = None) -> Conversation:
        """Return a live conversation.

        Args:
            conversation_id: its id.
            tenant: when given, a conversation of another tenant is not found.

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: a malformed id.
        """
        op = self._plan_get(conversation_id, tenant)
        return outcomes.finish_conversation(
            outcomes.require(self._backend.get(op), conversation_id)
        )

    def find_open(self, contact_id: str, *, tenant: str = "default") -> Conversation | None:
        """Return the contact's open (not closed, not expired) conversation, or None.

        Raises:
            InvalidInput: a bad contact or tenant name.
        """
        row = self._backend.find_open(self._plan_find_open(contact_id, tenant))
        return None if row is None else outcomes.finish_conversation(row)

    def append(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        tenant: str | None = None,
    ) -> Message:
        """Append a message; it gets the next ``seq``.

        Args:
            conversation_id: the conversation.
            role: ``user``, ``assistant``, ``agent``, ``system`` or ``tool``.
            content: non-empty text, at most ``Limits.max_content_bytes``.
            metadata: JSON object stored with the message.
            idempotency_key: a replay with the same key returns the stored message.
            tenant: when given, a conversation of another tenant is not found.

        Returns:
            The stored message (the original one for a replayed key).

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            ConversationClosed: the conversation is closed.
            InvalidInput: bad role, content, metadata or key; nothing was written.
        """
        op = self._plan_append(conversation_id, role, content, metadata, idempotency_key, tenant)
        return outcomes.finish_append(self._backend.append(op), conversation_id)

    def messages(
        self,
        conversation_id: str,
        *,
        last: int | None = None,
        after: int | None = None,
        limit: int | None = None,
        tenant: str | None = None,
    ) -> list[Message]:
        """Return messages oldest first: the ``last`` N, or up to ``limit`` after seq ``after``.

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: bad bounds, or ``last`` together with ``after``/``limit``.
        """
        op = self._plan_messages(conversation_id, last, after, limit, tenant)
        return self._finish_messages(self._backend.read_messages(op), op)

    def context(self, conversation_id: str, *, tenant: str | None = None) -> list[dict[str, str]]:
        """Return the conversation's window as ``[{"role": …, "content": …}]``, oldest first.

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
        """
        op = self._plan_messages(conversation_id, None, None, None, tenant, window=True)
        return self._finish_context(self._backend.read_context(op), op)

    def save_state(
        self,
        conversation_id: str,
        state: object,
        *,
        expected_version: int | None = None,
        tenant: str | None = None,
    ) -> int:
        """Save a new state version (a pydantic model, dataclass or JSON value).

        Args:
            conversation_id: the conversation.
            state: the state document.
            expected_version: when given, save only if it is the current version (0: none yet).
            tenant: when given, a conversation of another tenant is not found.

        Returns:
            The new version.

        Raises:
            StateConflict: ``expected_version`` is stale; the stored state is untouched.
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: the state cannot be serialized or is too large.
        """
        op = self._plan_save_state(conversation_id, state, expected_version, tenant)
        return self._finish_save_state(self._backend.save_state(op), op)

    @overload
    def load_state(
        self,
        conversation_id: str,
        model: type[T],
        *,
        version: int | None = ...,
        tenant: str | None = ...,
    ) -> StateSnapshot[T]: ...
    @overload
    def load_state(
        self,
        conversation_id: str,
        model: None = ...,
        *,
        version: int | None = ...,
        tenant: str | None = ...,
    ) -> StateSnapshot[Any]: ...
    def load_state(
        self,
        conversation_id: str,
        model: type[T] | None = None,
        *,
        version: int | None = None,
        tenant: str | None = None,
    ) -> StateSnapshot[Any]:
        """Return the current state (or a kept ``version``), as ``model`` when given.

        Returns:
            A snapshot; ``version`` 0 and ``value`` None when nothing was saved yet.

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: that version is not kept, or the state does not fit ``model``.
        """
        op = self._plan_load_state(conversation_id, version, tenant)
        return self._finish_load_state(self._backend.load_state(op), op, model)

    def rollback_state(
        self,
        conversation_id: str,
        to_version: int,
        *,
        expected_version: int | None = None,
        tenant: str | None = None,
    ) -> int:
        """Save the value of kept version ``to_version`` as a new version.

        Returns:
            The new version.

        Raises:
            InvalidInput: ``to_version`` is not kept.
            StateConflict: ``expected_version`` is stale.
            ConversationNotFound: absent, expired or another tenant's.
        """
        op = self._plan_save_state(conversation_id, None, expected_version, tenant, to_version)
        return self._finish_save_state(self._backend.save_state(op), op)

    def set_status(
        self, conversation_id: str, status: str, *, tenant: str | None = None
    ) -> Conversation:
        """Move the conversation to ``status`` (setting the current one changes nothing).

        Raises:
            IllegalTransition: the lifecycle forbids it (the error lists what is allowed).
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: an unknown status.
        """
        op = self._plan_status(conversation_id, status, tenant)
        return self._finish_update(self._backend.update(op), op)

    def set_stage(
        self, conversation_id: str, stage: str | None, *, tenant: str | None = None
    ) -> Conversation:
        """Set the conversation's domain stage (``None`` clears it).

        Raises:
            ConversationClosed: the conversation is closed.
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: a bad stage name.
        """
        op = self._plan_stage(conversation_id, stage, tenant)
        return self._finish_update(self._backend.update(op), op)

    def close_conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> Conversation:
        """Close the conversation: it takes no more messages (closing twice is a no-op).

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
        """
        return self.set_status(conversation_id, lifecycle.Status.CLOSED, tenant=tenant)

    @contextmanager
    def turn(
        self,
        conversation_id: str,
        *,
        lease: float | timedelta = 30.0,
        timeout: float | None = 0.0,
        tenant: str | None = None,
    ) -> Iterator[Turn]:
        """Hold the conversation's turn lease while answering it.

        Args:
            conversation_id: the conversation.
            lease: how long the lease lasts if this worker dies without releasing it.
            timeout: how long to wait for a busy lease (None: forever; 0: not at all).
            tenant: when given, a conversation of another tenant is not found.

        Yields:
            A Turn whose ``append`` is fenced by the lease token.

        Raises:
            TurnInProgress: another worker holds the lease past ``timeout``.
            ConversationNotFound: absent, expired or another tenant's.
        """
        flow = self._lease_flow(conversation_id, lease, timeout, tenant)
        request = next(flow)
        try:
            while True:
                if isinstance(request, _Sleep):
                    time.sleep(request.seconds)
                    request = flow.send(None)
                else:
                    request = flow.send(self._backend.acquire_lease(request))
        except StopIteration as done:
            token: int = done.value
        try:
            yield Turn(self, conversation_id, token, tenant)
        finally:
            self._backend.release_lease(ops.ReleaseOp(conversation_id, token))

    def list(
        self,
        *,
        tenant: str = "default",
        status: str | None = None,
        stage: str | None = None,
        agent_id: str | None = None,
        contact_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Conversation]:
        """Return a page of live conversations, newest activity first.

        Args:
            tenant: whose conversations.
            status: only this status.
            stage: only this stage.
            agent_id: only this agent's.
            contact_id: only this contact's.
            limit: page size.
            cursor: ``next_cursor`` of the previous page.

        Returns:
            A Page; ``next_cursor`` is None on the last page.

        Raises:
            InvalidInput: a bad filter, limit or cursor.
        """
        op = self._plan_list(tenant, status, stage, agent_id, contact_id, limit, cursor)
        return outcomes.finish_page(self._backend.list(op), op.limit)

    def counts(self, *, tenant: str = "default") -> Counts:
        """Return how many live conversations the tenant has, by status and by stage.

        Raises:
            InvalidInput: a bad tenant name.
        """
        return self._finish_counts(self._backend.counts(self._plan_counts(tenant)))

    def delete(self, conversation_id: str, *, tenant: str | None = None) -> None:
        """Erase a conversation: messages, state, leases and its events.

        Raises:
            ConversationNotFound: there was no live conversation with that id.
        """
        op = self._plan_delete(conversation_id, tenant)
        self._finish_delete(self._backend.delete(op), op)

    def delete_contact(self, contact_id: str, *, tenant: str = "default") -> int:
        """Erase every conversation and remembered fact of a contact.

        Returns:
            How many live conversations were erased.

        Raises:
            InvalidInput: a bad contact or tenant name.
        """
        return self._backend.delete_contact(self._plan_delete_contact(contact_id, tenant))

    def sweep(self, *, dry_run: bool = False) -> SweepReport:
        """Mark conversations idle after ``idle_after`` and purge expired ones.

        Args:
            dry_run: only count what would change.

        Returns:
            What was (or would be) changed.
        """
        op = self._plan_sweep(dry_run)
        return self._finish_sweep(self._backend.sweep(op), op)

    def events(
        self, *, tenant: str | None = None, after: str | None = None, timeout: float | None = 0.0
    ) -> Iterator[Event]:
        """Yield change events after cursor ``after`` (None: from the oldest retained).

        Args:
            tenant: only this tenant's events.
            after: the ``id`` of the last event already seen.
            timeout: once caught up, how long to wait for new events before stopping
                (None: follow forever).

        Yields:
            Events in log order.

        Raises:
            CursorExpired: ``after`` fell out of the bounded log.
        """
        walk = self._plan_events(tenant, after, timeout)
        while (request := walk.next_request()) is not None:
            op, wait = request
            yield from walk.take(self._backend.read_events(op, wait))

    def remember(
        self,
        contact_id: str,
        key: str,
        value: Any,
        *,
        tenant: str = "default",
        tier: Tier = "medium",
    ) -> Fact:
        """Remember a fact about a contact, beyond one conversation.

        Args:
            contact_id: the contact.
            key: the fact's name.
            value: any JSON value.
            tenant: the contact's tenant.
            tier: ``critical`` (365 days), ``high`` (30), ``medium`` (7) or ``low`` (24 h).

        Raises:
            InvalidInput: a bad name, tier or value.
        """
        op = self._plan_remember(contact_id, key, value, tenant, tier)
        return outcomes.finish_fact(self._backend.remember(op))

    def recall(
        self, contact_id: str, key: str | None = None, *, tenant: str = "default"
    ) -> builtins.list[Fact]:
        """Return the contact's live facts (all, or the one named ``key``), ordered by key.

        Raises:
            InvalidInput: a bad name.
        """
        return self._finish_recall(self._backend.recall(self._plan_recall(contact_id, key, tenant)))


class AsyncStore(_StoreBase):
    """The asyncio twin of Store: the same methods, as coroutines (see Store for each)."""

    def __init__(
        self,
        backend: AsyncBackend | None = None,
        *,
        connect: Callable[[], Awaitable[AsyncBackend]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if (backend is None) == (connect is None):
            raise TypeError("AsyncStore needs a backend or connect=, not both")
        self._backend = backend
        self._connect = connect
        self._connecting: asyncio.Lock | None = None

    async def _open(self) -> AsyncBackend:
        """Connect the backend on first use (once, however many tasks ask at the same time).

        Raises:
            BackendUnavailable: the store cannot be reached; the next call tries again.
            StoreClosed: the store was closed.
        """
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._state is _State.CLOSED:
                raise StoreClosed()
            if self._backend is None:
                assert self._connect is not None
                self._backend = await self._connect()
            return self._backend

    async def _use(self) -> AsyncBackend:
        return self._backend or await self._open()

    def __await__(self) -> Generator[Any, None, AsyncStore]:
        """``await open_async(url)``: connect now, so an unreachable store raises here."""
        return self._opened().__await__()

    async def _opened(self) -> AsyncStore:
        if self._backend is None:
            await self._open()
        return self

    async def __aenter__(self) -> AsyncStore:
        return await self._opened()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the store's connections; further calls raise StoreClosed."""
        if self._state is _State.OPEN:
            self._state = _State.CLOSED
            if self._backend is not None:
                await self._backend.close()

    async def ping(self) -> None:
        """See Store.ping."""
        self._now_us()
        await (await self._use()).ping()

    async def start(
        self,
        contact_id: str,
        *,
        tenant: str = "default",
        agent_id: str | None = None,
        channel: str | None = None,
        stage: str | None = None,
        metadata: dict[str, Any] | None = None,
        retention: Retention | None = None,
    ) -> Conversation:
        """See Store.start."""
        op = self._plan_start(
            contact_id, tenant=tenant, agent_id=agent_id, channel=channel, stage=stage,
            metadata=metadata, retention=retention, resume=False,
        )  # fmt: skip
        return self._finish_create(await (await self._use()).create(op))

    async def resume(
        self,
        contact_id: str,
        *,
        tenant: str = "default",
        agent_id: str | None = None,
        channel: str | None = None,
        stage: str | None = None,
        metadata: dict[str, Any] | None = None,
        retention: Retention | None = None,
    ) -> Conversation:
        """See Store.resume."""
        op = self._plan_start(
            contact_id, tenant=tenant, agent_id=agent_id, channel=channel, stage=stage,
            metadata=metadata, retention=retention, resume=True,
        )  # fmt: skip
        return self._finish_create(await (await self._use()).create(op))

    async def get(self, conversation_id: str, *, tenant: str | None = None) -> Conversation:
        """See Store.get."""
        row = await (await self._use()).get(self._plan_get(conversation_id, tenant))
        return outcomes.finish_conversation(outcomes.require(row, conversation_id))

    async def find_open(self, contact_id: str, *, tenant: str = "default") -> Conversation | None:
        """See Store.find_open."""
        row = await (await self._use()).find_open(self._plan_find_open(contact_id, tenant))
        return None if row is None else outcomes.finish_conversation(row)

    async def append(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        tenant: str | None = None,
    ) -> Message:
        """See Store.append."""
        op = self._plan_append(conversation_id, role, content, metadata, idempotency_key, tenant)
        return outcomes.finish_append(await (await self._use()).append(op), conversation_id)

    async def messages(
        self,
        conversation_id: str,
        *,
        last: int | None = None,
        after: int | None = None,
        limit: int | None = None,
        tenant: str | None = None,
    ) -> builtins.list[Message]:
        """See Store.messages."""
        op = self._plan_messages(conversation_id, last, after, limit, tenant)
        return self._finish_messages(await (await self._use()).read_messages(op), op)

    async def context(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> builtins.list[dict[str, str]]:
        """See Store.context."""
        op = self._plan_messages(conversation_id, None, None, None, tenant, window=True)
        return self._finish_context(await (await self._use()).read_context(op), op)

    async def save_state(
        self,
        conversation_id: str,
        state: object,
        *,
        expected_version: int | None = None,
        tenant: str | None = None,
    ) -> int:
        """See Store.save_state."""
        op = self._plan_save_state(conversation_id, state, expected_version, tenant)
        return self._finish_save_state(await (await self._use()).save_state(op), op)

    @overload
    async def load_state(
        self,
        conversation_id: str,
        model: type[T],
        *,
        version: int | None = ...,
        tenant: str | None = ...,
    ) -> StateSnapshot[T]: ...
    @overload
    async def load_state(
        self,
        conversation_id: str,
        model: None = ...,
        *,
        version: int | None = ...,
        tenant: str | None = ...,
    ) -> StateSnapshot[Any]: ...
    async def load_state(
        self,
        conversation_id: str,
        model: type[T] | None = None,
        *,
        version: int | None = None,
        tenant: str | None = None,
    ) -> StateSnapshot[Any]:
        """See Store.load_state."""
        op = self._plan_load_state(conversation_id, version, tenant)
        return self._finish_load_state(await (await self._use()).load_state(op), op, model)

    async def rollback_state(
        self,
        conversation_id: str,
        to_version: int,
        *,
        expected_version: int | None = None,
        tenant: str | None = None,
    ) -> int:
        """See Store.rollback_state."""
        op = self._plan_save_state(conversation_id, None, expected_version, tenant, to_version)
        return self._finish_save_state(await (await self._use()).save_state(op), op)

    async def set_status(
        self, conversation_id: str, status: str, *, tenant: str | None = None
    ) -> Conversation:
        """See Store.set_status."""
        op = self._plan_status(conversation_id, status, tenant)
        return self._finish_update(await (await self._use()).update(op), op)

    async def set_stage(
        self, conversation_id: str, stage: str | None, *, tenant: str | None = None
    ) -> Conversation:
        """See Store.set_stage."""
        op = self._plan_stage(conversation_id, stage, tenant)
        return self._finish_update(await (await self._use()).update(op), op)

    async def close_conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> Conversation:
        """See Store.close_conversation."""
        return await self.set_status(conversation_id, lifecycle.Status.CLOSED, tenant=tenant)

    @asynccontextmanager
    async def turn(
        self,
        conversation_id: str,
        *,
        lease: float | timedelta = 30.0,
        timeout: float | None = 0.0,  # noqa: ASYNC109 - a lease wait, not an I/O timeout
        tenant: str | None = None,
    ) -> AsyncIterator[AsyncTurn]:
        """See Store.turn (``async with``)."""
        flow = self._lease_flow(conversation_id, lease, timeout, tenant)
        request = next(flow)
        try:
            while True:
                if isinstance(request, _Sleep):
                    await asyncio.sleep(request.seconds)
                    request = flow.send(None)
                else:
                    request = flow.send(await (await self._use()).acquire_lease(request))
        except StopIteration as done:
            token: int = done.value
        try:
            yield AsyncTurn(self, conversation_id, token, tenant)
        finally:
            await (await self._use()).release_lease(ops.ReleaseOp(conversation_id, token))

    async def list(
        self,
        *,
        tenant: str = "default",
        status: str | None = None,
        stage: str | None = None,
        agent_id: str | None = None,
        contact_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Conversation]:
        """See Store.list."""
        op = self._plan_list(tenant, status, stage, agent_id, contact_id, limit, cursor)
        return outcomes.finish_page(await (await self._use()).list(op), op.limit)

    async def counts(self, *, tenant: str = "default") -> Counts:
        """See Store.counts."""
        return self._finish_counts(await (await self._use()).counts(self._plan_counts(tenant)))

    async def delete(self, conversation_id: str, *, tenant: str | None = None) -> None:
        """See Store.delete."""
        op = self._plan_delete(conversation_id, tenant)
        self._finish_delete(await (await self._use()).delete(op), op)

    async def delete_contact(self, contact_id: str, *, tenant: str = "default") -> int:
        """See Store.delete_contact."""
        return await (await self._use()).delete_contact(
            self._plan_delete_contact(contact_id, tenant)
        )

    async def sweep(self, *, dry_run: bool = False) -> SweepReport:
        """See Store.sweep."""
        op = self._plan_sweep(dry_run)
        return self._finish_sweep(await (await self._use()).sweep(op), op)

    async def events(
        self,
        *,
        tenant: str | None = None,
        after: str | None = None,
        timeout: float | None = 0.0,  # noqa: ASYNC109
    ) -> AsyncIterator[Event]:
        """See Store.events (``async for``)."""
        walk = self._plan_events(tenant, after, timeout)
        while (request := walk.next_request()) is not None:
            op, wait = request
            for event in walk.take(await (await self._use()).read_events(op, wait)):
                yield event

    async def remember(
        self,
        contact_id: str,
        key: str,
        value: Any,
        *,
        tenant: str = "default",
        tier: Tier = "medium",
    ) -> Fact:
        """See Store.remember."""
        op = self._plan_remember(contact_id, key, value, tenant, tier)
        return outcomes.finish_fact(await (await self._use()).remember(op))

    async def recall(
        self, contact_id: str, key: str | None = None, *, tenant: str = "default"
    ) -> builtins.list[Fact]:
        """See Store.recall."""
        rows = await (await self._use()).recall(self._plan_recall(contact_id, key, tenant))
        return self._finish_recall(rows)
