"""The public names of threadkeep."""

from __future__ import annotations

import threadkeep


def test_all_is_sorted_and_unique() -> None:
    assert threadkeep.__all__ == sorted(set(threadkeep.__all__), key=threadkeep.__all__.index)
    assert len(threadkeep.__all__) == len(set(threadkeep.__all__))


def test_all_names_exist() -> None:
    for name in threadkeep.__all__:
        assert hasattr(threadkeep, name), name


def test_all_is_complete() -> None:
    public = {n for n in vars(threadkeep) if not n.startswith("_") and not _is_submodule(n)} | {
        "__version__"
    }
    assert public == set(threadkeep.__all__)


def _is_submodule(name: str) -> bool:
    import types

    return isinstance(getattr(threadkeep, name), types.ModuleType)
