"""Store URLs for the framework suites: the isolated backends of the main suite.

Each framework suite runs in its own pytest invocation and venv, with its own rootdir (the
SDK's, for the re-pointed OpenAI tests, whose package is also called ``tests``), so the main
suite's helpers are loaded from their file rather than imported as ``tests._servers``.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import uuid
from pathlib import Path
from types import ModuleType

BACKENDS = ("memory", "sqlite", "redis", "postgres")


def _load_servers() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "_servers.py"
    spec = importlib.util.spec_from_file_location("_threadkeep_test_servers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


servers = _load_servers()


def backend_url(kind: str, tmp_dir: Path | None = None) -> str:
    """Return a store URL of ``kind`` no other run shares (skip/fail when its server is down).

    Args:
        kind: ``memory``, ``sqlite``, ``redis`` or ``postgres``.
        tmp_dir: where a SQLite file goes (default: a new temporary directory).
    """
    run_id = uuid.uuid4().hex[:12]
    if tmp_dir is None and kind == "sqlite":
        tmp_dir = Path(tempfile.mkdtemp(prefix="tk-integrations-"))
    url: str = servers.isolated_url(kind, tmp_dir or Path("."), run_id)
    servers.require_reachable(url)
    return url


def cleanup(url: str) -> None:
    """Remove the keys or schema a run left on a shared server."""
    servers.cleanup_url(url)


def backend_from_env() -> str:
    """The backend named by ``TK_BACKEND`` (default ``sqlite``)."""
    kind = os.environ.get("TK_BACKEND", "sqlite")
    if kind not in BACKENDS:
        raise SystemExit(f"TK_BACKEND={kind!r}: expected one of {', '.join(BACKENDS)}")
    return kind


def readme_example(name: str) -> str:
    """The README's ```python integration=NAME block (run by that framework's suite)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    head = f"```python integration={name}\n"
    start = readme.index(head) + len(head)
    return readme[start : readme.index("```", start)]
