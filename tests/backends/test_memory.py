"""memory:// backend extras: erasing a conversation does not scan the event log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import threadkeep
from threadkeep._rules import plans
from threadkeep.backends.memory import MemoryBackend


class _CountingDict(dict[int, Any]):
    """A dict that counts walks over it (items/keys/values/iteration)."""

    walks = 0

    def items(self) -> Any:
        type(self).walks += 1
        return super().items()

    def __iter__(self) -> Any:
        type(self).walks += 1
        return super().__iter__()


def test_purging_and_deleting_do_not_walk_the_event_log() -> None:
    """2,000 expired conversations purged and 10 deleted: the event log (4,020 events) is not
    walked once per conversation (it was: purge cost conversations × retained events)."""
    clock = threadkeep.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    with threadkeep.open("memory://", clock=clock) as store:
        backend = store._backend
        assert isinstance(backend, MemoryBackend)
        for i in range(2000):
            store.append(store.start(f"c{i}").id, "user", "hi")
        clock.advance(timedelta(days=8))
        kept = [store.start(f"k{i}") for i in range(10)]
        events = _CountingDict(backend._events)
        backend._events = events
        assert store.sweep().purged == 2000
        for conv in kept:
            store.delete(conv.id)
        assert _CountingDict.walks == 0
        remaining = [e.conversation_id for e in store.events()]
        # only the deletions' own events are left of the erased conversations
        assert remaining == [c.id for c in kept]


class _CountingLock:
    """The backend's condition, counting explicit releases (those between sweep batches)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.releases = 0

    def __enter__(self) -> Any:
        return self.inner.__enter__()

    def __exit__(self, *exc: object) -> Any:
        return self.inner.__exit__(*exc)

    def acquire(self) -> Any:
        return self.inner.acquire()

    def release(self) -> None:
        self.releases += 1
        self.inner.release()

    def notify_all(self) -> None:
        self.inner.notify_all()

    def wait(self, timeout: float | None = None) -> Any:
        return self.inner.wait(timeout)


def test_a_sweep_lets_other_calls_in_between_batches() -> None:
    """1,200 expired conversations are purged in batches of SWEEP_BATCH (500): the store's
    lock is let go after each of the 3 batches, so no call waits for the whole purge."""
    clock = threadkeep.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    with threadkeep.open("memory://", clock=clock) as store:
        backend = store._backend
        assert isinstance(backend, MemoryBackend)
        for i in range(1200):
            store.start(f"c{i}")
        clock.advance(timedelta(days=8))
        lock = _CountingLock(backend._lock)
        backend._lock = lock  # type: ignore[assignment]
        assert plans.SWEEP_BATCH == 500
        assert store.sweep().purged == 1200
        assert lock.releases == 3


class _CountingConvs(dict[str, Any]):
    """The conversations table, counting walks over all of it."""

    walks = 0

    def values(self) -> Any:
        type(self).walks += 1
        return super().values()


def test_resume_find_open_and_contact_erasure_do_not_walk_every_conversation() -> None:
    """With 3,000 conversations stored, start(resume), find_open and delete_contact look at the
    contact's own conversations only (each walked them all: filling a store was quadratic)."""
    with threadkeep.open("memory://") as store:
        backend = store._backend
        assert isinstance(backend, MemoryBackend)
        for i in range(3000):
            store.start(f"c{i}")
        convs = _CountingConvs(backend._convs)
        backend._convs = convs
        first = store.resume("c-x")
        assert store.resume("c-x").id == first.id
        found = store.find_open("c-x")
        assert found is not None and found.id == first.id
        second = store.start("c-x")
        assert store.delete_contact("c-x").conversations == (first.id, second.id)
        assert store.find_open("c-x") is None
        assert _CountingConvs.walks == 0
        with pytest.raises(threadkeep.ConversationNotFound):
            store.get(second.id)
        assert len(store.list(limit=200).items) == 200  # the others are still there
