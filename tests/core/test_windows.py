"""Windows never split a tool call from its result (pure rules over Link values)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from threadkeep._rules import windows
from threadkeep._rules.parts import CALLS, RESULT, Link

USER = Link(user=True)
TEXT = Link()  # an assistant or agent text
THINK = Link(bits=CALLS)  # a reasoning item: the next item belongs to it


def call(*ids: str) -> Link:
    return Link(bits=CALLS, calls=frozenset(ids))


def result(*ids: str) -> Link:
    return Link(bits=RESULT, answers=frozenset(ids))


def oracle_ok(links: list[Link], s: int, *, complete: bool) -> bool:
    """The rule, written plainly: no orphan result in links[s:], no split at the start."""
    if s == 0 and not complete:
        return False
    if links[s].bits & RESULT or (s > 0 and links[s - 1].bits & CALLS):
        return False
    seen: set[str] = set()
    for item in links[s:]:
        if not item.answers <= seen:
            return False
        seen |= item.calls
    return True


def test_a_plain_history_is_cut_where_asked():
    links = [USER, TEXT] * 5
    assert windows.window_start(links, 4, complete=True) == 6
    assert windows.window_start(links, 20, complete=True) == 0


def test_a_window_never_starts_with_a_result():
    #        0     1          2            3     4
    links = [USER, call("a"), result("a"), TEXT, USER]
    assert windows.window_start(links, 3, complete=True) == 3  # not at the result
    assert windows.window_start(links, 4, complete=True) == 1  # the call and its result


def test_parallel_calls_stay_with_all_their_results():
    #        0     1               2            3            4     5
    links = [USER, call("a", "b"), result("a"), result("b"), TEXT, USER]
    assert windows.window_start(links, 5, complete=True) == 1
    assert windows.window_start(links, 4, complete=True) == 4


def test_calls_made_one_per_item_are_one_exchange():
    # OpenAI Responses: two function_call items, then the two outputs
    links = [USER, call("a"), call("b"), result("a"), result("b"), TEXT]
    assert windows.window_start(links, 5, complete=True) == 1
    assert windows.window_start(links, 4, complete=True) == 5  # 2 would split call a


def test_a_reasoning_item_keeps_what_follows_it():
    links = [USER, THINK, call("a"), result("a"), THINK, TEXT]
    assert windows.window_start(links, 1, complete=True) == 6  # 5 belongs to 4
    assert windows.window_start(links, 2, complete=True) == 4
    assert windows.window_start(links, 4, complete=True) == 4  # 2 belongs to 1, 3 a result
    assert windows.window_start(links, 5, complete=True) == 1


def test_a_late_result_keeps_its_call_in():
    # a text between the calls' results: starting at it would orphan result b
    links = [USER, call("a", "b"), result("a"), TEXT, result("b"), USER]
    assert windows.window_start(links, 3, complete=True) == 5
    assert windows.window_start(links, 5, complete=True) == 1


def test_the_first_fetched_row_only_tells_about_the_next():
    links = [THINK, TEXT, USER]  # fetched want+1 rows; the history goes on before them
    assert windows.window_start(links, 2, complete=False) == 2
    assert windows.window_start([TEXT, USER, TEXT], 2, complete=False) == 1


def test_a_result_whose_call_was_trimmed_is_never_the_start():
    links = [result("gone"), TEXT, USER]
    assert windows.window_start(links, 3, complete=True) == 1


def test_one_long_exchange_gives_an_empty_window():
    links = [USER, call("a", "b", "c"), result("a"), result("b"), result("c")]
    assert windows.window_start(links, 3, complete=True) == 5
    assert windows.window_start([], 3, complete=True) == 0


def test_an_open_call_at_the_end_is_kept():
    links = [USER, TEXT, USER, call("a")]
    assert windows.window_start(links, 2, complete=True) == 2


# ---- property: the first allowed start, and allowed means what the rule says -----------------


@st.composite
def histories(draw: st.DrawFn) -> list[Link]:
    links: list[Link] = []
    pending: list[str] = []
    next_id = 0
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(["user", "text", "think", "call", "result", "stray"]))
        if kind == "user":
            links.append(USER)
        elif kind == "text":
            links.append(TEXT)
        elif kind == "think":
            links.append(THINK)
        elif kind == "call":
            ids = [f"c{next_id + i}" for i in range(draw(st.integers(1, 3)))]
            next_id += len(ids)
            pending += ids
            links.append(call(*ids))
        elif kind == "result" and pending:
            answered = draw(st.lists(st.sampled_from(pending), min_size=1, max_size=2,
                                     unique=True))  # fmt: skip
            pending = [p for p in pending if p not in answered]
            links.append(result(*answered))
        else:
            links.append(result("unknown"))
    return links


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(1, 35), st.booleans())
def test_window_start_is_the_first_start_the_rule_allows(links, want, complete):
    s = windows.window_start(links, want, complete=complete)
    lowest = max(len(links) - want, 0)
    assert lowest <= s <= len(links)
    if s < len(links):
        assert oracle_ok(links, s, complete=complete)
    assert not any(oracle_ok(links, t, complete=complete) for t in range(lowest, s))
    assert windows.starts(links, complete=complete) == [
        oracle_ok(links, t, complete=complete) for t in range(len(links))
    ]


# ---- token budget ---------------------------------------------------------------------------


def test_budget_drops_whole_turns_from_the_oldest():
    #        0     1     2     3          4            5     6     7
    links = [USER, TEXT, USER, call("a"), result("a"), TEXT, USER, TEXT]
    tokens = [10, 10, 10, 10, 10, 10, 10, 10]
    assert windows.budget_start(links, tokens, 80, start=0, complete=True) == 0
    assert windows.budget_start(links, tokens, 79, start=0, complete=True) == 2
    assert windows.budget_start(links, tokens, 60, start=0, complete=True) == 2
    assert windows.budget_start(links, tokens, 59, start=0, complete=True) == 6
    assert windows.budget_start(links, tokens, 5, start=0, complete=True) == 6  # newest kept
    assert windows.budget_start(links, tokens, 25, start=3, complete=True) == 6


def test_budget_without_people_cuts_at_any_allowed_start():
    links = [TEXT, call("a"), result("a"), TEXT, TEXT]
    tokens = [5, 5, 5, 5, 5]
    assert windows.budget_start(links, tokens, 10, start=0, complete=True) == 3
    assert windows.budget_start(links, tokens, 1, start=0, complete=True) == 4
    assert windows.budget_start(links[1:3], tokens[1:3], 1, start=0, complete=True) == 0


@pytest.mark.parametrize(("chars", "tokens"), [(0, 0), (1, 1), (4, 1), (5, 2), (400, 100)])
def test_estimate_tokens(chars, tokens):
    assert windows.estimate_tokens(chars) == tokens


@pytest.mark.parametrize("complete", [False, True])
def test_plain_start_is_window_start_without_a_tool_exchange(complete: bool) -> None:
    # finish_messages asks plain_start, without links, when no row has a payload
    for n in range(5):
        for want in range(1, 6):
            links = [USER if i % 2 else TEXT for i in range(n)]
            expected = windows.window_start(links, want, complete=complete)
            assert windows.plain_start(n, want, complete=complete) == expected


def test_finish_messages_takes_the_rules_when_a_row_has_a_payload() -> None:
    # the last 2 of 3 would start at an orphaned tool result: the window shrinks to 1
    from threadkeep._rules import outcomes
    from threadkeep._rules.ops import Outcome, ReadOp, Result
    from threadkeep._rules.rows import MessageRow

    call_ = '{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}'
    done = '{"type": "function_call_output", "call_id": "c1", "output": "ok"}'
    rows = [
        MessageRow("c", 1, "user", "hi", 0, "{}", None, None, 0),
        MessageRow("c", 2, "assistant", "", 0, "{}", None, call_, 0),
        MessageRow("c", 3, "tool", "", 0, "{}", None, done, 0),
        MessageRow("c", 4, "assistant", "done", 0, "{}", None, None, 0),
    ]
    op = ReadOp("c", None, 0, last=3, after=0, limit=10)
    got = outcomes.finish_messages(Result(Outcome.OK, rows), op)
    assert [m.seq for m in got] == [4]
    plain = [r._replace(payload_json=None) for r in rows]
    assert [m.seq for m in outcomes.finish_messages(Result(Outcome.OK, plain), op)] == [3, 4]
