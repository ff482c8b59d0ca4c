import json

import pytest
from typer.testing import CliRunner

import threadkeep
from threadkeep.cli.main import app


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'a.db'}"


def _seed(url):
    with threadkeep.open(url) as s:
        c = s.start("c1", stage="Q0", agent_id="bot", metadata={"x": 1})
        s.append(c.id, "user", "hi", metadata={"m": 1})
        s.append(c.id, "assistant", "hello")
        s.save_state(c.id, {"a": 1})
        s.save_state(c.id, {"a": 2})
        s.remember("c1", "name", "Bob", tier="high")
        d = s.start("c2")
        s.append(d.id, "user", "bye")
        s.close_conversation(d.id)
        e = s.start("c3", stage="S1")
        s.append(e.id, "user", "help")
        s.set_status(e.id, "waiting_agent")
        return c.id


def _snapshot(url):
    with threadkeep.open(url) as s:
        out = {}
        for c in s.list(limit=100).items:
            msgs = [(m.role, m.content, m.metadata) for m in s.messages(c.id)]
            out[c.contact_id] = (
                c.status,
                c.stage,
                c.agent_id,
                {k: v for k, v in c.metadata.items() if k != "imported_from"},
                msgs,
                s.load_state(c.id).value,
                [(f.key, f.value, f.tier) for f in s.recall(c.contact_id)],
            )
        return out


def test_ls_and_json(runner, url):
    _seed(url)
    r = runner.invoke(app, ["ls", "--store", url])
    assert r.exit_code == 0, r.output
    assert "c1" in r.output and "c2" in r.output
    r = runner.invoke(app, ["ls", "--store", url, "--json", "--limit", "1", "--all"])
    assert r.exit_code == 0
    assert len([json.loads(line) for line in r.stdout.splitlines()]) == 3
    r = runner.invoke(app, ["ls", "--store", url, "--json", "--status", "closed"])
    assert [json.loads(x)["contact_id"] for x in r.stdout.splitlines()] == ["c2"]


def test_store_from_env(runner, url):
    _seed(url)
    r = runner.invoke(app, ["ls", "--json"], env={"THREADKEEP_STORE": url})
    assert r.exit_code == 0
    assert len(r.stdout.splitlines()) == 3


def test_show(runner, url):
    cid = _seed(url)
    r = runner.invoke(app, ["show", cid, "--store", url, "--json"])
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert [m["content"] for m in data["messages"]] == ["hi", "hello"]
    assert data["state"] == {"version": 2, "value": {"a": 2}}
    r = runner.invoke(app, ["show", cid, "--store", url])
    assert r.exit_code == 0 and "hello" in r.output


def test_unknown_conversation(runner, url):
    r = runner.invoke(app, ["show", "nope", "--store", url])
    assert r.exit_code == 1
    assert "ConversationNotFound" in r.output
    assert "Traceback" not in r.output


def test_bad_store_url(runner):
    r = runner.invoke(app, ["ls", "--store", "nosuch://x"])
    assert r.exit_code == 1
    assert "error" in r.output


def test_export_import_round_trip(runner, url, tmp_path):
    _seed(url)
    dump = tmp_path / "e.jsonl"
    r = runner.invoke(app, ["export", "--store", url, "-o", str(dump)])
    assert r.exit_code == 0, r.output
    assert len(dump.read_text().splitlines()) == 3
    url2 = f"sqlite:///{tmp_path / 'b.db'}"
    r = runner.invoke(app, ["import", str(dump), "--store", url2])
    assert r.exit_code == 0, r.output
    before = _snapshot(url2)
    assert before == _snapshot(url)
    with threadkeep.open(url2) as s:
        events_before = [e.id for e in s.events()]
    r = runner.invoke(app, ["import", str(dump), "--store", url2])
    assert r.exit_code == 0, r.output
    assert _snapshot(url2) == before
    with threadkeep.open(url2) as s:
        assert s.counts().total == 3
        assert [e.id for e in s.events()] == events_before  # nothing was written


def test_export_stdout(runner, url):
    _seed(url)
    r = runner.invoke(app, ["export", "--store", url])
    assert r.exit_code == 0
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert {x["conversation"]["contact_id"] for x in lines} == {"c1", "c2", "c3"}


def test_import_malformed(runner, url, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"conversation": {"id": "a", "contact_id": "c"}}\n\n{not json\n')
    r = runner.invoke(app, ["import", str(bad), "--store", url])
    assert r.exit_code == 1
    assert "line 3" in r.output and "Traceback" not in r.output
    bad.write_text("[1]\n")
    r = runner.invoke(app, ["import", str(bad), "--store", url])
    assert r.exit_code == 1 and "line 1" in r.output
    with threadkeep.open(url) as s:
        assert s.counts().total == 0


def test_sweep(runner, url):
    r = runner.invoke(app, ["sweep", "--store", url, "--dry-run"])
    assert r.exit_code == 0
    assert "dry run" in r.stdout


def test_serve_without_service(runner, url):
    try:
        import threadkeep.service.server  # noqa: F401
    except ImportError:
        r = runner.invoke(app, ["serve", "--store", url])
        assert r.exit_code == 2
        assert "threadkeep[service]" in r.output
    else:
        pytest.skip("the service is installed")


def test_demo_runs(tmp_path, capsys):
    from threadkeep.demo import run

    run(f"sqlite:///{tmp_path / 'demo.db'}")
    out = capsys.readouterr().out
    assert "state.saved" in out and "close      -> closed" in out
