"""What several backends share: the method of each op, filters, pauses, SQL row codecs.

The SQL backends select the same columns in the same order, so their rows decode alike.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Generic, TypeAlias, TypeVar, overload

from threadkeep._rules.builders import fast_builder
from threadkeep._rules.ops import ALL_OPS, ListOp, Op, Result
from threadkeep._rules.retention import RetentionUs
from threadkeep._rules.rows import ConversationRow, EventRow, FactRow, StateRow, TenantCounts

__all__ = [
    "POLL",
    "Handler",
    "decode_conversation",
    "decode_event",
    "decode_fact",
    "decode_state",
    "handlers",
    "handles",
    "list_filters",
    "tenant_counts",
]

R = TypeVar("R")
S = TypeVar("S")
T = TypeVar("T")
Y = TypeVar("Y")
N = TypeVar("N")

#: A backend's function for one kind of op.
Handler: TypeAlias = Callable[[Any], Any]

#: First and longest pause between polls for new events, seconds (SQLite; threaded async).
POLL = (0.02, 0.2)


_HANDLED: dict[Callable[..., Any], type[Any]] = {}


class _Marker(Generic[R]):
    """Marks a method as the one carrying out an op type; see ``handles``."""

    def __init__(self, op_type: type[Op[R]]) -> None:
        self.op_type = op_type

    @overload
    def __call__(self, method: Callable[[S, T], Result[R]]) -> Callable[[S, T], Result[R]]: ...
    @overload
    def __call__(
        self, method: Callable[[S, T], Generator[Y, N, Result[R]]]
    ) -> Callable[[S, T], Generator[Y, N, Result[R]]]: ...
    def __call__(self, method: Callable[..., Any]) -> Callable[..., Any]:
        _HANDLED[method] = self.op_type
        return method


def handles(op_type: type[Op[R]]) -> _Marker[R]:
    """Mark a backend method, or a flow (a generator of requests), as carrying out ``op_type``.

    mypy checks that it returns (a flow: ends with) the op's result type, ``Result[R]``.
    """
    return _Marker(op_type)


def handlers(instance: object, besides: tuple[type[Any], ...] = ()) -> dict[type[Any], Handler]:
    """Return the bound methods of ``instance`` marked with ``handles``, by op type.

    Args:
        instance: the backend (or its flows).
        besides: op types it carries out otherwise.

    Raises:
        TypeError: when an op type has no method (a backend must carry out every op).
    """
    found: dict[type[Any], Handler] = {}
    for cls in reversed(type(instance).__mro__):
        for name, attribute in vars(cls).items():
            op_type = _HANDLED.get(attribute) if callable(attribute) else None
            if op_type is not None:
                found[op_type] = getattr(instance, name)
    missing = sorted(t.__name__ for t in ALL_OPS if t not in (*found, *besides))
    if missing:
        raise TypeError(f"{type(instance).__name__} carries out no {', '.join(missing)}")
    return found


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


# ---- row codecs of the SQL backends (both select the same columns, in the same order) ----


# Reads decode many conversation rows (a list page: 50): each built by its fast_builder.
_conversation_row: Callable[..., ConversationRow] = fast_builder(ConversationRow)
_retention_us: Callable[..., RetentionUs] = fast_builder(RetentionUs)


def decode_conversation(r: Sequence[Any]) -> ConversationRow:
    """Decode a row selected with ``CONVERSATION_COLUMNS`` (extra columns ignored)."""
    return _conversation_row(*r[:15], _retention_us(*r[15:19]))


def decode_state(r: Sequence[Any]) -> StateRow:
    """Decode a row selected with ``STATE_COLUMNS``: (version, value, saved_us)."""
    return StateRow(r[0], r[1], r[2])


def decode_event(r: Sequence[Any]) -> EventRow:
    """Decode a row selected with ``EVENT_COLUMNS`` (the id becomes the cursor text)."""
    return EventRow(str(r[0]), r[1], r[2], r[3], r[4], r[5])


def decode_fact(r: Sequence[Any]) -> FactRow:
    """Decode a row selected with ``FACT_COLUMNS``."""
    return FactRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6])


def tenant_counts(rows: Sequence[Sequence[Any]]) -> TenantCounts:
    """Decode ``COUNTS`` rows, (status, stage or None, count) each, into the two tallies."""
    by_status: dict[str, int] = {}
    by_stage: dict[str, int] = {}
    for status, stage, n in rows:
        by_status[status] = by_status.get(status, 0) + n
        if stage is not None:
            by_stage[stage] = by_stage.get(stage, 0) + n
    return TenantCounts(by_status, by_stage)
