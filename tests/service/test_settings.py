"""Settings from THREADKEEP_* variables: a bad value is one line, a misspelt name a warning."""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from tests._servers import wait_until
from tests.service._service_helpers import LiveServer
from threadkeep import InvalidInput
from threadkeep.cli.main import app as cli
from threadkeep.service.app import create_app
from threadkeep.service.settings import get_settings, load_settings, unknown_variables


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("THREADKEEP_PORT", "eighty", "valid integer"),
        ("THREADKEEP_PORT", "70000", "less than or equal to 65535"),
        ("THREADKEEP_WORKERS", "0", "greater than or equal to 1"),
        ("THREADKEEP_TTL", "-5", "greater than 0"),
        ("THREADKEEP_TTL", "a week", "valid number"),
        ("THREADKEEP_IDLE_AFTER", "0", "greater than 0"),
        ("THREADKEEP_WINDOW", "0", "greater than or equal to 1"),
        ("THREADKEEP_PUBLIC_CHAT", "maybe", "valid boolean"),
        ("THREADKEEP_MAX_BODY_BYTES", "12", "greater than or equal to 1024"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_and_the_rule(name, value, rule):
    with pytest.raises(InvalidInput) as caught:
        load_settings({"THREADKEEP_STORE": "memory://", name: value})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{name}={value!r} is not valid")
    assert rule in message
    assert caught.value.field == name


def test_good_values_are_read_as_the_environment_gives_them():
    settings = load_settings(
        {"THREADKEEP_TTL": "none", "THREADKEEP_WINDOW": "40", "THREADKEEP_PUBLIC_CHAT": "1"}
    )
    assert settings.ttl is None and settings.window == 40 and settings.public_chat is True
    assert settings.retention().ttl is None


@pytest.fixture
def serve_env(monkeypatch):
    """The environment restored after `serve`, which exports STORE, HOST, PORT and WORKERS."""
    for name in ("STORE", "HOST", "PORT", "WORKERS"):
        monkeypatch.setenv(f"THREADKEEP_{name}", "")
        monkeypatch.delenv(f"THREADKEEP_{name}")
    return monkeypatch


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("THREADKEEP_TTL", "-5", ["THREADKEEP_TTL='-5' is not valid", "greater than 0"]),
        # a factory that raises: the setting and the cause, not the factory's traceback
        ("THREADKEEP_BOT", "json:dumps", ["THREADKEEP_BOT 'json:dumps'", "TypeError: dumps()"]),
    ],
)
def test_serve_prints_a_bad_value_in_one_line(serve_env, name, value, said):
    serve_env.setenv(name, value)
    result = CliRunner().invoke(cli, ["serve", "--store", "memory://"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert all(part in lines[0] for part in said), lines[0]


def test_unknown_variables_are_named():
    environ = {
        "THREADKEEP_TLL": "60",  # a typo of TTL
        "THREADKEEP_STORE": "memory://",
        "THREADKEEP_SCREENSHOTS": "/tmp/x",  # read by `make screenshots`, not a setting
        "OTHER": "1",
    }
    assert unknown_variables(environ) == ["THREADKEEP_TLL"]


def test_an_unknown_variable_is_a_warning_at_start_up(serve_env, caplog):
    serve_env.setenv("THREADKEEP_TLL", "60")
    serve_env.setenv("THREADKEEP_STORE", "memory://")
    caplog.set_level(logging.WARNING, logger="threadkeep.service")
    get_settings.cache_clear()
    try:
        create_app()  # from the environment, as `uvicorn --factory …:create_app` builds it
    finally:
        get_settings.cache_clear()
    warned = [r.getMessage() for r in caplog.records if "THREADKEEP_TLL" in r.getMessage()]
    assert warned == ["THREADKEEP_TLL is not a threadkeep setting (a typo?); it is ignored"]

    refused = CliRunner().invoke(cli, ["serve", "--store", "memory://", "--host", "0.0.0.0"])
    assert "warning: THREADKEEP_TLL is not a threadkeep setting (a typo?); ignored" in (
        refused.output
    )


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_serve_warns_about_an_unknown_variable_once(tmp_path, workers):
    """Once before the workers start, not again in each worker's log."""
    server = LiveServer("memory://", tmp_path / "serve.log", workers=workers, THREADKEEP_TLL="60")
    server.start()
    try:  # each worker builds its app before its startup completes

        def started() -> bool:
            return bool(server.log_text().count("Application startup complete") == workers)

        wait_until(f"{workers} worker(s) started", started)
    finally:
        server.stop()
    log = server.log_text()
    assert log.count("THREADKEEP_TLL") == 1, log
    assert "warning: THREADKEEP_TLL is not a threadkeep setting (a typo?); ignored" in log
