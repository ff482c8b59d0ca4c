"""The optional LLM phrasing, against a local fake of the Messages API (never the network)."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from threadkeep import AsyncStore, Conversation
from threadkeep.bot.seller import LLMPhraser, SellerBot

pytestmark = pytest.mark.anyio


class FakeAnthropic:
    """A tiny HTTP server on 127.0.0.1 answering POST /v1/messages like the Messages API."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.text = "Lovely! What shape is the home in, any repairs needed?"
        self.requests: list[tuple[str, Any, Any]] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(
                    (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                if fake.mode == "slow":
                    fake.release.wait(10)
                if fake.mode == "error":
                    self._send(
                        500, {"type": "error", "error": {"type": "api_error", "message": "boom"}}
                    )
                    return
                self._send(
                    200,
                    {
                        "id": "msg_fake",
                        "type": "message",
                        "role": "assistant",
                        "model": body["model"],
                        "content": [{"type": "text", "text": fake.text}],
                        "stop_reason": "end_turn",
                        "stop_sequence": None,
                        "usage": {"input_tokens": 10, "output_tokens": 10},
                    },
                )

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (slow mode)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic()
    yield server
    server.close()


def _bot(fake: FakeAnthropic, timeout: float = 3.0) -> SellerBot:
    return SellerBot(phraser=LLMPhraser(api_key="test-key", base_url=fake.url, timeout=timeout))


async def _first_reply(store: AsyncStore, bot: SellerBot) -> tuple[str, Conversation]:
    conv = await store.start("seller-llm")
    msg = await store.append(conv.id, "user", "Hi, I want to sell")
    reply = await bot.respond(store, conv, msg)
    assert reply is not None
    return reply, conv


async def test_llm_rewords_the_reply(store, fake):
    reply, conv = await _first_reply(store, _bot(fake, timeout=60))  # no fallback on a busy host
    assert reply == fake.text
    path, headers, body = fake.requests[0]
    assert path == "/v1/messages"
    # the key travels as x-api-key or, in newer SDKs, as a bearer token
    assert "test-key" in (headers.get("x-api-key", ""), headers.get("authorization", "")[7:])
    # the conversation as context(format="anthropic") gives it, the draft joined to its turn
    (turn,) = body["messages"]
    assert turn["role"] == "user"
    assert turn["content"][0] == {"type": "text", "text": "Hi, I want to sell"}
    assert "condition" in turn["content"][-1]["text"]  # the rules' question is handed over
    assert (await store.get(conv.id)).stage == "Q1"


async def test_llm_error_falls_back_to_own_words(store, fake):
    fake.mode = "error"
    reply, _ = await _first_reply(store, _bot(fake))
    assert reply.startswith("Hi! I can help you sell your home")
    assert len(fake.requests) == 1  # no retries


async def test_slow_llm_falls_back_to_own_words(store, fake):
    fake.mode = "slow"
    reply, _ = await _first_reply(store, _bot(fake, timeout=0.3))
    assert reply.startswith("Hi! I can help you sell your home")


async def test_llm_reply_that_drops_the_question_is_ignored(store, fake):
    fake.text = "Great to hear from you."
    reply, _ = await _first_reply(store, _bot(fake, timeout=60))
    assert len(fake.requests) == 1  # the LLM answered, and its answer was refused
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
