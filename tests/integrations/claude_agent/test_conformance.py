"""The Claude Agent SDK's own SessionStore conformance kit, every contract, on every backend."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from claude_agent_sdk.testing import run_session_store_conformance
from claude_agent_sdk.testing.session_store_conformance import _has_optional

from threadkeep import Retention
from threadkeep.integrations.claude_agent import ThreadkeepSessionStore

pytestmark = pytest.mark.anyio
OPTIONAL = ("list_sessions", "list_session_summaries", "delete", "list_subkeys")


async def test_all_contracts_pass_with_nothing_skipped(open_store: Callable[[], Any]) -> None:
    made: list[ThreadkeepSessionStore] = []

    def make() -> ThreadkeepSessionStore:
        # every contract gets a store of its own: a fresh tenant prefix on the same backend
        made.append(
            ThreadkeepSessionStore(
                open_store(), retention=Retention(ttl=None), tenant_prefix=f"{uuid.uuid4()}:"
            )
        )
        return made[-1]

    probe = make()
    assert all(_has_optional(probe, name, frozenset()) for name in OPTIONAL)
    await run_session_store_conformance(make, skip_optional=frozenset())
    assert len(made) == 16  # our probe, the kit's probe and one store for each of 14 contracts
