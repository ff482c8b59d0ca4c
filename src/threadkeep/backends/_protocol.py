"""The backend interface: structural Protocols, so a third-party backend needs no import.

Every method takes one op from ``threadkeep._rules.ops`` and returns rows or an outcome.
A backend is atomic per call, never reads the clock and never decides a rule.
"""

from __future__ import annotations

import builtins
from typing import Protocol

from threadkeep._rules import ops

__all__ = ["AsyncBackend", "Backend"]


class Backend(Protocol):
    """A synchronous store backend."""

    def ping(self) -> None:
        """Raise BackendUnavailable unless the store answers."""

    def close(self) -> None:
        """Release connections; the backend is not used afterwards."""

    def create(self, op: ops.StartOp) -> tuple[ops.Outcome, ops.ConvRow]:
        """Insert ``op.row`` (CREATED), or with ``op.resume`` return the open one (EXISTING)."""
        ...

    def get(self, op: ops.GetOp) -> ops.ConvRow | None:
        """Return the live conversation, or None."""

    def find_open(self, op: ops.FindOpenOp) -> ops.ConvRow | None:
        """Return the contact's open live conversation with the newest activity, or None."""

    def append(self, op: ops.AppendOp) -> ops.AppendResult:
        """Append one message atomically (see ops.AppendOp)."""
        ...

    def read_messages(self, op: ops.ReadOp) -> list[ops.MsgRow] | None:
        """Return messages oldest first, or None when the conversation is not live."""

    def read_context(self, op: ops.ReadOp) -> list[tuple[str, str]] | None:
        """Return the (role, content) pairs of the conversation's window (``op.window``)."""

    def update(self, op: ops.UpdateOp) -> ops.UpdateResult:
        """Change status or stage (see ops.UpdateOp)."""
        ...

    def save_state(self, op: ops.SaveStateOp) -> ops.StateResult:
        """Save a state version, compare-and-set (see ops.SaveStateOp)."""
        ...

    def load_state(self, op: ops.LoadStateOp) -> tuple[ops.Outcome, ops.StateRow | None]:
        """Return (OK, row or None when nothing saved), (NO_VERSION, None) or (NOT_FOUND, None)."""
        ...

    def list(self, op: ops.ListOp) -> builtins.list[ops.ConvRow]:
        """Return up to ``op.limit + 1`` live conversations after the cursor."""
        ...

    def counts(self, op: ops.CountsOp) -> ops.CountsRow:
        """Count live conversations by status and stage."""
        ...

    def delete(self, op: ops.DeleteOp) -> bool:
        """Erase one conversation; return whether it existed."""
        ...

    def delete_contact(self, op: ops.DeleteContactOp) -> int:
        """Erase a contact's conversations and facts; return how many conversations."""
        ...

    def sweep(self, op: ops.SweepOp) -> ops.SweepRow:
        """Mark idle and purge expired data in bounded batches."""
        ...

    def read_events(self, op: ops.EventsOp, wait: float) -> builtins.list[ops.EventRow] | None:
        """Return events after the cursor, waiting up to ``wait`` s; None if it fell out."""

    def acquire_lease(self, op: ops.LeaseOp) -> ops.LeaseResult:
        """Take a conversation's turn lease if it is free or ran out."""
        ...

    def release_lease(self, op: ops.ReleaseOp) -> None:
        """Give back a turn lease if its token is still current."""

    def remember(self, op: ops.RememberOp) -> ops.FactRow:
        """Store or replace a fact."""
        ...

    def recall(self, op: ops.RecallOp) -> builtins.list[ops.FactRow]:
        """Return live facts ordered by key."""
        ...


class AsyncBackend(Protocol):
    """An asynchronous store backend: the same methods as Backend, as coroutines."""

    async def ping(self) -> None:
        """See Backend.ping."""

    async def close(self) -> None:
        """See Backend.close."""

    async def create(self, op: ops.StartOp) -> tuple[ops.Outcome, ops.ConvRow]:
        """See Backend.create."""
        ...

    async def get(self, op: ops.GetOp) -> ops.ConvRow | None:
        """See Backend.get."""

    async def find_open(self, op: ops.FindOpenOp) -> ops.ConvRow | None:
        """See Backend.find_open."""

    async def append(self, op: ops.AppendOp) -> ops.AppendResult:
        """See Backend.append."""
        ...

    async def read_messages(self, op: ops.ReadOp) -> builtins.list[ops.MsgRow] | None:
        """See Backend.read_messages."""

    async def read_context(self, op: ops.ReadOp) -> list[tuple[str, str]] | None:
        """See Backend.read_context."""

    async def update(self, op: ops.UpdateOp) -> ops.UpdateResult:
        """See Backend.update."""
        ...

    async def save_state(self, op: ops.SaveStateOp) -> ops.StateResult:
        """See Backend.save_state."""
        ...

    async def load_state(self, op: ops.LoadStateOp) -> tuple[ops.Outcome, ops.StateRow | None]:
        """See Backend.load_state."""
        ...

    async def list(self, op: ops.ListOp) -> builtins.list[ops.ConvRow]:
        """See Backend.list."""
        ...

    async def counts(self, op: ops.CountsOp) -> ops.CountsRow:
        """See Backend.counts."""
        ...

    async def delete(self, op: ops.DeleteOp) -> bool:
        """See Backend.delete."""
        ...

    async def delete_contact(self, op: ops.DeleteContactOp) -> int:
        """See Backend.delete_contact."""
        ...

    async def sweep(self, op: ops.SweepOp) -> ops.SweepRow:
        """See Backend.sweep."""
        ...

    async def read_events(
        self, op: ops.EventsOp, wait: float
    ) -> builtins.list[ops.EventRow] | None:
        """See Backend.read_events."""

    async def acquire_lease(self, op: ops.LeaseOp) -> ops.LeaseResult:
        """See Backend.acquire_lease."""
        ...

    async def release_lease(self, op: ops.ReleaseOp) -> None:
        """See Backend.release_lease."""

    async def remember(self, op: ops.RememberOp) -> ops.FactRow:
        """See Backend.remember."""
        ...

    async def recall(self, op: ops.RecallOp) -> builtins.list[ops.FactRow]:
        """See Backend.recall."""
        ...
