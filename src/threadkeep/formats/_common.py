"""What every renderer does first: keep what the target reads, repair pairs, order results.

Pure functions over parsed messages (``threadkeep._rules.parts.Item``).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from threadkeep._rules.parts import Dialect, Image, Item, Native, Piece, Text

__all__ = ["Unit", "content_piece", "intact", "prepare", "verbatim"]


@dataclass(frozen=True, slots=True)
class Unit:
    """One piece in rendering order, with the index of the message it came from."""

    item: int
    piece: Piece


def _usable(piece: Piece, target: Dialect) -> bool:
    part = piece.part
    if isinstance(part, Native):
        return piece.dialect == target  # a provider's own pieces go back to it alone
    if isinstance(part, Text):
        return bool(part.text)
    # no API takes an image from the model side
    return not (isinstance(part, Image) and piece.side == "assistant")


def _repair(units: list[Unit]) -> list[Unit]:
    """Drop results of calls not in the window and calls answered nowhere (but the last)."""
    called: set[str] = set()
    kept: list[Unit] = []
    for unit in units:
        answers = unit.piece.answers
        if answers is not None and answers not in called:
            continue  # its call is not in the window: an orphan every API refuses
        if unit.piece.calls is not None:
            called.add(unit.piece.calls)
        kept.append(unit)
    answered = {u.piece.answers for u in kept if u.piece.answers is not None}
    last_input = max(
        (i for i, u in enumerate(kept) if u.piece.side in ("user", "tool")), default=-1
    )
    return [
        u
        for i, u in enumerate(kept)
        if u.piece.calls is None or u.piece.calls in answered or i > last_input
    ]


_LEADS = frozenset({"reasoning", "thinking", "redacted_thinking"})


def _leads(piece: Piece) -> bool:
    """Return whether the model's next piece must follow this one (reasoning, thinking)."""
    return piece.raw is not None and piece.raw.get("type") in _LEADS


def _in_order(units: list[Unit]) -> list[Unit]:
    """Hold back what interrupts an exchange, and let it follow the exchange.

    Input (a person's message, a note) stored between a call and its result, or between a
    reasoning step and what it leads to, and anything stored between two results of one
    batch of calls, moves to just after the exchange: every API wants all the results right
    after their calls, and a reasoning step right before its item.
    """
    out: list[Unit] = []
    held: list[Unit] = []
    open_calls: set[str] = set()
    answering = mid_step = False
    queue = deque(units)
    while queue:
        unit = queue.popleft()
        piece = unit.piece
        answers_open = piece.answers in open_calls
        speaks = piece.side in ("user", "system")
        if (open_calls and not answers_open and (answering or speaks)) or (mid_step and speaks):
            held.append(unit)
            continue
        out.append(unit)
        if piece.calls is not None:
            open_calls.add(piece.calls)
        if answers_open:
            open_calls.discard(str(piece.answers))
            answering = bool(open_calls)
        if piece.side == "assistant":
            mid_step = _leads(piece)
        if held and not open_calls and not mid_step:
            queue.extendleft(reversed(held))
            held = []
    out += held
    # a reasoning step that nothing of the model's follows cannot be sent back alone
    return [
        u
        for k, u in enumerate(out)
        if not _leads(u.piece) or (k + 1 < len(out) and out[k + 1].piece.side == "assistant")
    ]


def prepare(items: Sequence[Item], target: Dialect, *, user_first: bool = False) -> list[Unit]:
    """Return the pieces a target renders, in order.

    Pieces the target cannot read are left out (another provider's thinking or reasoning,
    empty text, images on the model's side); results whose call is not in the window and
    calls that are answered nowhere (unless nothing but the model speaks after them) are
    dropped, so every pair is whole; input stored in the middle of an exchange follows it
    (``_in_order``). With ``user_first``, everything before the first person's message is
    left out (system pieces excepted).
    """
    units = [
        Unit(i, piece)
        for i, item in enumerate(items)
        for piece in item.pieces
        if _usable(piece, target)
    ]
    if user_first:
        first = next((k for k, u in enumerate(units) if u.piece.side == "user"), len(units))
        units = [u for k, u in enumerate(units) if k >= first or u.piece.side == "system"]
    return _in_order(_repair(units))


def intact(items: Sequence[Item], group: Sequence[Unit], target: Dialect) -> dict[str, Any] | None:
    """Return the message's payload when ``group`` is all of one message of ``target``'s dialect.

    Renderers then return that payload verbatim instead of rebuilding it. None otherwise.
    """
    if not group or any(u.item != group[0].item for u in group):
        return None
    item = items[group[0].item]
    if item.dialect != target or not isinstance(item.payload, Mapping):
        return None
    if len(group) != len(item.pieces) or any(
        u.piece is not p for u, p in zip(group, item.pieces, strict=True)
    ):
        return None
    return verbatim(item.payload)


def content_piece(items: Sequence[Item], unit: Unit) -> bool:
    """Return whether a piece is part of a message's content (not an item or call of its own)."""
    part = unit.piece.part
    if isinstance(part, Text | Image):
        return True
    return isinstance(part, Native) and unit.piece.raw is not items[unit.item].payload


def verbatim(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a stored block or item, so callers may change what they get."""
    return copy.deepcopy(dict(raw))
