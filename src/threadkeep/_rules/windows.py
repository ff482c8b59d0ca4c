"""Which tail of a history a window may return: never a tool call split from its result.

A window is a suffix of the kept history. It may start at a message only when that message
does not answer a call made before it, the message before it leaves no call or reasoning step
open (``link`` bits), and no later message in the window answers a call made before the
start. Windows shrink to the first such start (a read never costs an extra round trip); a
token budget then drops whole turns from the oldest. Sans-I/O: functions of ``Link`` values.
"""

from __future__ import annotations

from collections.abc import Sequence

from threadkeep._rules.parts import CALLS, RESULT, Link

__all__ = ["budget_start", "estimate_tokens", "plain_start", "starts", "window_start"]


def starts(links: Sequence[Link], *, complete: bool) -> list[bool]:
    """Return, for each index, whether a window may start there.

    Args:
        links: the fetched messages, oldest first.
        complete: whether ``links`` begins with the first kept message. When it does not,
            ``links[0]`` only tells whether ``links[1]`` may start a window: it is never a
            start itself.
    """
    n = len(links)
    if not any(item.bits or item.answers for item in links):  # no tool exchange: any start
        return [bool(s) or complete for s in range(n)]
    # a start s is spoiled by a pair (call at c, answer at j) with c < s <= j: mark (c, j]
    spoiled = [0] * (n + 1)
    last_call: dict[str, int] = {}
    for j, item in enumerate(links):
        for call_id in item.answers:
            c = last_call.get(call_id, -1)
            spoiled[c + 1] += 1
            spoiled[j + 1] -= 1
        for call_id in item.calls:
            last_call[call_id] = j
    ok: list[bool] = []
    running = 0
    for s, item in enumerate(links):
        running += spoiled[s]
        after_open = links[s - 1].bits & CALLS if s else not complete
        ok.append(not running and not item.bits & RESULT and not after_open)
    return ok


def window_start(links: Sequence[Link], want: int, *, complete: bool) -> int:
    """Return the index where a window of at most ``want`` messages starts.

    It is the first allowed start among the last ``want`` messages; ``len(links)`` (an
    empty window) when the last ``want`` messages are all inside one unfinished exchange.
    """
    if not any(item.bits or item.answers for item in links):  # no tool exchange: fast
        return plain_start(len(links), want, complete=complete)
    first = max(len(links) - want, 0)
    allowed = starts(links, complete=complete)
    return next((s for s in range(first, len(links)) if allowed[s]), len(links))


def plain_start(n: int, want: int, *, complete: bool) -> int:
    """Return ``window_start`` of ``n`` messages none of which calls or answers a tool.

    That is the first of the last ``want``, never the first message when ``complete`` is
    False (it only tells where a window may start).
    """
    first = max(n - want, 0)
    return first if first or complete else min(1, n)


def budget_start(
    links: Sequence[Link], tokens: Sequence[int], budget: int, *, start: int, complete: bool
) -> int:
    """Return where a window starting at ``start`` begins once held to ``budget`` tokens.

    Whole turns are dropped from the oldest: a turn begins at an allowed start where a person
    speaks (where none does, at any allowed start). The newest turn is kept even when it
    alone is over the budget.

    Args:
        links: the fetched messages, oldest first.
        tokens: the token count of each message.
        budget: the most tokens the window should hold.
        start: where the window starts before the budget applies.
        complete: as for ``starts``.
    """
    total = sum(tokens[start:])
    if total <= budget:
        return start
    allowed = starts(links, complete=complete)
    candidates = [s for s in range(start + 1, len(links)) if allowed[s]]
    turns = [s for s in candidates if links[s].user] or candidates
    begin = start
    for s in turns:
        total -= sum(tokens[begin:s])
        begin = s
        if total <= budget:
            return s
    return turns[-1] if turns else start


def estimate_tokens(chars: int) -> int:
    """Return a rough token count for ``chars`` characters of text or JSON (4 per token)."""
    return (chars + 3) // 4
