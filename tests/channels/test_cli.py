"""``threadkeep worker`` and ``threadkeep serve --no-worker`` on the command line."""

from __future__ import annotations

from typer.testing import CliRunner

from threadkeep.cli.main import app

runner = CliRunner()


def test_worker_and_no_worker_are_documented() -> None:
    worker = runner.invoke(app, ["worker", "--help"])
    assert worker.exit_code == 0 and "SIGTERM" in worker.output
    serve = runner.invoke(app, ["serve", "--help"])
    assert serve.exit_code == 0 and "--no-worker" in serve.output


def test_worker_with_a_bad_store_url_says_so_in_one_line() -> None:
    done = runner.invoke(app, ["worker", "--store", "nosuch://x"], env={"THREADKEEP_BOT": "echo"})
    assert done.exit_code == 1
    assert "InvalidInput" in done.output and "nosuch" in done.output
