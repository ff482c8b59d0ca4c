"""The edges (service, CLI, bot, web) stand on the public API and repeat none of its tables."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import threadkeep
from threadkeep import ROLES, EventKind
from threadkeep.service import schemas
from threadkeep.web.routes import STATIC_DIR

SRC = Path(threadkeep.__file__).parent
EDGES = ("service", "cli", "bot", "web", "playbooks", "crm", "channels")
#: Private imports still allowed, each with its reason (the core owner is making them public).
ALLOWED = {
    # the backend interface, for the metrics wrapper given to open_async(instrument=)
    ("service/runtime.py", "threadkeep.backends"),
    ("service/observe.py", "threadkeep.backends"),
}


def _threadkeep_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "threadkeep" or m.startswith("threadkeep.")}


def test_the_edges_import_only_public_names():
    files = [p for edge in EDGES for p in (SRC / edge).rglob("*.py")]
    files += [SRC / "demo.py", SRC / "streamlit.py"]
    private = set()
    for path in files:
        rel = path.relative_to(SRC).as_posix()
        for module in _threadkeep_imports(path):
            own = any(module.startswith(f"threadkeep.{edge}") for edge in EDGES)
            if module != "threadkeep" and not own and (rel, module) not in ALLOWED:
                private.add((rel, module))
    assert private == set(), "import these names from `threadkeep` instead"


def test_the_service_literals_are_the_librarys_enums():
    assert set(typing.get_args(schemas.StatusName)) == {s.value for s in threadkeep.Status}
    assert typing.get_args(schemas.RoleName) == tuple(ROLES)


def test_the_browser_knows_every_event_kind():
    source = (STATIC_DIR / "tk.js").read_text(encoding="utf-8")
    block = re.search(r"EVENT_KINDS = \[(.*?)\]", source, re.S)
    assert block is not None
    assert re.findall(r'"([a-z_.]+)"', block.group(1)) == [k.value for k in EventKind]


def test_the_default_store_url_is_written_once():
    """The service and the CLI use threadkeep.DEFAULT_STORE_URL; no copy of its value."""
    copies = [
        p.relative_to(SRC).as_posix()
        for edge in EDGES
        for p in (SRC / edge).rglob("*.py")
        if threadkeep.DEFAULT_STORE_URL in p.read_text(encoding="utf-8")
    ]
    assert copies == []


def test_visitors_follow_event_kinds_of_the_library():
    from threadkeep.service.visitors import VISITOR_EVENTS

    assert set(EventKind) >= VISITOR_EVENTS
