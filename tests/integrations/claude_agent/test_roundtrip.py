"""Mirror then resume, re-pointed from the SDK repo's tests/test_example_redis_session_store.py.

``TestRoundTrip::test_mirror_then_resume`` there writes through the SDK's
``TranscriptMirrorBatcher`` into its example Redis store (fakeredis) and resumes with
``materialize_resume_session`` from a second client. Here the writer and the reader are
``ThreadkeepSessionStore``s over two separately opened stores on the same backend (one store on
memory://), and the batcher sends the main transcript's batch a second time, as it does when a
flush times out after it landed: the resumed transcript has each entry once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions, project_key_for_directory
from claude_agent_sdk._internal.session_resume import materialize_resume_session
from claude_agent_sdk._internal.transcript_mirror_batcher import TranscriptMirrorBatcher

from threadkeep import Retention
from threadkeep.integrations.claude_agent import ThreadkeepSessionStore

pytestmark = pytest.mark.anyio
SESSION_ID = "550e8400-e29b-41d4-a716-446655440000"


async def test_mirror_then_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_store: Callable[[], Any]
) -> None:
    # Isolate ~ so _copy_auth_files doesn't touch the real config.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setattr(Path, "home", staticmethod(lambda: home))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)

    cwd = tmp_path / "project"
    cwd.mkdir()
    project_key = project_key_for_directory(cwd)
    prefix = f"{uuid.uuid4()}:"
    writer = ThreadkeepSessionStore(
        open_store(), retention=Retention(ttl=None), tenant_prefix=prefix
    )

    errors: list[tuple[Any, ...]] = []

    async def on_error(key: Any, msg: Any) -> None:
        errors.append((key, msg))

    projects_dir = str(tmp_path / "config" / "projects")
    batcher = TranscriptMirrorBatcher(store=writer, projects_dir=projects_dir, on_error=on_error)

    main_path = f"{projects_dir}/{project_key}/{SESSION_ID}.jsonl"
    sub_path = f"{projects_dir}/{project_key}/{SESSION_ID}/subagents/agent-1.jsonl"
    main_entries = [
        {"type": "user", "uuid": "u1", "message": {"role": "user", "content": "hi"}},
        {"type": "assistant", "uuid": "a1", "message": {"role": "assistant"}},
    ]
    sub_entries = [{"type": "user", "uuid": "su1", "isSidechain": True}]

    batcher.enqueue(main_path, main_entries)
    batcher.enqueue(sub_path, sub_entries)
    await batcher.flush()
    # the same batch again (a retried flush): deduplicated by uuid
    batcher.enqueue(main_path, main_entries)
    await batcher.flush()
    assert errors == []

    # Resume via a freshly opened store on the same backend.
    reader = ThreadkeepSessionStore(
        open_store(), retention=Retention(ttl=None), tenant_prefix=prefix
    )
    opts = ClaudeAgentOptions(cwd=cwd, session_store=reader, resume=SESSION_ID)
    result = await materialize_resume_session(opts)
    assert result is not None
    try:
        assert result.resume_session_id == SESSION_ID
        jsonl = (result.config_dir / "projects" / project_key / f"{SESSION_ID}.jsonl").read_text()
        lines = [json.loads(line) for line in jsonl.splitlines()]
        assert lines == main_entries
        sub_jsonl = (
            result.config_dir
            / "projects"
            / project_key
            / SESSION_ID
            / "subagents"
            / "agent-1.jsonl"
        ).read_text()
        assert [json.loads(line) for line in sub_jsonl.splitlines()] == sub_entries
    finally:
        await result.cleanup()
    summaries = await reader.list_session_summaries(project_key)
    assert [s["session_id"] for s in summaries] == [SESSION_ID]
