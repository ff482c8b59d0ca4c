"""The backend interface: structural Protocols, so a third-party backend needs no import.

A backend has one entry point, ``execute(op)``: it takes an op from
``threadkeep._rules.ops`` and returns its ``Result`` (each op says which outcomes it may have).
A backend is atomic per op, never reads the clock and never decides a rule: the verdicts come
from ``threadkeep._rules.decide``. The registry (``threadkeep.backends``) checks every in-tree
backend against these Protocols statically.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from threadkeep._rules.ops import Op, Result

__all__ = ["AsyncBackend", "Backend"]

R = TypeVar("R")


class Backend(Protocol):
    """A synchronous store backend."""

    def execute(self, op: Op[R]) -> Result[R]:
        """Carry out ``op`` atomically and return its result."""
        ...

    def ping(self) -> None:
        """Raise BackendUnavailable unless the store answers."""

    def close(self) -> None:
        """Release connections; the backend is not used afterwards."""


class AsyncBackend(Protocol):
    """An asynchronous store backend: the same methods as Backend, as coroutines."""

    async def execute(self, op: Op[R]) -> Result[R]:
        """See Backend.execute."""
        ...

    async def ping(self) -> None:
        """See Backend.ping."""

    async def close(self) -> None:
        """See Backend.close."""
