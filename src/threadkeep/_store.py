"""The Store fronts: plan an op (``_rules.plans``), execute it, finish (``_rules.outcomes``).

``Store`` and ``AsyncStore`` differ only by ``await``: every method is a plan, one
``execute`` and a finish, so the twins hold no logic. The multi-step flows (waiting for a turn
lease, following events) live in ``_rules.flows``, pumped here by a sync and an async driver.
"""

from __future__ import annotations

import asyncio
import builtins
import enum
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from types import TracebackType
from typing import Any, Final, TypeVar, overload

from threadkeep import formats
from threadkeep._clock import Clock, SystemClock
from threadkeep._config import DEFAULT_LIMITS, DEFAULT_RETENTION, Limits, Retention, Tier
from threadkeep._encryption import (
    AsyncSealedBackend,
    Encryption,
    Reencrypted,
    SealedBackend,
    Sealer,
    reencrypt_flow,
)
from threadkeep._exceptions import BackendUnavailable, InvalidInput, StoreClosed
from threadkeep._models import (
    Conversation,
    Counts,
    ErasureReceipt,
    Event,
    Fact,
    Message,
    Page,
    StateSnapshot,
    SweepReport,
)
from threadkeep._rules import flows, outcomes, plans, validate
from threadkeep._rules.lifecycle import Status
from threadkeep._rules.ops import AppendReadOp, Op, Result, StartOp
from threadkeep._rules.parts import MessageLike
from threadkeep._rules.times import to_us
from threadkeep._turn import AsyncTurn, Turn
from threadkeep.backends._protocol import AsyncBackend, Backend

__all__ = ["AsyncStore", "Store"]

T = TypeVar("T")
R = TypeVar("R")


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


#: As a name: on Python 3.11 ``_State.CLOSED`` goes through ``EnumType.__getattr__``'s slow
#: attribute path (~850 instructions), and every call tests it (``_now_us``, ``_check_open``).
_CLOSED: Final = _State.CLOSED


class _StoreBase:
    """What Store and AsyncStore share: configuration, the clock, the open/closed state."""

    def __init__(
        self,
        *,
        url: str,
        clock: Clock | None = None,
        retention: Retention | None = None,
        limits: Limits | None = None,
        encryption: Encryption | None = None,
    ) -> None:
        self.url = url
        self.clock: Clock = clock or SystemClock()
        self.retention = retention or DEFAULT_RETENTION
        self.limits = limits or DEFAULT_LIMITS
        self._sealer = None if encryption is None else Sealer(encryption)
        self._state = _State.OPEN

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} {self._state.value}>"

    def _check_open(self) -> None:
        if self._state is _CLOSED:
            raise StoreClosed()

    def _now_us(self) -> int:
        """The store's clock, in µs; raises StoreClosed once the store was closed."""
        if self._state is _CLOSED:
            raise StoreClosed()
        if type(self.clock) is SystemClock:  # the same floored µs, without a datetime
            return time.time_ns() // 1000
        return to_us(self.clock.now())

    def _start_op(
        self,
        resume: bool,
        contact_id: str,
        tenant: str,
        agent_id: str | None,
        channel: str | None,
        stage: str | None,
        metadata: dict[str, Any] | None,
        retention: Retention | None,
        conversation_id: str | None = None,
    ) -> StartOp:
        """The op of ``start`` (``resume`` False) and ``resume``, in their arguments' order."""
        return plans.start(
            self._now_us(), self.limits, retention or self.retention, contact_id, tenant=tenant,
            agent_id=agent_id, channel=channel, stage=stage, metadata=metadata, resume=resume,
            conversation_id=conversation_id,
        )  # fmt: skip

    def _reencrypt(
        self, tenant: str, batch: int
    ) -> Generator[Op[Any] | Reencrypted, Any, Reencrypted]:
        """The walk of ``reencrypt`` (``_encryption.reencrypt_flow``), its arguments checked."""
        self._check_open()
        if self._sealer is None:
            raise InvalidInput(
                "reencrypt needs a store opened with encryption=threadkeep.Encryption(...)",
                field="encryption",
            )
        return reencrypt_flow(
            self._sealer,
            validate.check_name(tenant, "tenant"),
            validate.check_limit(batch, "batch", self.limits),
            self.limits.state_versions_kept,
            self._now_us,
        )


