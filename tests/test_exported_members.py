"""The public names of threadkeep."""

from __future__ import annotations

import types

import threadkeep


def _order(name: str) -> tuple[int, str]:
    """Ruff's RUF022 ("isort-style") order: CONSTANTS, then Classes, then the rest."""
    if name.isupper():
        return 0, name
    if name[0].isupper():
        return 1, name
    return 2, name


def test_all_is_sorted_and_unique() -> None:
    assert threadkeep.__all__ == sorted(threadkeep.__all__, key=_order)
    assert len(threadkeep.__all__) == len(set(threadkeep.__all__))


def test_the_sortedness_check_can_fail() -> None:
    assert sorted(["open", "Store", "TIERS"], key=_order) == ["TIERS", "Store", "open"]
    assert sorted(["Store", "AsyncStore"], key=_order) != ["Store", "AsyncStore"]


def test_all_names_exist() -> None:
    for name in threadkeep.__all__:
        assert hasattr(threadkeep, name), name


def test_all_is_complete() -> None:
    public = {
        n
        for n, v in vars(threadkeep).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public | {"__version__"} == set(threadkeep.__all__)
