"""The ``threadkeep`` command at its edges: missing extras, missing stores, retention, live chat."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from typing import Any

import pytest
from typer.testing import CliRunner

import threadkeep
from threadkeep.cli.main import app


@pytest.fixture
def runner():
    return CliRunner()


def test_the_command_without_the_cli_extra_names_the_extra():
    """A real interpreter in which typer cannot be imported, as without `[cli]`."""
    code = "import sys; sys.modules['typer'] = None; from threadkeep.cli import main; main()"
    r = subprocess.run(
        [sys.executable, "-c", code, "ls"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "pip install 'threadkeep[cli]'" in r.stderr


@pytest.mark.parametrize("command", [["ls"], ["show", "x"], ["export"], ["sweep"]])
def test_read_only_commands_refuse_a_store_that_does_not_exist(runner, tmp_path, command):
    path = tmp_path / "typo.db"
    r = runner.invoke(app, [*command, "--store", f"sqlite:///{path}"])
    assert r.exit_code == 1
    assert "no store at" in r.output and str(path) in r.output.replace("\n", "")
    assert not path.exists()


def test_chat_takes_retention_options(runner, tmp_path, monkeypatch):
    monkeypatch.delenv("THREADKEEP_BOT", raising=False)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    r = runner.invoke(app, ["chat", "--store", url, "--bot", "echo", "--ttl", "none"], input="hi\n")
    assert r.exit_code == 0, r.output
    with threadkeep.open(url) as s:
        (conv,) = s.list().items
        assert conv.expires_at is None
    r = runner.invoke(app, ["chat", "--store", url, "--bot", "echo", "--ttl", "soon"], input="")
    assert r.exit_code == 2
    assert "--ttl 'soon'" in r.output


def _read_until(proc: Any, text: str, seconds: float = 20) -> str:
    seen = ""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    while text not in seen and time.monotonic() < deadline:
        if sel.select(timeout=0.2):
            chunk = os.read(proc.stdout.fileno(), 4096).decode()
            if not chunk:
                break
            seen += chunk
    return seen


def test_chat_shows_an_agents_message_as_it_arrives(tmp_path):
    """No Enter pressed: the agent's reply appears by itself."""
    url = f"sqlite:///{tmp_path / 'live.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADKEEP_")}
    env["COLUMNS"] = "200"
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadkeep.cli.main", "chat", "--store", url, "--bot", "echo"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"hello\n")
        proc.stdin.flush()
        assert "bot> echo: hello" in _read_until(proc, "bot> echo: hello")
        with threadkeep.open(url) as s:
            (conv,) = s.list().items
            s.set_status(conv.id, "waiting_agent")
            s.append(conv.id, "agent", "Hi, this is Jorge from the office.")
        assert "agent> Hi, this is Jorge from the office." in _read_until(proc, "Jorge")
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_an_error_names_the_extra_with_its_brackets():
    """A redis:// store without the redis package: the extra is named as typed, `[redis]`."""
    code = "import sys; sys.modules['redis'] = None; from threadkeep.cli import main; main()"
    r = subprocess.run(
        [sys.executable, "-c", code, "ls", "--store", "redis://127.0.0.1:6379"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "pip install 'threadkeep[redis]'" in r.stderr and "Traceback" not in r.stderr


def test_user_text_is_printed_as_given_never_as_markup(runner, tmp_path):
    url = f"sqlite:///{tmp_path / 'markup.db'}"
    with threadkeep.open(url) as s:
        s.start("[b]x[/b]", stage="[i]")
    r = runner.invoke(app, ["show", "[/b]", "--store", url])  # an unknown id, in the error
    assert r.exit_code == 1
    assert r.exception is None or isinstance(r.exception, SystemExit)  # no MarkupError
    assert "'[/b]'" in r.output
    r = runner.invoke(app, ["ls", "--store", url])
    assert r.exit_code == 0
    assert "[b]x[/b]" in r.output and "[i]" in r.output
