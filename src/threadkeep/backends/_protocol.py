"""The backend interface: structural Protocols, so a third-party backend needs no import.

Every method takes one op from ``threadkeep._rules.ops`` and returns rows or an outcome.
A backend is atomic per call, never reads the clock and never decides a rule.
"""

from __future__ import annotations

import builtins
from typing import Protocol

from threadkeep._rules.ops import (
    AppendOp,
    AppendResult,
    ConvRow,
    CountsOp,
    CountsRow,
    DeleteContactOp,
    DeleteOp,
    EventRow,
    EventsOp,
    FactRow,
    FindOpenOp,
    GetOp,
    LeaseOp,
    LeaseResult,
    ListOp,
    LoadStateOp,
    MsgRow,
    Outcome,
    ReadOp,
    RecallOp,
    ReleaseOp,
    RememberOp,
    SaveStateOp,
    StartOp,
    StateResult,
    StateRow,
    SweepOp,
    SweepRow,
    UpdateOp,
    UpdateResult,
)

__all__ = ["AsyncBackend", "Backend"]


class Backend(Protocol):
    """A synchronous store backend."""

    def ping(self) -> None:
        """Raise BackendUnavailable unless the store answers."""

    def close(self) -> None:
        """Release connections; the backend is not used afterwards."""

    def create(self, op: StartOp) -> tuple[Outcome, ConvRow]:
        """Insert ``op.row`` (CREATED), or with ``op.resume`` return the open one (EXISTING)."""
        ...

    def get(self, op: GetOp) -> ConvRow | None:
        """Return the live conversation, or None."""

    def find_open(self, op: FindOpenOp) -> ConvRow | None:
        """Return the contact's open live conversation with the newest activity, or None."""

    def append(self, op: AppendOp) -> AppendResult:
        """Append one message atomically (see AppendOp)."""
        ...

    def read_messages(self, op: ReadOp) -> list[MsgRow] | None:
        """Return messages oldest first, or None when the conversation is not live."""

    def read_context(self, op: ReadOp) -> list[tuple[str, str]] | None:
        """Return the (role, content) pairs of the conversation's window (``op.window``)."""

    def update(self, op: UpdateOp) -> UpdateResult:
        """Change status or stage (see UpdateOp)."""
        ...

    def save_state(self, op: SaveStateOp) -> StateResult:
        """Save a state version, compare-and-set (see SaveStateOp)."""
        ...

    def load_state(self, op: LoadStateOp) -> tuple[Outcome, StateRow | None]:
        """Return (OK, row or None when nothing saved), (NO_VERSION, None) or (NOT_FOUND, None)."""
        ...

    def list(self, op: ListOp) -> builtins.list[ConvRow]:
        """Return up to ``op.limit + 1`` live conversations after the cursor."""
        ...

    def counts(self, op: CountsOp) -> CountsRow:
        """Count live conversations by status and stage."""
        ...

    def delete(self, op: DeleteOp) -> bool:
        """Erase one conversation; return whether it existed."""
        ...

    def delete_contact(self, op: DeleteContactOp) -> int:
        """Erase a contact's conversations and facts; return how many conversations."""
        ...

    def sweep(self, op: SweepOp) -> SweepRow:
        """Mark idle and purge expired data in bounded batches."""
        ...

    def read_events(self, op: EventsOp, wait: float) -> builtins.list[EventRow] | None:
        """Return events after the cursor, waiting up to ``wait`` s; None if it fell out."""

    def acquire_lease(self, op: LeaseOp) -> LeaseResult:
        """Take a conversation's turn lease if it is free or ran out."""
        ...

    def release_lease(self, op: ReleaseOp) -> None:
        """Give back a turn lease if its token is still current."""

    def remember(self, op: RememberOp) -> FactRow:
        """Store or replace a fact."""
        ...

    def recall(self, op: RecallOp) -> builtins.list[FactRow]:
        """Return live facts ordered by key."""
        ...


class AsyncBackend(Protocol):
    """An asynchronous store backend: the same methods as Backend, as coroutines."""

    async def ping(self) -> None:
        """See Backend.ping."""

    async def close(self) -> None:
        """See Backend.close."""

    async def create(self, op: StartOp) -> tuple[Outcome, ConvRow]:
        """See Backend.create."""
        ...

    async def get(self, op: GetOp) -> ConvRow | None:
        """See Backend.get."""

    async def find_open(self, op: FindOpenOp) -> ConvRow | None:
        """See Backend.find_open."""

    async def append(self, op: AppendOp) -> AppendResult:
        """See Backend.append."""
        ...

    async def read_messages(self, op: ReadOp) -> builtins.list[MsgRow] | None:
        """See Backend.read_messages."""

    async def read_context(self, op: ReadOp) -> list[tuple[str, str]] | None:
        """See Backend.read_context."""

    async def update(self, op: UpdateOp) -> UpdateResult:
        """See Backend.update."""
        ...

    async def save_state(self, op: SaveStateOp) -> StateResult:
        """See Backend.save_state."""
        ...

    async def load_state(self, op: LoadStateOp) -> tuple[Outcome, StateRow | None]:
        """See Backend.load_state."""
        ...

    async def list(self, op: ListOp) -> builtins.list[ConvRow]:
        """See Backend.list."""
        ...

    async def counts(self, op: CountsOp) -> CountsRow:
        """See Backend.counts."""
        ...

    async def delete(self, op: DeleteOp) -> bool:
        """See Backend.delete."""
        ...

    async def delete_contact(self, op: DeleteContactOp) -> int:
        """See Backend.delete_contact."""
        ...

    async def sweep(self, op: SweepOp) -> SweepRow:
        """See Backend.sweep."""
        ...

    async def read_events(self, op: EventsOp, wait: float) -> builtins.list[EventRow] | None:
        """See Backend.read_events."""

    async def acquire_lease(self, op: LeaseOp) -> LeaseResult:
        """See Backend.acquire_lease."""
        ...

    async def release_lease(self, op: ReleaseOp) -> None:
        """See Backend.release_lease."""

    async def remember(self, op: RememberOp) -> FactRow:
        """See Backend.remember."""
        ...

    async def recall(self, op: RecallOp) -> builtins.list[FactRow]:
        """See Backend.recall."""
        ...
