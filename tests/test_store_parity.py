"""Store and AsyncStore are twins: every public method has the same signature on both.

The cheap form of httpcore's ``unasync --check``: the two fronts are written by hand, and a
parameter, default or annotation that drifts on one of them fails here.
"""

from __future__ import annotations

import inspect

import pytest

import threadkeep

#: Where the async twin's name differs, as in httpx: close() is aclose().
RENAMED = {"close": "aclose"}


def _public(cls: type) -> dict[str, object]:
    return {n: m for n, m in vars(cls).items() if not n.startswith("_") and callable(m)}


def test_both_fronts_have_the_same_public_methods() -> None:
    sync = {RENAMED.get(n, n) for n in _public(threadkeep.Store)}
    assert sync == set(_public(threadkeep.AsyncStore))


@pytest.mark.parametrize("name", sorted(_public(threadkeep.Store)))
def test_each_method_has_the_same_signature(name: str) -> None:
    sync = inspect.signature(getattr(threadkeep.Store, name))
    twin = inspect.signature(getattr(threadkeep.AsyncStore, RENAMED.get(name, name)))
    assert sync.parameters == twin.parameters, name
    returned = {
        "turn": ("Iterator[Turn]", "AsyncIterator[AsyncTurn]"),
        "events": ("Iterator[Event]", "AsyncIterator[Event]"),
    }
    if name in returned:
        assert (sync.return_annotation, twin.return_annotation) == returned[name]
    else:
        assert sync.return_annotation == twin.return_annotation, name


def test_the_turns_are_twins_too() -> None:
    sync = inspect.signature(threadkeep.Turn.append)
    twin = inspect.signature(threadkeep.AsyncTurn.append)
    assert sync == twin


def test_a_drifted_default_would_be_caught() -> None:
    def one(self: object, x: int = 1) -> None: ...
    def other(self: object, x: int = 2) -> None: ...

    assert inspect.signature(one).parameters != inspect.signature(other).parameters
