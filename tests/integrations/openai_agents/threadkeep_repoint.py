"""pytest plugin: the OpenAI Agents SDK's own tests with ``SQLiteSession`` re-pointed at threadkeep.

Loaded with ``-p threadkeep_repoint`` in a pytest run whose rootdir and config are the SDK's
unpacked sdist. Every test module that names ``SQLiteSession`` gets ``RepointedSession``
instead: ``ThreadkeepSession`` behind ``SQLiteSession``'s constructor. ``db_path=":memory:"``
(the default) is private to the instance, as an in-memory SQLite database is; a file path is
shared by every session opened on it. Both are threadkeep tenants of one store per run.

Environment: ``TK_BACKEND`` (memory, sqlite, redis, postgres; default sqlite) and ``TK_API``
(``async``: an ``AsyncStore``, the default; ``sync``: a ``Store`` called from worker threads).
The tests listed in ``deselect.txt`` test SQLiteSession's own internals (its connection pool,
file locks, raw rows) or SDK-private hooks; they are deselected, and reported as such.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _backends import backend_from_env, backend_url, cleanup

import threadkeep
from threadkeep import Retention
from threadkeep.integrations._common import name_for
from threadkeep.integrations.openai_agents import ThreadkeepSession

_DESELECT = Path(__file__).with_name("deselect.txt")
_state: dict[str, Any] = {}


def _store() -> Any:
    if "store" not in _state:
        kind = backend_from_env()
        url = backend_url(kind)
        _state["url"] = url
        api = os.environ.get("TK_API", "async")
        _state["store"] = threadkeep.open_async(url) if api == "async" else threadkeep.open(url)
    return _state["store"]


class RepointedSession(ThreadkeepSession):
    """``ThreadkeepSession`` with ``SQLiteSession``'s constructor and ``close``."""

    def __init__(
        self,
        session_id: str,
        db_path: str | Path = ":memory:",
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        session_settings: Any = None,
    ) -> None:
        if str(db_path) == ":memory:":
            tenant = f"mem-{uuid.uuid4().hex}"
        else:
            tenant = name_for(f"file:{Path(db_path).resolve()}:{sessions_table}:{messages_table}")
        super().__init__(
            session_id, _store(), retention=Retention(ttl=None), tenant=tenant,
            session_settings=session_settings,
        )  # fmt: skip
        self.db_path = db_path

    def close(self) -> None:
        """Nothing to release: the store belongs to the run."""


def _deselected() -> list[str]:
    lines = _DESELECT.read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests listed in deselect.txt (a node id, or all its parametrizations)."""
    listed = set(_deselected())
    drop = [
        item for item in items if item.nodeid.split("[", 1)[0] in listed or item.nodeid in listed
    ]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [item for item in items if item not in drop]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Swap ``SQLiteSession`` for ``RepointedSession`` in the test's module."""
    module = getattr(item, "module", None)
    if module is not None and hasattr(module, "SQLiteSession"):
        module.SQLiteSession = RepointedSession


def pytest_report_header() -> str:
    """Say which backend and API the SDK's tests run on."""
    return (
        f"threadkeep: SQLiteSession -> ThreadkeepSession on TK_BACKEND="
        f"{backend_from_env()} TK_API={os.environ.get('TK_API', 'async')}"
    )


def pytest_sessionfinish() -> None:
    """Close the run's store and remove what it left on the server."""
    store = _state.pop("store", None)
    if isinstance(store, threadkeep.Store):
        store.close()
    if "url" in _state:
        cleanup(_state.pop("url"))
