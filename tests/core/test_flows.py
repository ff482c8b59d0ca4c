"""The flows of ``_rules.flows`` driven by hand: results sent in, ops and sleeps read out.

No store and no sleeping: the clocks are lists of readings, so every step is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from itertools import islice

import pytest

from threadkeep import (
    BackendUnavailable,
    ConversationNotFound,
    CursorExpired,
    InvalidInput,
    TurnInProgress,
)
from threadkeep._rules.flows import (
    FOLLOW_WAIT,
    LEASE_POLL,
    RELEASE_RETRY,
    RELEASE_TRYING,
    EventsCursor,
    Sleep,
    acquire_lease,
    pauses,
    release_lease,
)
from threadkeep._rules.ops import EventsOp, LeaseOp, Outcome, ReleaseOp, Result
from threadkeep._rules.rows import EventRow

OK, BUSY, MISSING = Result(Outcome.OK, 7), Result(Outcome.BUSY, 0), Result(Outcome.NOT_FOUND, 0)


def clock(start: float, step: float) -> Callable[[], float]:
    """A clock that moves ``step`` each time it is read."""
    readings: Iterator[float] = (start + n * step for n in range(10**6))
    return lambda: next(readings)


def micros(start: int, step: int) -> Callable[[], int]:
    """The store's clock in µs, moving ``step`` each time it is read."""
    readings = iter(range(start, start + 10**6 * step, step))
    return lambda: next(readings)


def test_pauses_double_up_to_the_longest() -> None:
    assert list(islice(pauses(0.01, 0.05), 5)) == [0.01, 0.02, 0.04, 0.05, 0.05]


def test_a_free_lease_is_taken_at_once() -> None:
    flow = acquire_lease("c1", "t", 30, 0, micros(100, 1), clock(0, 0))
    assert next(flow) == LeaseOp("c1", "t", 100, 30_000_100)
    with pytest.raises(StopIteration) as done:
        flow.send(OK)
    assert done.value.value == 7


def test_a_busy_lease_is_waited_for_until_the_timeout() -> None:
    flow = acquire_lease("c1", None, 1, 0.05, micros(1000, 1000), clock(0.0, 0.02))
    first = next(flow)
    assert first == LeaseOp("c1", None, 1000, 1_001_000)
    assert flow.send(BUSY) == Sleep(LEASE_POLL[0])
    again = flow.send(None)  # a new op at the clock's new time, with the same lease length
    assert again == LeaseOp("c1", None, 2000, 1_002_000)
    assert isinstance(flow.send(BUSY), Sleep)
    flow.send(None)
    with pytest.raises(TurnInProgress):
        flow.send(BUSY)


def test_without_a_timeout_the_flow_waits_forever() -> None:
    flow = acquire_lease("c1", None, 1, None, micros(0, 1), clock(0, 100))
    next(flow)
    sleeps = []
    for _ in range(8):
        sleeps.append(flow.send(BUSY))
        flow.send(None)
    assert sleeps[-1] == Sleep(LEASE_POLL[1]) and all(isinstance(s, Sleep) for s in sleeps)


def test_a_release_the_store_refuses_is_tried_again_until_it_is_done() -> None:
    """Finding 2: a turn that failed in an outage released nothing; its lease was held."""
    out = BackendUnavailable("redis", "127.0.0.1:6379", "refused")
    flow = release_lease("c1", 7, 30, clock(0.0, 0.1))
    assert next(flow) == ReleaseOp("c1", 7)
    assert flow.send(out) == Sleep(RELEASE_RETRY[0])
    assert flow.send(None) == ReleaseOp("c1", 7)
    assert flow.send(out) == Sleep(RELEASE_RETRY[0] * 2)
    assert flow.send(None) == ReleaseOp("c1", 7)
    with pytest.raises(StopIteration) as done:
        flow.send(None)
    assert done.value.value is None


@pytest.mark.parametrize(("lease", "budget"), [(30, RELEASE_TRYING), (0.5, 0.5)])
def test_a_release_gives_up_after_its_budget_and_returns_the_error(
    lease: float, budget: float
) -> None:
    """Never longer than RELEASE_TRYING, nor than the lease: it lapses by itself then."""
    out = BackendUnavailable("redis", "127.0.0.1:6379", "refused")
    now = [0.0]
    flow = release_lease("c1", 7, lease, lambda: now[0])
    step = next(flow)
    slept = 0.0
    with pytest.raises(StopIteration) as done:
        while True:
            if isinstance(step, Sleep):
                slept += step.seconds
                now[0] += step.seconds
                step = flow.send(None)
            else:
                step = flow.send(out)
    assert done.value.value is out
    assert slept == pytest.approx(budget)


def test_an_unknown_conversation_ends_the_flow() -> None:
    flow = acquire_lease("c1", None, 1, None, micros(0, 1), clock(0, 1))
    next(flow)
    with pytest.raises(ConversationNotFound):
        flow.send(MISSING)


@pytest.mark.parametrize(
    "conversation_id, lease, timeout, field",
    [
        ("c 1", 1, 0, "conversation_id"),
        ("c1", 0, 0, "lease"),
        ("c1", math.nan, 0, "lease"),
        ("c1", math.inf, 0, "lease"),
        ("c1", 1e300, 0, "lease"),
        ("c1", 1, -1, "timeout"),
        ("c1", 1, math.nan, "timeout"),
        ("c1", 1, math.inf, "timeout"),
    ],
)
def test_bad_arguments_are_refused_before_any_op(
    conversation_id: str, lease: float, timeout: float, field: str
) -> None:
    flow = acquire_lease(conversation_id, None, lease, timeout, micros(0, 1), clock(0, 1))
    with pytest.raises(InvalidInput) as caught:
        next(flow)
    assert caught.value.field == field


def event(n: int) -> EventRow:
    return EventRow(str(n), "message.appended", "t", "c1", '{"seq":1,"role":"user"}', 5)


def test_events_read_until_caught_up_then_wait_out_the_timeout() -> None:
    walk = EventsCursor("t", "3", 1.0, clock(0.0, 0.4))
    assert walk.next_op() == EventsOp("t", 3, 500, 1.0 - 0.4)
    assert [e.id for e in walk.take(Result(Outcome.OK, [event(4), event(5)]))] == ["4", "5"]
    follow = walk.next_op()
    assert follow is not None and follow.after == 5  # the cursor moved; the deadline did too
    assert walk.take(Result(Outcome.OK, [])) == []
    assert walk.next_op() is not None
    walk.take(Result(Outcome.OK, []))
    assert walk.next_op() is None


def test_a_follower_without_an_end_waits_in_slices() -> None:
    walk = EventsCursor(None, None, None, clock(0.0, 100.0))
    for _ in range(3):
        op = walk.next_op()
        assert op is not None and (op.after, op.wait) == (None, FOLLOW_WAIT)
        walk.take(Result(Outcome.OK, []))


def test_an_expired_cursor_raises() -> None:
    walk = EventsCursor(None, "2", 0, clock(0.0, 0.0))
    walk.next_op()
    with pytest.raises(CursorExpired) as caught:
        walk.take(Result(Outcome.EXPIRED, []))
    assert caught.value.cursor == "2"


@pytest.mark.parametrize(
    "after, timeout", [("x", 0), ("²", 0), (str(2**63), 0), ("1", math.nan), ("1", -1)]
)
def test_events_refuse_bad_cursors_and_waits_at_once(after: str, timeout: float) -> None:
    with pytest.raises(InvalidInput):
        EventsCursor(None, after, timeout, clock(0.0, 0.0))
