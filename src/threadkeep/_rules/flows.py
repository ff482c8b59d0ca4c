"""The multi-step flows of the Store, written once and pumped by a sync and an async driver.

A flow is a generator: it yields the next op to execute (or a ``Sleep``), and is sent the
backend's ``Result``. Time is injected (``now_us`` reads the store's clock, ``monotonic``
measures waits), so the flows are tested without I/O by sending them results.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Final

from threadkeep._exceptions import BackendUnavailable
from threadkeep._models import Event
from threadkeep._rules import outcomes, plans, validate
from threadkeep._rules.ops import EventsOp, LeaseOp, ReleaseOp, Result
from threadkeep._rules.rows import EventRow

__all__ = [
    "LEASE_POLL",
    "RELEASE_RETRY",
    "RELEASE_TRYING",
    "EventsCursor",
    "Sleep",
    "acquire_lease",
    "pauses",
    "release_lease",
]

#: First and longest pause between attempts to take a busy turn lease, seconds.
LEASE_POLL: Final = (0.01, 0.2)
#: First and longest pause between attempts to release a lease while the store is unavailable.
RELEASE_RETRY: Final = (0.05, 0.5)
#: Longest time spent releasing a lease while the store is unavailable, seconds (never longer
#: than the lease itself: past that, it has lapsed anyway).
RELEASE_TRYING: Final = 5.0
#: How long one read of a follower without an end (timeout None) waits before asking again.
FOLLOW_WAIT: Final = 5.0


@dataclass(frozen=True, slots=True)
class Sleep:
    """Pause the flow this many seconds."""

    seconds: float


def pauses(first: float, longest: float) -> Iterator[float]:
    """Yield the pauses of a polling loop: doubling from ``first``, then ``longest`` forever."""
    pause = first
    while True:
        yield pause
        pause = min(pause * 2, longest)


def acquire_lease(
    conversation_id: str,
    tenant: str | None,
    lease: float | timedelta,
    timeout: float | None,
    now_us: Callable[[], int],
    monotonic: Callable[[], float],
) -> Generator[LeaseOp | Sleep, Result[int] | None, int]:
    """Take a conversation's turn lease, waiting up to ``timeout`` seconds while it is busy.

    Yields a LeaseOp (send its Result) or a Sleep (send None); returns the fencing token.

    Raises:
        InvalidInput: a bad id, tenant, lease or timeout (before the first op).
        ConversationNotFound: absent, expired or another tenant's.
        TurnInProgress: another worker still holds the lease at the deadline.
    """
    first = plans.lease(now_us(), conversation_id, tenant, lease)
    wait = validate.check_timeout(timeout)
    lease_us = first.until_us - first.now_us
    deadline = None if wait is None else monotonic() + wait
    op = first
    for pause in pauses(*LEASE_POLL):
        result = yield op
        assert result is not None
        token = outcomes.finish_lease(result, conversation_id)
        if token is not None:
            return token
        remaining = None if deadline is None else deadline - monotonic()
        if remaining is not None and remaining <= 0:
            raise outcomes.turn_busy(conversation_id)
        yield Sleep(pause if remaining is None else min(pause, remaining))
        now = now_us()
        op = replace(first, now_us=now, until_us=now + lease_us)
    raise AssertionError("unreachable: pauses() never ends")


def release_lease(
    conversation_id: str,
    token: int,
    lease: float | timedelta,
    monotonic: Callable[[], float],
) -> Generator[ReleaseOp | Sleep, BackendUnavailable | None, BackendUnavailable | None]:
    """Give back a turn lease, trying again while the store is unavailable.

    A turn that failed because the store dropped out usually finds it still out when it
    releases its lease; without a retry the conversation stays locked until the lease lapses.
    Yields a ReleaseOp (send None once it was executed, or the BackendUnavailable it raised) or
    a Sleep (send None). Returns None once released, or the last error when
    ``min(RELEASE_TRYING, lease)`` seconds passed: the lease then lapses by itself.
    """
    budget = min(RELEASE_TRYING, validate.check_lease(lease) / 1_000_000)
    deadline = monotonic() + budget
    op = ReleaseOp(conversation_id, token)
    for pause in pauses(*RELEASE_RETRY):
        failed = yield op
        if failed is None:
            return None
        remaining = deadline - monotonic()
        if remaining <= 0:
            return failed
        yield Sleep(min(pause, remaining))
    raise AssertionError("unreachable: pauses() never ends")


class EventsCursor:
    """The state of an events() walk: what to read next, and when to stop waiting.

    ``timeout`` is how long to wait, once caught up, with no new event before stopping
    (None: never stop).
    """

    def __init__(
        self,
        tenant: str | None,
        after: str | None,
        timeout: float | None,
        monotonic: Callable[[], float],
    ) -> None:
        plans.events(tenant, after, 0.0)  # refuses a bad tenant or cursor before any read
        timeout = validate.check_timeout(timeout)
        self.tenant = tenant
        self.after = after
        self.timeout = timeout
        self.monotonic = monotonic
        self.deadline = None if timeout is None else monotonic() + timeout
        self.done = False

    def next_op(self) -> EventsOp | None:
        """Return the next read to make, or None when done."""
        if self.done:
            return None
        deadline = self.deadline
        wait = FOLLOW_WAIT if deadline is None else max(0.0, deadline - self.monotonic())
        return plans.events(self.tenant, self.after, wait)

    def take(self, result: Result[list[EventRow]]) -> list[Event]:
        """Return the events of a read and advance the cursor.

        Raises:
            CursorExpired: the cursor fell out of the bounded log.
        """
        events = outcomes.finish_events(result, self.after)
        now = self.monotonic()
        if events:
            self.after = events[-1].id
            if self.timeout is not None:
                self.deadline = now + self.timeout
        elif self.deadline is not None and now >= self.deadline:
            self.done = True
        return events
