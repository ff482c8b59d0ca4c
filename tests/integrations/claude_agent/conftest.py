"""Backends × APIs for the Claude Agent SDK suite: the fixtures of ../_fixtures.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

pytest_plugins = ("_fixtures",)
