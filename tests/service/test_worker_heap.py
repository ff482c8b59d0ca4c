"""A ``threadkeep serve`` worker hides what it made at startup from the cyclic GC (``gc.freeze``).

Each full collection traversed every object of the worker, some 100,000 of them made at
startup (modules, the app, the store's clients), a pause of 70-100 ms of CPU that the
requests on that worker waited through (docs/performance.md, "Service under load, session
10"). Frozen once the app has started, they are no longer traversed; garbage left by the
startup is collected first, not frozen.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from threadkeep.service import server
from threadkeep.service.settings import get_settings


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def served_from_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("THREADKEEP_STORE", "memory://")
    get_settings.cache_clear()
    try:
        yield
    finally:
        gc.unfreeze()  # this test process must not keep its heap frozen
        get_settings.cache_clear()


@pytest.mark.usefixtures("served_from_environment")
def test_a_worker_freezes_its_startup_heap_after_collecting_it() -> None:
    gc.unfreeze()
    app = server._worker_app()
    garbage = _Cycle()
    gone = weakref.ref(garbage)
    del garbage  # a reference cycle: only the cyclic collector frees it

    async def main() -> None:
        assert gc.get_freeze_count() == 0
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 1000  # the modules, the app, the store …
            assert gone() is None  # collected before the freeze, not kept for good
            assert app.state.store is not None
        assert gc.get_freeze_count() > 1000  # the app stopping does not undo it

    asyncio.run(main())
