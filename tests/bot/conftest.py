"""Fixtures for the bot tests: an anyio backend and a real store (memory and SQLite)."""

import pytest

import threadkeep


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite"])
async def store(request, tmp_path):
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/bot.db"
    async with await threadkeep.open_async(url) as s:
        yield s
