"""``threadkeep chat``: the demo seller bot in the terminal, resumable, in the web's store."""

import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner, Result

import threadkeep
from threadkeep.bot.seller import HANDOFF_REPLY, SellerState
from threadkeep.cli.main import app


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'chat.db'}"


@pytest.fixture(autouse=True)
def _no_llm(monkeypatch):
    # The seller bot asks Claude only when a key is set; these tests use its own words.
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("THREADKEEP_BOT", raising=False)


def chat(runner: CliRunner, url: str, *args: str, input: str) -> Result:
    r = runner.invoke(app, ["chat", "--store", url, *args], input=input)
    assert r.exit_code == 0, r.output
    return r


def test_seller_bot_resumes_by_contact(runner, url):
    r = chat(runner, url, "--contact", "+1 555 0100", input="Hi, I want to sell\n")
    assert "bot> Hi! I can help you sell your home" in r.stdout
    assert "condition" in r.stdout  # Q1 is asked
    with threadkeep.open(url) as s:
        (conv,) = s.list().items
        assert (conv.contact_id, conv.channel, conv.stage) == ("+1 555 0100", "cli", "Q1")

    # A second run as the same contact continues the same conversation, history first.
    r = chat(runner, url, "--contact", "+1 555 0100", input="It needs a new roof\n")
    assert f"conversation {conv.id}" in r.stderr
    history = r.stdout.index("you> Hi, I want to sell")  # the terminal echoes the new line itself
    assert history < r.stdout.index("bot> Noted: condition needs work (roof)")
    with threadkeep.open(url) as s:
        assert [c.id for c in s.list().items] == [conv.id]
        assert s.get(conv.id).stage == "Q2"
        assert s.get(conv.id).message_count == 4
        state = s.load_state(conv.id, SellerState).value
        assert state is not None
        assert state.condition == "needs_work" and state.condition_issues == ["roof"]


def test_resume_by_conversation_id(runner, url):
    chat(runner, url, "--contact", "seller-1", input="hello\nneeds work on the kitchen\n")
    with threadkeep.open(url) as s:
        (conv,) = s.list().items
    # --conversation wins over the (default) contact: the same conversation carries on.
    r = chat(runner, url, "--conversation", conv.id, input="around 450k\n")
    assert "you> needs work on the kitchen" in r.stdout
    assert "Noted: price $450,000" in r.stdout
    with threadkeep.open(url) as s:
        assert s.get(conv.id).stage == "Q3"
        assert s.get(conv.id).message_count == 6
        assert s.find_open("cli-user") is None  # no conversation was started for the default


def test_web_and_terminal_share_the_conversation(runner, url):
    # A conversation started elsewhere (the web's POST /v1/chat stores it the same way).
    with threadkeep.open(url) as s:
        conv = s.start("web-abc", channel="web")
        s.append(conv.id, "user", "Hi from the browser")
        s.append(conv.id, "assistant", "Hi! What condition is the property in?")
    r = chat(runner, url, "--contact", "web-abc", input="good shape\n")
    assert "you> Hi from the browser" in r.stdout
    assert "bot> Hi! What condition is the property in?" in r.stdout
    with threadkeep.open(url) as s:
        assert s.get(conv.id).message_count == 4


def test_talk_to_a_human_pauses_the_bot(runner, url):
    r = chat(runner, url, "--contact", "me", input="hi\ncan I talk to a human?\nhello?\n")
    assert f"bot> {HANDOFF_REPLY}" in r.stdout
    assert "the bot is paused" in r.stderr
    with threadkeep.open(url) as s:
        (conv,) = s.list().items
        assert conv.status == "waiting_agent"
        roles = [m.role for m in s.messages(conv.id)]
    assert roles == ["user", "assistant", "user", "assistant", "user"]  # "hello?": no reply


def test_closed_conversation_starts_a_new_one(runner, url):
    with threadkeep.open(url) as s:
        old = s.start("me")
        s.append(old.id, "user", "x")
        s.close_conversation(old.id)
    r = chat(runner, url, "--conversation", old.id, input="hi again\n")
    assert "is closed; starting a new one" in r.stderr
    with threadkeep.open(url) as s:
        new = s.find_open("me")
        assert new is not None and new.id != old.id
        assert [m.content for m in s.messages(new.id)][0] == "hi again"
        assert s.get(old.id).message_count == 1


def test_echo_bot(runner, url):
    r = chat(runner, url, "--bot", "echo", input="hi\nthere\n")
    assert "bot> echo: hi" in r.stdout and "bot> echo: there" in r.stdout


def test_unknown_bot(runner, url):
    r = runner.invoke(app, ["chat", "--store", url, "--bot", "nope"], input="")
    assert r.exit_code == 2
    assert "is not a bot" in r.output


def test_unknown_conversation(runner, url):
    r = runner.invoke(app, ["chat", "--store", url, "--conversation", "nope"], input="")
    assert r.exit_code == 1
    assert "ConversationNotFound" in r.output


def test_live_agent_replies_and_close_in_a_real_terminal_session(tmp_path):
    """A person replies and then closes from another screen while the terminal chat runs."""
    url = f"sqlite:///{tmp_path / 'live.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "THREADKEEP_BOT")}
    env["COLUMNS"] = "400"
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadkeep.cli.main", "chat", "--store", url, "--contact", "tty"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin and proc.stdout
    stdin, stdout = proc.stdin, proc.stdout

    def say(text: str) -> None:
        stdin.write(text + "\n")
        stdin.flush()

    def next_line(prefix: str) -> str:
        while True:
            line = stdout.readline()
            assert line, f"the chat ended before a line starting {prefix!r}"
            if line.startswith(prefix):
                return line.rstrip("\n")

    try:
        say("agent please")
        assert next_line("bot> ") == f"bot> {HANDOFF_REPLY}"
        with threadkeep.open(url) as s:
            conv = s.find_open("tty")
            assert conv is not None and conv.status == "waiting_agent"
            s.append(conv.id, "agent", "Hi, I'm Dana from the team.")
        say("great")  # the bot stays silent; the agent's message shows up (as it arrives)
        assert next_line("agent> ") == "agent> Hi, I'm Dana from the team."
        with threadkeep.open(url) as s:
            deadline = time.monotonic() + 30
            while s.get(conv.id).message_count < 4 and time.monotonic() < deadline:
                time.sleep(0.05)  # "great" is stored (the bot stays silent)
            s.close_conversation(conv.id)
        say("hello again")  # the closed conversation gives way to a new one
        assert next_line("bot> ").startswith("bot> Hi! I can help you sell your home")
        say("/quit")
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "continuing in" in err
    with threadkeep.open(url) as s:
        new = s.find_open("tty")
        assert new is not None and new.id != conv.id
        assert [m.role for m in s.messages(conv.id)] == ["user", "assistant", "agent", "user"]


def test_a_busy_turn_is_reported_and_the_chat_goes_on(runner, url):
    with threadkeep.open(url) as s:
        conv = s.start("me")
        with s.turn(conv.id, lease=60):  # another screen is in the middle of a turn
            r = chat(runner, url, "--contact", "me", "--wait", "0", input="hi\n/quit\n")
        assert "another screen is answering" in r.stderr
        assert s.get(conv.id).message_count == 0  # nothing half-written
    r = chat(runner, url, "--contact", "me", input="hi\n")  # the turn is free again
    assert "bot> Hi! I can help you sell your home" in r.stdout
