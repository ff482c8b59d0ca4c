"""The optional LLM phrasing, against a local fake of the Messages API (never the network)."""

import pytest

from tests.fakes.process import FakeProcess
from threadkeep import AsyncStore, Conversation
from threadkeep.bot.seller import LLMPhraser, SellerBot

pytestmark = pytest.mark.anyio


def _bot(fake_llm: FakeProcess, timeout: float = 3.0) -> SellerBot:
    return SellerBot(phraser=LLMPhraser(api_key="test-key", base_url=fake_llm.url, timeout=timeout))


async def _first_reply(store: AsyncStore, bot: SellerBot) -> tuple[str, Conversation]:
    conv = await store.start("seller-llm")
    msg = await store.append(conv.id, "user", "Hi, I want to sell")
    reply = await bot.respond(store, conv, msg)
    assert reply is not None
    return reply, conv


async def test_llm_rewords_the_reply(store, fake_llm):
    reply, conv = await _first_reply(
        store, _bot(fake_llm, timeout=60)
    )  # no fallback on a busy host
    (sent,) = fake_llm.requests()
    path, headers, body = sent["path"], sent["headers"], sent["body"]
    assert path == "/v1/messages"
    # the key travels as x-api-key or, in newer SDKs, as a bearer token
    assert "test-key" in (headers.get("x-api-key", ""), headers.get("authorization", "")[7:])
    # the conversation as context(format="anthropic") gives it, the draft joined to its turn
    (turn,) = body["messages"]
    assert turn["role"] == "user"
    assert turn["content"][0] == {"type": "text", "text": "Hi, I want to sell"}
    draft = turn["content"][-1]["text"].split("Reword this reply: ", 1)[1]
    assert "condition" in draft  # the rules' question is handed over
    assert reply == "Sure! " + draft  # the fake's rewording
    assert (await store.get(conv.id)).stage == "Q1"


async def test_llm_error_falls_back_to_own_words(store, fake_llm):
    fake_llm.control(mode="error")
    reply, _ = await _first_reply(store, _bot(fake_llm))
    assert reply.startswith("Hi! I can help you sell your home")
    assert len(fake_llm.requests()) == 1  # no retries


async def test_slow_llm_falls_back_to_own_words(store, fake_llm):
    fake_llm.control(mode="slow")  # it answers after 10 s
    reply, _ = await _first_reply(store, _bot(fake_llm, timeout=0.3))
    assert reply.startswith("Hi! I can help you sell your home")


async def test_llm_reply_that_drops_the_question_is_ignored(store, fake_llm):
    fake_llm.control(mode="drop")  # "Sure, sounds good."
    reply, _ = await _first_reply(store, _bot(fake_llm, timeout=60))
    assert len(fake_llm.requests()) == 1  # the LLM answered, and its answer was refused
    assert reply.startswith("Hi! I can help you sell your home") and "condition" in reply


async def test_unreachable_llm_falls_back(store):
    bot = SellerBot(phraser=LLMPhraser(api_key="k", base_url="http://127.0.0.1:9", timeout=1))
    reply, _ = await _first_reply(store, bot)
    assert reply.startswith("Hi! I can help you sell your home")


def test_from_env():
    assert SellerBot.from_env({}).phraser is None
    bot = SellerBot.from_env(
        {
            "ANTHROPIC_API_KEY": "k",
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:1",
            "ANTHROPIC_MODEL": "m",
        }
    )
    assert bot.phraser == LLMPhraser(api_key="k", base_url="http://127.0.0.1:1", model="m")


def test_the_sdk_is_imported_lazily():
    import subprocess
    import sys

    code = "import sys, threadkeep.bot.seller; assert 'anthropic' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
