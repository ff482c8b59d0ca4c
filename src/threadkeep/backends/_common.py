"""What several backends share: op routing, the keyset filter of list(), polling pauses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

from threadkeep._rules.ops import ListOp, Op, Result

__all__ = ["POLL", "Handler", "list_filters", "route"]

R = TypeVar("R")

#: A backend's function for one kind of op.
Handler: TypeAlias = Callable[[Any], Any]

#: First and longest pause between polls for new events, seconds (SQLite; threaded async).
POLL = (0.02, 0.2)


def route(op_type: type[Op[R]], handler: Callable[[Any], Result[R]]) -> tuple[type[Any], Handler]:
    """Pair an op type with the backend function that carries it out.

    mypy checks that the function returns the op's result type.
    """
    return op_type, handler


def list_filters(op: ListOp, mark: Callable[[str], str]) -> tuple[list[str], dict[str, Any]]:
    """Return the WHERE terms and named parameters of list()'s filters and keyset cursor.

    ``mark(name)`` writes a named parameter in the driver's style (``:name``, ``%(name)s``).
    The tenant and liveness terms are the caller's.
    """
    where: list[str] = []
    params: dict[str, Any] = {}
    for name in ("status", "stage", "agent_id", "contact_id"):
        value = getattr(op, name)
        if value is not None:
            where.append(f"{name} = {mark(name)}")
            params[name] = value
    if op.cursor is not None:
        where.append(f"(activity_us, id) < ({mark('c_activity')}, {mark('c_id')})")
        params["c_activity"], params["c_id"] = op.cursor
    return where, params