class Store(_StoreBase):
    """A conversation store; open one with ``threadkeep.open(url)``.

    Use it as a context manager, or call ``close()``, to release its connections.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        url: str,
        clock: Clock | None = None,
        retention: Retention | None = None,
        limits: Limits | None = None,
        encryption: Encryption | None = None,
    ) -> None:
        super().__init__(
            url=url, clock=clock, retention=retention, limits=limits, encryption=encryption
        )
        self._raw = backend
        self._backend: Backend = (
            backend if self._sealer is None else SealedBackend(backend, self._sealer)
        )

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
        self._check_open()
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
            The new conversation (``created`` True).

        Raises:
            InvalidInput: a bad name or metadata.
        """
        op = self._start_op(
            False, contact_id, tenant, agent_id, channel, stage, metadata, retention
        )
        return outcomes.finish_create(self._backend.execute(op))

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
        arguments are used only when a conversation is started. With several open ones, the
        one with the newest activity is returned.

        Returns:
            The conversation; ``created`` says whether this call started it.

        Raises:
            InvalidInput: a bad name or metadata.
        """
        op = self._start_op(True, contact_id, tenant, agent_id, channel, stage, metadata, retention)
        return outcomes.finish_create(self._backend.execute(op))

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
        """Start a conversation with a given id: the path of ``threadkeep.transfer`` (import).

        The caller makes sure the id is free (import looks it up first).
        """
        op = self._start_op(
            False,
            contact_id,
            tenant,
            agent_id,
            channel,
            stage,
            metadata,
            retention,
            conversation_id,
        )
        return outcomes.finish_create(self._backend.execute(op))

    def get(self, conversation_id: str, *, tenant: str | None = None) -> Conversation:
        """Return a live conversation.

        Args:
            conversation_id: its id.
            tenant: when given, a conversation of another tenant is not found.

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: a malformed id.
        """
        op = plans.get(self._now_us(), conversation_id, tenant)
        return outcomes.finish_get(self._backend.execute(op), op.conversation_id)

    def find_open(self, contact_id: str, *, tenant: str = "default") -> Conversation | None:
        """Return the contact's open (not closed, not expired) conversation, or None.

        With several, the one with the newest activity (then the greatest id).

        Raises:
            InvalidInput: a bad contact or tenant name.
        """
        op = plans.find_open(self._now_us(), contact_id, tenant)
        return outcomes.finish_find_open(self._backend.execute(op))

    def append(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        tenant: str | None = None,
        payload: Any = None,
    ) -> Message:
        """Append a message; it gets the next ``seq``.

        Args:
            conversation_id: the conversation.
            role: ``user``, ``assistant``, ``agent``, ``system`` or ``tool`` (for a
                framework's item, ``threadkeep.formats.role_for(item)``).
            content: the text people read, at most ``Limits.max_content_bytes``; it may be
                blank when ``payload`` carries the message.
            metadata: JSON object stored with the message.
            idempotency_key: a replay with the same key (in this conversation) stores nothing
                and returns the stored message, even after a close or after ``max_messages``
                trimmed it.
            tenant: when given, a conversation of another tenant is not found.
            payload: a JSON object or array kept verbatim and returned deep-equal (a
                framework's item, a provider's content blocks with thinking signatures,
                base64 images …), at most ``Limits.max_payload_bytes``.

        Returns:
            The stored message (the original one, ``replayed`` True, for a known key).

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            ConversationClosed: the conversation is closed.
            InvalidInput: bad role, content, payload, metadata or key; nothing was written.
        """
        return self._append(
            conversation_id, role, content, metadata, idempotency_key, tenant, payload=payload
        )

    def append_many(
        self,
        conversation_id: str,
        items: Iterable[tuple[Any, ...]],
        *,
        tenant: str | None = None,
    ) -> builtins.list[Message]:
        """Append a batch in one transaction: consecutive seqs, all or nothing.

        Args:
            conversation_id: the conversation.
            items: ``(role, content)`` or ``(role, content, options)`` tuples, where options
                may hold ``payload``, ``metadata`` and ``idempotency_key`` (as for append).
                An item whose key is stored already, or used by an earlier item, is a replay:
                it returns that message and stores nothing.
            tenant: when given, a conversation of another tenant is not found.

        Returns:
            Each item's message, in order (``replayed`` True for replays). An empty batch
            returns [] without reading anything.

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            ConversationClosed: the conversation is closed (and some item is new).
            InvalidInput: a bad item (named by its index) or more than ``Limits.max_batch``
                items; nothing was written.
        """
        return self._append_many(conversation_id, items, tenant)

    def _append_many(
        self,
        conversation_id: str,
        items: Iterable[tuple[Any, ...]],
        tenant: str | None,
        fence: int | None = None,
    ) -> builtins.list[Message]:
        op = plans.append_many(
            self._now_us(), self.limits, conversation_id, items, tenant=tenant, fence=fence
        )
        if not op.items:
            return []
        return outcomes.finish_append_many(self._backend.execute(op), op)

    def pop_last(self, conversation_id: str, *, tenant: str | None = None) -> Message | None:
        """Remove the newest message and return it (None when there is none).

        Its seq is given to the next message, so seqs stay gap-free; its idempotency key is
        free again.

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            ConversationClosed: the conversation is closed.
        """
        op = plans.pop_last(self._now_us(), self.limits, conversation_id, tenant)
        return outcomes.finish_pop(self._backend.execute(op), op)

    def clear_messages(self, conversation_id: str, *, tenant: str | None = None) -> int:
        """Remove every message; the conversation, its state and its lifecycle stay.

        The next message continues after the last seq; the removed messages' idempotency keys
        are free again.

        Returns:
            How many messages were removed.

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            ConversationClosed: the conversation is closed.
        """
        op = plans.clear_messages(self._now_us(), self.limits, conversation_id, tenant)
        return outcomes.finish_clear(self._backend.execute(op), op)

    def replace_messages(
        self,
        conversation_id: str,
        items: Iterable[tuple[Any, ...]],
        *,
        expected_last_seq: int | None = None,
        tenant: str | None = None,
    ) -> builtins.list[Message]:
        """Replace the whole history with ``items`` atomically (compaction).

        Args:
            conversation_id: the conversation.
            items: the new history, as for ``append_many``; a key may appear once.
            expected_last_seq: when given, replace only if it is still the last seq (what
                the caller read and compacted).
            tenant: when given, a conversation of another tenant is not found.

        Returns:
            The new messages; their seqs follow the old last seq.

        Raises:
            HistoryConflict: the history changed since ``expected_last_seq``; it is unchanged.
            ConversationNotFound: absent, expired or another tenant's.
            ConversationClosed: the conversation is closed.
            InvalidInput: a bad item; nothing was written.
        """
        op = plans.replace_messages(
            self._now_us(), self.limits, conversation_id, items,
            expected_last_seq=expected_last_seq, tenant=tenant,
        )  # fmt: skip
        return outcomes.finish_replace(self._backend.execute(op), op)

    def message_by_key(
        self, conversation_id: str, key: str, *, tenant: str | None = None
    ) -> Message | None:
        """Return the kept message stored with idempotency key ``key``, or None.

        On Redis the newest ``idempotency_keys`` keys of a conversation (a URL option, default
        10,000) are remembered, as for replays.

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: a bad key.
        """
        op = plans.message_by_key(self._now_us(), conversation_id, key, tenant)
        return outcomes.finish_key(self._backend.execute(op), op)

    def set_delivery(
        self,
        conversation_id: str,
        seq: int,
        state: str,
        *,
        provider_id: str | None = None,
        error: str | None = None,
        attempted: bool = False,
        tenant: str | None = None,
    ) -> Message | None:
        """Record how far an outgoing message got: ``Message.delivery``, never moved down.

        States rank ``queued`` < ``queued`` with ``attempted`` < ``sent`` < ``delivered`` <
        ``read``; ``failed`` is terminal. A change that does not rank higher (a duplicate, a
        late status) changes nothing and returns the message as it is. Atomic on every backend;
        an applied change appends a ``message.delivery`` event.

        Args:
            conversation_id: the conversation.
            seq: the message.
            state: ``queued``, ``sent``, ``delivered``, ``read`` or ``failed``.
            provider_id: the channel's id of the sent message (kept once known).
            error: why it failed (with ``failed``).
            attempted: a send was attempted (with ``queued``: its outcome is not known yet).
            tenant: when given, a conversation of another tenant is not found.

        Returns:
            The message with its delivery now, or None when no kept message has that seq.

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: an unknown state, a bad seq, provider id or error.
        """
        op = plans.set_delivery(
            self._now_us(), self.limits, conversation_id, seq, state, provider_id=provider_id,
            error=error, attempted=attempted, tenant=tenant,
        )  # fmt: skip
        return outcomes.finish_delivery(self._backend.execute(op), op)

    def _append(
        self,
        conversation_id: str,
        role: str,
        content: str,
        metadata: dict[str, Any] | None,
        idempotency_key: str | None,
        tenant: str | None,
        fence: int | None = None,
        payload: Any = None,
    ) -> Message:
        op = plans.append(
            self._now_us(), self.limits, conversation_id, role, content, metadata=metadata,
            idempotency_key=idempotency_key, tenant=tenant, fence=fence, payload=payload,
        )  # fmt: skip
        return outcomes.finish_append(self._backend.execute(op), op)

    def _append_read(
        self,
        conversation_id: str,
        role: str,
        content: str,
        idempotency_key: str | None,
        tenant: str | None,
        fence: int,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[Message, Conversation | None]:
        """A turn's fenced append, with the conversation as of that append (ops.AppendReadOp).

        The conversation is read with the append, atomically, under the lease; None where the
        backend cannot tell it without another read (the caller then reads it with ``get``,
        once it holds the message: a failure of that read must not hide the stored message).
        """
        op = AppendReadOp(
            plans.append(
                self._now_us(), self.limits, conversation_id, role, content,
                metadata=metadata, idempotency_key=idempotency_key, tenant=tenant, fence=fence,
            )
        )  # fmt: skip
        return outcomes.finish_append_read(self._backend.execute(op), op)

    def messages(
        self,
        conversation_id: str,
        *,
        last: int | None = None,
        after: int | None = None,
        limit: int | None = None,
        tenant: str | None = None,
        before: int | None = None,
    ) -> list[Message]:
        """Return messages oldest first.

        Args:
            conversation_id: the conversation.
            last: the newest ``last`` (any number), less any at the start that would split a
                tool call from its result (a window never starts with an orphaned result).
            after: with ``limit``, the first ``limit`` with seq above ``after``.
            limit: page size, at most ``Limits.max_page`` (default: that).
            tenant: when given, a conversation of another tenant is not found.
            before: with ``limit``, the newest ``limit`` with seq below ``before`` (pages
                backwards).

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: bad bounds (``after`` above 2**63 - 1 included), or ``last``
                with ``after``/``before``/``limit``, or ``after`` with ``before``.
        """
        op = plans.messages(
            self._now_us(), self.limits, conversation_id, last=last, after=after, limit=limit,
            tenant=tenant, before=before,
        )  # fmt: skip
        return outcomes.finish_messages(self._backend.execute(op), op)

    def context(
        self,
        conversation_id: str,
        *,
        tenant: str | None = None,
        format: str = "plain",
        token_budget: int | None = None,
        count_tokens: Callable[[MessageLike], int] | None = None,
    ) -> Any:
        """Return the conversation's window, oldest first, in ``format``.

        The window is the last ``Retention.window`` messages, less any at its start that would
        split a tool call from its result; ``token_budget`` then drops whole turns from the
        oldest (the newest turn is always kept).

        Args:
            conversation_id: the conversation.
            tenant: when given, a conversation of another tenant is not found.
            format: ``"plain"`` (``[{"role", "content"}]``), ``"anthropic"``
                (``{"system", "messages"}``), ``"openai"`` (Chat Completions messages) or
                ``"openai-responses"`` (Responses input items); see ``threadkeep.formats``.
            token_budget: the most tokens the window should hold.
            count_tokens: a message's token count, given its ``role``, ``content`` and
                ``payload`` (default: 4 characters a token).

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: an unknown format or a bad budget.
        """
        op = plans.window(
            self._now_us(), conversation_id, tenant, format=format, token_budget=token_budget
        )
        window = outcomes.finish_context(self._backend.execute(op), op, token_budget, count_tokens)
        return formats.render(window, format)

    def save_state(
        self,
        conversation_id: str,
        state: object,
        *,
        expected_version: int | None = None,
        tenant: str | None = None,
    ) -> int:
        """Save a new state version (a pydantic model, dataclass or JSON value).

        A closed conversation's state can still be saved.

        Args:
            conversation_id: the conversation.
            state: the state document (no NaN or infinity).
            expected_version: when given, save only if it is the current version (0: none yet).
            tenant: when given, a conversation of another tenant is not found.

        Returns:
            The new version.

        Raises:
            StateConflict: ``expected_version`` is stale; the stored state is untouched.
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: the state cannot be stored as JSON or is too large.
        """
        op = plans.save_state(
            self._now_us(), self.limits, conversation_id, state,
            expected_version=expected_version, tenant=tenant,
        )  # fmt: skip
        return outcomes.finish_save_state(self._backend.execute(op), op)

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
        op = plans.load_state(self._now_us(), conversation_id, version, tenant)
        return outcomes.finish_load_state(self._backend.execute(op), op, model)

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
            StateConflict: ``expected_version`` is stale (checked first).
            InvalidInput: ``to_version`` is not kept.
            ConversationNotFound: absent, expired or another tenant's.
        """
        op = plans.rollback_state(
            self._now_us(), self.limits, conversation_id, to_version,
            expected_version=expected_version, tenant=tenant,
        )  # fmt: skip
        return outcomes.finish_save_state(self._backend.execute(op), op)

    def set_status(
        self, conversation_id: str, status: str, *, tenant: str | None = None
    ) -> Conversation:
        """Move the conversation to ``status`` (setting the current one changes nothing).

        Raises:
            IllegalTransition: the lifecycle forbids it (the error lists what is allowed).
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: an unknown status.
        """
        op = plans.status(self._now_us(), self.limits, conversation_id, status, tenant)
        return outcomes.finish_update(self._backend.execute(op), op)

    def set_stage(
        self, conversation_id: str, stage: str | None, *, tenant: str | None = None
    ) -> Conversation:
        """Set the conversation's domain stage (``None`` clears it; the same one: no change).

        Raises:
            ConversationClosed: the conversation is closed.
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: a bad stage name.
        """
        op = plans.stage(self._now_us(), self.limits, conversation_id, stage, tenant)
        return outcomes.finish_update(self._backend.execute(op), op)

    def assign(
        self, conversation_id: str, agent_id: str | None, *, tenant: str | None = None
    ) -> Conversation:
        """Set the agent who has the conversation (a take-over; ``None``: nobody).

        Raises:
            ConversationClosed: the conversation is closed.
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: a bad agent id.
        """
        op = plans.agent(self._now_us(), self.limits, conversation_id, agent_id, tenant)
        return outcomes.finish_update(self._backend.execute(op), op)

    def set_retention(
        self, conversation_id: str, retention: Retention, *, tenant: str | None = None
    ) -> Conversation:
        """Give the conversation its own retention from now on.

        Its expiry and idle time are counted from its last activity under the new retention
        (changing it is not activity: a ttl shorter than the time since then expires it);
        ``window`` applies to the next ``context()``, ``max_messages`` from the next append.

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: ``retention`` is not a Retention.
        """
        op = plans.retain(self._now_us(), self.limits, conversation_id, retention, tenant)
        return outcomes.finish_retain(self._backend.execute(op), op)

    def close_conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> Conversation:
        """Close the conversation: it takes no more messages (closing twice is a no-op).

        Raises:
            ConversationNotFound: absent, expired or another tenant's.
        """
        return self.set_status(conversation_id, Status.CLOSED, tenant=tenant)

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
            lease: how long the lease lasts if this worker dies without releasing it (at most
                365 days).
            timeout: how long to wait for a busy lease (None: forever; 0: not at all).
            tenant: when given, a conversation of another tenant is not found.

        Yields:
            A Turn whose ``append`` is fenced by the lease token.

        Raises:
            TurnInProgress: another worker holds the lease past ``timeout``.
            ConversationNotFound: absent, expired or another tenant's.
            InvalidInput: a bad lease or timeout.
            BackendUnavailable: the store stayed unreachable while the lease was being released
                (tried again for up to 5 s, never longer than the lease): the turn's writes
                stand, and the lease lapses by itself. An error of the ``with`` body wins.
        """
        flow = flows.acquire_lease(
            conversation_id, tenant, lease, timeout, self._now_us, time.monotonic
        )
        try:
            step = next(flow)
            while True:
                if isinstance(step, flows.Sleep):
                    time.sleep(step.seconds)
                    step = flow.send(None)
                else:
                    step = flow.send(self._backend.execute(step))
        except StopIteration as done:
            token: int = done.value
        try:
            yield Turn(self, conversation_id, token, tenant)
        finally:
            unreleased = self._release(conversation_id, token, lease)
        if unreleased is not None:  # the turn's work is done; its lease lapses by itself
            raise unreleased

    def _release(
        self, conversation_id: str, token: int, lease: float | timedelta
    ) -> BackendUnavailable | None:
        """Release a turn lease (flows.release_lease); return the error if the store stayed out."""
        flow = flows.release_lease(conversation_id, token, lease, time.monotonic)
        step = next(flow)
        try:
            while True:
                failed = None
                if isinstance(step, flows.Sleep):
                    time.sleep(step.seconds)
                else:
                    try:
                        self._backend.execute(step)
                    except BackendUnavailable as exc:
                        failed = exc
                step = flow.send(failed)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

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
        """Return a page of live conversations, newest activity first (then greatest id).

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
        op = plans.list_conversations(
            self._now_us(), self.limits, tenant=tenant, status=status, stage=stage,
            agent_id=agent_id, contact_id=contact_id, limit=limit, cursor=cursor,
        )  # fmt: skip
        return outcomes.finish_list(self._backend.execute(op), op)

    def counts(self, *, tenant: str = "default") -> Counts:
        """Return how many live conversations the tenant has, by status and by stage.

        Raises:
            InvalidInput: a bad tenant name.
        """
        return outcomes.finish_counts(self._backend.execute(plans.counts(self._now_us(), tenant)))

    def delete(self, conversation_id: str, *, tenant: str | None = None) -> None:
        """Erase a conversation: messages, state, leases and its events.

        An expired conversation is erased too, but reported as not found.

        Raises:
            ConversationNotFound: there was no live conversation with that id.
        """
        op = plans.delete(self._now_us(), self.limits, conversation_id, tenant)
        outcomes.finish_delete(self._backend.execute(op), op)

    def delete_contact(self, contact_id: str, *, tenant: str = "default") -> ErasureReceipt:
        """Erase every conversation (expired ones too) and remembered fact of a contact.

        Returns:
            The receipt: the erased conversations' ids, how many of them were live, how many
            messages, state versions, facts and events went, when, and from which store;
            counted in the transaction that erased them.

        Raises:
            InvalidInput: a bad contact or tenant name.
        """
        op = plans.delete_contact(self._now_us(), self.limits, contact_id, tenant)
        return outcomes.finish_delete_contact(self._backend.execute(op), op, self.url)

    def sweep(self, *, dry_run: bool = False) -> SweepReport:
        """Mark conversations idle after ``idle_after`` and purge expired ones.

        Args:
            dry_run: only count what would change.

        Returns:
            What was (or would be) changed.
        """
        op = plans.sweep(self._now_us(), self.limits, dry_run)
        return outcomes.finish_sweep(self._backend.execute(op), op)

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
            InvalidInput: a malformed cursor (or one past 2**63 - 1) or timeout.
        """
        self._check_open()
        walk = flows.EventsCursor(tenant, after, timeout, time.monotonic)
        while (op := walk.next_op()) is not None:
            yield from walk.take(self._backend.execute(op))

    def remember(
        self,
        contact_id: str,
        key: str,
        value: Any,
        *,
        tenant: str = "default",
        tier: Tier = "medium",
        source: Mapping[str, Any] | None = None,
    ) -> Fact:
        """Remember a fact about a contact, beyond one conversation.

        A different value than the live one supersedes it; the old value stays in the fact's
        ``history`` for its own tier's time.

        Args:
            contact_id: the contact.
            key: the fact's name.
            value: any JSON value.
            tenant: the contact's tenant.
            tier: ``critical`` (365 days), ``high`` (30), ``medium`` (7) or ``low`` (24 h).
            source: who set it, a JSON object (``{"kind": "conversation", "conversation_id":
                …, "message_seq": 3}``, ``{"kind": "crm", "event": "ContactUpdate", …}``).

        Raises:
            InvalidInput: a bad name, tier, value or source.
        """
        op = plans.remember(
            self._now_us(), self.limits, contact_id, key, value, tenant, tier, source
        )
        return outcomes.finish_remember(self._backend.execute(op))

    def recall(
        self, contact_id: str, key: str | None = None, *, tenant: str = "default"
    ) -> builtins.list[Fact]:
        """Return the contact's live facts (all, or the one named ``key``), ordered by key.

        Each fact carries its ``source`` and the ``history`` of the values it superseded that
        are still within their tier's time.

        Raises:
            InvalidInput: a bad name.
        """
        op = plans.recall(self._now_us(), contact_id, key, tenant)
        return outcomes.finish_recall(self._backend.execute(op), op.now_us)

    def reencrypt(
        self,
        *,
        tenant: str = "default",
        batch: int = 100,
        progress: Callable[[Reencrypted], None] | None = None,
    ) -> Reencrypted:
        """Rewrite the tenant's stored values under the current key (a key rotation).

        Walks the live conversations (``batch`` at a time): message content and payloads
        (those kept only for idempotent replays too), kept state versions; then the facts of
        every contact of the tenant. Plaintext written before encryption was configured is
        sealed too. Each value is rewritten in place only while
        it still holds what was read, so writes going on meanwhile are never lost; nothing
        else changes (no events, activity, expiry or seqs). Run it again until it reports
        nothing rewritten; then the old key may be dropped.

        Args:
            tenant: whose values.
            batch: conversations per page and messages per read.
            progress: called after each conversation with the counts so far.

        Returns:
            The final counts (``done`` True).

        Raises:
            InvalidInput: the store has no encryption, or a bad tenant or batch.
            EncryptionError: a stored value's key was not given, or it was altered.
        """
        flow = self._reencrypt(tenant, batch)
        try:
            step = next(flow)
            while True:
                if isinstance(step, Reencrypted):
                    if progress is not None:
                        progress(step)
                    step = flow.send(None)
                else:
                    step = flow.send(self._raw.execute(step))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class AsyncStore(_StoreBase):
    """The asyncio twin of Store: the same methods, as coroutines (see Store for each).

    ``threadkeep.open_async(url)`` returns one that connects when awaited, entered with
    ``async with``, or first used.
    """

    def __init__(
        self,
        backend: AsyncBackend | None = None,
        *,
        url: str,
        clock: Clock | None = None,
        retention: Retention | None = None,
        limits: Limits | None = None,
        connect: Callable[[], Awaitable[AsyncBackend]] | None = None,
        encryption: Encryption | None = None,
    ) -> None:
        super().__init__(
            url=url, clock=clock, retention=retention, limits=limits, encryption=encryption
        )
        if (backend is None) == (connect is None):
            raise TypeError("AsyncStore needs a backend or connect=, not both")
        self._raw = backend
        self._backend = None if backend is None else self._sealed(backend)
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
            self._check_open()
            if self._backend is None:
                assert self._connect is not None
                self._raw = await self._connect()
                self._backend = self._sealed(self._raw)
            return self._backend

    def _sealed(self, backend: AsyncBackend) -> AsyncBackend:
        return backend if self._sealer is None else AsyncSealedBackend(backend, self._sealer)

    async def _execute(self, op: Op[R]) -> Result[R]:
        return await (self._backend or await self._open()).execute(op)

    def __await__(self) -> Generator[Any, None, AsyncStore]:
        """``await open_async(url)``: connect now, so an unreachable store raises here."""
        return self.__aenter__().__await__()

    async def __aenter__(self) -> AsyncStore:
        if self._backend is None:
            await self._open()
        return self

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
        self._check_open()
        await (self._backend or await self._open()).ping()

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
        op = self._start_op(
            False, contact_id, tenant, agent_id, channel, stage, metadata, retention
        )
        return outcomes.finish_create(await self._execute(op))

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
        op = self._start_op(True, contact_id, tenant, agent_id, channel, stage, metadata, retention)
        return outcomes.finish_create(await self._execute(op))

    async def get(self, conversation_id: str, *, tenant: str | None = None) -> Conversation:
        """See Store.get."""
        op = plans.get(self._now_us(), conversation_id, tenant)
        return outcomes.finish_get(await self._execute(op), op.conversation_id)

    async def find_open(self, contact_id: str, *, tenant: str = "default") -> Conversation | None:
        """See Store.find_open."""
        op = plans.find_open(self._now_us(), contact_id, tenant)
        return outcomes.finish_find_open(await self._execute(op))

    async def append(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        tenant: str | None = None,
        payload: Any = None,
    ) -> Message:
        """See Store.append."""
        return await self._append(
            conversation_id, role, content, metadata, idempotency_key, tenant, payload=payload
        )

    async def append_many(
        self,
        conversation_id: str,
        items: Iterable[tuple[Any, ...]],
        *,
        tenant: str | None = None,
    ) -> builtins.list[Message]:
        """See Store.append_many."""
        return await self._append_many(conversation_id, items, tenant)

    async def _append_many(
        self,
        conversation_id: str,
        items: Iterable[tuple[Any, ...]],
        tenant: str | None,
        fence: int | None = None,
    ) -> builtins.list[Message]:
        op = plans.append_many(
            self._now_us(), self.limits, conversation_id, items, tenant=tenant, fence=fence
        )
        if not op.items:
            return []
        return outcomes.finish_append_many(await self._execute(op), op)

    async def pop_last(self, conversation_id: str, *, tenant: str | None = None) -> Message | None:
        """See Store.pop_last."""
        op = plans.pop_last(self._now_us(), self.limits, conversation_id, tenant)
        return outcomes.finish_pop(await self._execute(op), op)

    async def clear_messages(self, conversation_id: str, *, tenant: str | None = None) -> int:
        """See Store.clear_messages."""
        op = plans.clear_messages(self._now_us(), self.limits, conversation_id, tenant)
        return outcomes.finish_clear(await self._execute(op), op)

    async def replace_messages(
        self,
        conversation_id: str,
        items: Iterable[tuple[Any, ...]],
        *,
        expected_last_seq: int | None = None,
        tenant: str | None = None,
    ) -> builtins.list[Message]:
        """See Store.replace_messages."""
        op = plans.replace_messages(
            self._now_us(), self.limits, conversation_id, items,
            expected_last_seq=expected_last_seq, tenant=tenant,
        )  # fmt: skip
        return outcomes.finish_replace(await self._execute(op), op)

    async def message_by_key(
        self, conversation_id: str, key: str, *, tenant: str | None = None
    ) -> Message | None:
        """See Store.message_by_key."""
        op = plans.message_by_key(self._now_us(), conversation_id, key, tenant)
        return outcomes.finish_key(await self._execute(op), op)

    async def set_delivery(
        self,
        conversation_id: str,
        seq: int,
        state: str,
        *,
        provider_id: str | None = None,
        error: str | None = None,
        attempted: bool = False,
        tenant: str | None = None,
    ) -> Message | None:
        """See Store.set_delivery."""
        op = plans.set_delivery(
            self._now_us(), self.limits, conversation_id, seq, state, provider_id=provider_id,
            error=error, attempted=attempted, tenant=tenant,
        )  # fmt: skip
        return outcomes.finish_delivery(await self._execute(op), op)

    async def _append(
        self,
        conversation_id: str,
        role: str,
        content: str,
        metadata: dict[str, Any] | None,
        idempotency_key: str | None,
        tenant: str | None,
        fence: int | None = None,
        payload: Any = None,
    ) -> Message:
        op = plans.append(
            self._now_us(), self.limits, conversation_id, role, content, metadata=metadata,
            idempotency_key=idempotency_key, tenant=tenant, fence=fence, payload=payload,
        )  # fmt: skip
        return outcomes.finish_append(await self._execute(op), op)

    async def _append_read(
        self,
        conversation_id: str,
        role: str,
        content: str,
        idempotency_key: str | None,
        tenant: str | None,
        fence: int,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[Message, Conversation | None]:
        """See Store._append_read."""
        op = AppendReadOp(
            plans.append(
                self._now_us(), self.limits, conversation_id, role, content,
                metadata=metadata, idempotency_key=idempotency_key, tenant=tenant, fence=fence,
            )
        )  # fmt: skip
        return outcomes.finish_append_read(await self._execute(op), op)

    async def messages(
        self,
        conversation_id: str,
        *,
        last: int | None = None,
        after: int | None = None,
        limit: int | None = None,
        tenant: str | None = None,
        before: int | None = None,
    ) -> list[Message]:
        """See Store.messages."""
        op = plans.messages(
            self._now_us(), self.limits, conversation_id, last=last, after=after, limit=limit,
            tenant=tenant, before=before,
        )  # fmt: skip
        return outcomes.finish_messages(await self._execute(op), op)

    async def context(
        self,
        conversation_id: str,
        *,
        tenant: str | None = None,
        format: str = "plain",
        token_budget: int | None = None,
        count_tokens: Callable[[MessageLike], int] | None = None,
    ) -> Any:
        """See Store.context."""
        op = plans.window(
            self._now_us(), conversation_id, tenant, format=format, token_budget=token_budget
        )
        window = outcomes.finish_context(await self._execute(op), op, token_budget, count_tokens)
        return formats.render(window, format)

    async def save_state(
        self,
        conversation_id: str,
        state: object,
        *,
        expected_version: int | None = None,
        tenant: str | None = None,
    ) -> int:
        """See Store.save_state."""
        op = plans.save_state(
            self._now_us(), self.limits, conversation_id, state,
            expected_version=expected_version, tenant=tenant,
        )  # fmt: skip
        return outcomes.finish_save_state(await self._execute(op), op)

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
        op = plans.load_state(self._now_us(), conversation_id, version, tenant)
        return outcomes.finish_load_state(await self._execute(op), op, model)

    async def rollback_state(
        self,
        conversation_id: str,
        to_version: int,
        *,
        expected_version: int | None = None,
        tenant: str | None = None,
    ) -> int:
        """See Store.rollback_state."""
        op = plans.rollback_state(
            self._now_us(), self.limits, conversation_id, to_version,
            expected_version=expected_version, tenant=tenant,
        )  # fmt: skip
        return outcomes.finish_save_state(await self._execute(op), op)

    async def set_status(
        self, conversation_id: str, status: str, *, tenant: str | None = None
    ) -> Conversation:
        """See Store.set_status."""
        op = plans.status(self._now_us(), self.limits, conversation_id, status, tenant)
        return outcomes.finish_update(await self._execute(op), op)

    async def set_stage(
        self, conversation_id: str, stage: str | None, *, tenant: str | None = None
    ) -> Conversation:
        """See Store.set_stage."""
        op = plans.stage(self._now_us(), self.limits, conversation_id, stage, tenant)
        return outcomes.finish_update(await self._execute(op), op)

    async def assign(
        self, conversation_id: str, agent_id: str | None, *, tenant: str | None = None
    ) -> Conversation:
        """See Store.assign."""
        op = plans.agent(self._now_us(), self.limits, conversation_id, agent_id, tenant)
        return outcomes.finish_update(await self._execute(op), op)

    async def set_retention(
        self, conversation_id: str, retention: Retention, *, tenant: str | None = None
    ) -> Conversation:
        """See Store.set_retention."""
        op = plans.retain(self._now_us(), self.limits, conversation_id, retention, tenant)
        return outcomes.finish_retain(await self._execute(op), op)

    async def close_conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> Conversation:
        """See Store.close_conversation."""
        return await self.set_status(conversation_id, Status.CLOSED, tenant=tenant)

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
        flow = flows.acquire_lease(
            conversation_id, tenant, lease, timeout, self._now_us, time.monotonic
        )
        try:
            step = next(flow)
            while True:
                if isinstance(step, flows.Sleep):
                    await asyncio.sleep(step.seconds)
                    step = flow.send(None)
                else:
                    step = flow.send(await self._execute(step))
        except StopIteration as done:
            token: int = done.value
        try:
            yield AsyncTurn(self, conversation_id, token, tenant)
        finally:
            unreleased = await self._release(conversation_id, token, lease)
        if unreleased is not None:  # the turn's work is done; its lease lapses by itself
            raise unreleased

    async def _release(
        self, conversation_id: str, token: int, lease: float | timedelta
    ) -> BackendUnavailable | None:
        """See Store._release."""
        flow = flows.release_lease(conversation_id, token, lease, time.monotonic)
        step = next(flow)
        try:
            while True:
                failed = None
                if isinstance(step, flows.Sleep):
                    await asyncio.sleep(step.seconds)
                else:
                    try:
                        await self._execute(step)
                    except BackendUnavailable as exc:
                        failed = exc
                step = flow.send(failed)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

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
        op = plans.list_conversations(
            self._now_us(), self.limits, tenant=tenant, status=status, stage=stage,
            agent_id=agent_id, contact_id=contact_id, limit=limit, cursor=cursor,
        )  # fmt: skip
        return outcomes.finish_list(await self._execute(op), op)

    async def counts(self, *, tenant: str = "default") -> Counts:
        """See Store.counts."""
        return outcomes.finish_counts(await self._execute(plans.counts(self._now_us(), tenant)))

    async def delete(self, conversation_id: str, *, tenant: str | None = None) -> None:
        """See Store.delete."""
        op = plans.delete(self._now_us(), self.limits, conversation_id, tenant)
        outcomes.finish_delete(await self._execute(op), op)

    async def delete_contact(self, contact_id: str, *, tenant: str = "default") -> ErasureReceipt:
        """See Store.delete_contact."""
        op = plans.delete_contact(self._now_us(), self.limits, contact_id, tenant)
        return outcomes.finish_delete_contact(await self._execute(op), op, self.url)

    async def sweep(self, *, dry_run: bool = False) -> SweepReport:
        """See Store.sweep."""
        op = plans.sweep(self._now_us(), self.limits, dry_run)
        return outcomes.finish_sweep(await self._execute(op), op)

    async def events(
        self,
        *,
        tenant: str | None = None,
        after: str | None = None,
        timeout: float | None = 0.0,  # noqa: ASYNC109
    ) -> AsyncIterator[Event]:
        """See Store.events (``async for``)."""
        self._check_open()
        walk = flows.EventsCursor(tenant, after, timeout, time.monotonic)
        while (op := walk.next_op()) is not None:
            for event in walk.take(await self._execute(op)):
                yield event

    async def _event_reads(
        self,
        *,
        tenant: str | None = None,
        after: str | None = None,
        timeout: float | None = 0.0,  # noqa: ASYNC109
    ) -> AsyncGenerator[tuple[builtins.list[Event], bool], None]:
        """``events()``, one list per read of the log, and whether that read was a full batch.

        A list is empty at the end of a wait; after a full batch more may follow at once.
        The service's reader of the log (``service.followers``) paces its reads by them: the
        next read starts only when the consumer asks for the next list.
        """
        self._check_open()
        walk = flows.EventsCursor(tenant, after, timeout, time.monotonic)
        while (op := walk.next_op()) is not None:
            events = walk.take(await self._execute(op))
            yield events, len(events) >= plans.EVENT_BATCH

    async def remember(
        self,
        contact_id: str,
        key: str,
        value: Any,
        *,
        tenant: str = "default",
        tier: Tier = "medium",
        source: Mapping[str, Any] | None = None,
    ) -> Fact:
        """See Store.remember."""
        op = plans.remember(
            self._now_us(), self.limits, contact_id, key, value, tenant, tier, source
        )
        return outcomes.finish_remember(await self._execute(op))

    async def recall(
        self, contact_id: str, key: str | None = None, *, tenant: str = "default"
    ) -> builtins.list[Fact]:
        """See Store.recall."""
        op = plans.recall(self._now_us(), contact_id, key, tenant)
        return outcomes.finish_recall(await self._execute(op), op.now_us)

    async def reencrypt(
        self,
        *,
        tenant: str = "default",
        batch: int = 100,
        progress: Callable[[Reencrypted], None] | None = None,
    ) -> Reencrypted:
        """See Store.reencrypt."""
        flow = self._reencrypt(tenant, batch)
        await self._open()
        assert self._raw is not None
        try:
            step = next(flow)
            while True:
                if isinstance(step, Reencrypted):
                    if progress is not None:
                        progress(step)
                    step = flow.send(None)
                else:
                    step = flow.send(await self._raw.execute(step))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
