"""The ``threadkeep`` command (extra ``[cli]``); ``main`` is its entry point.

``main`` imports the command only when it runs, so a ``threadkeep`` installed without the
``[cli]`` extra says in one line which extra to install instead of showing a traceback.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Run the ``threadkeep`` command."""
    try:
        from threadkeep.cli.main import main as run
    except ImportError as exc:
        sys.stderr.write(
            f"threadkeep: the command needs the cli extra ({exc.name or exc} is not installed): "
            "pip install 'threadkeep[cli]'\n"
        )
        raise SystemExit(1) from None
    run()
