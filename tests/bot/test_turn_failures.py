"""A turn whose store fails while the user's message is being written (finding 2 of b07f6d3).

The store is a real SQLite store; the failure is injected through ``open_async(instrument=…)``:
the append is carried out, then its answer is lost, as when a connection drops after the write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import threadkeep
from threadkeep import BackendUnavailable
from threadkeep._rules.ops import AppendOp, AppendReadOp, GetOp, Op, Result
from threadkeep.backends import AsyncBackend
from threadkeep.bot import EchoBot, TurnIncomplete, answer

pytestmark = pytest.mark.anyio


class LosesAnAnswer:
    """Carries out every op; the first append's answer is lost (BackendUnavailable).

    A turn stores the user's message with ``append_read`` (the append answering the
    conversation too), and a reply in words with ``append_read`` as well.
    """

    def __init__(self, backend: AsyncBackend) -> None:
        self._backend = backend
        self.lost = False

    async def execute(self, op: Op[Any]) -> Result[Any]:
        result = await self._backend.execute(op)
        if isinstance(op, AppendOp | AppendReadOp) and not self.lost:
            self.lost = True
            raise BackendUnavailable("sqlite", "test", "connection dropped after the write")
        return result

    async def ping(self) -> None:
        await self._backend.ping()

    async def close(self) -> None:
        await self._backend.close()


async def test_a_message_whose_write_was_cut_off_is_not_called_unpersisted(tmp_path: Path) -> None:
    """On b07f6d3 this was a BackendUnavailable: the service answered `persisted: false`."""
    url = f"sqlite:///{tmp_path}/cut.db"
    async with await threadkeep.open_async(url, instrument=LosesAnAnswer) as store:
        with pytest.raises(TurnIncomplete) as failed:
            await answer(store, EchoBot(), "hello", contact_id="+1", idempotency_key="k1")
        assert failed.value.message_seq is None
        assert "may or may not have been stored" in str(failed.value)
        cid = failed.value.conversation_id
        assert [m.content for m in await store.messages(cid)] == ["hello"]  # it was
        done = await answer(store, EchoBot(), "hello", contact_id="+1", idempotency_key="k1")
        assert (done.message.seq, done.replayed) == (1, True)  # the lease was released
        assert [m.content for m in await store.messages(cid)] == ["hello", "echo: hello"]


class CannotTellTheConversation:
    """Carries out every op; the message's append answers no conversation (as PostgreSQL's
    does after a trim), and the read that follows it fails."""

    def __init__(self, backend: AsyncBackend) -> None:
        self._backend = backend
        self.appended = False

    async def execute(self, op: Op[Any]) -> Result[Any]:
        if self.appended and isinstance(op, GetOp):
            raise BackendUnavailable("sqlite", "test", "connection dropped before the read")
        result = await self._backend.execute(op)
        if isinstance(op, AppendReadOp):
            self.appended = True
            message, _ = result.value
            return Result(result.outcome, (message, None))
        return result

    async def ping(self) -> None:
        await self._backend.ping()

    async def close(self) -> None:
        await self._backend.close()


async def test_a_read_failing_after_the_message_was_stored_names_the_message(
    tmp_path: Path,
) -> None:
    """The conversation is read after the message only when the append could not tell it:
    that read's failure still reports the message as stored (its seq), not as unknown."""
    url = f"sqlite:///{tmp_path}/read.db"
    async with await threadkeep.open_async(url, instrument=CannotTellTheConversation) as store:
        conv = await store.start("+1")
        with pytest.raises(TurnIncomplete) as failed:
            await answer(store, EchoBot(), "hello", conversation_id=conv.id)
        assert failed.value.message_seq == 1
        assert [m.content for m in await store.messages(conv.id)] == ["hello"]
