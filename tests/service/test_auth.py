"""API keys, tenants and the loopback-only mode."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.service._service_helpers import client_for
from threadkeep import InvalidInput
from threadkeep.cli.main import app as cli
from threadkeep.service.server import check_exposure
from threadkeep.service.settings import ServiceSettings


@pytest.fixture
def two_tenants(store_url, tenant):
    """Clients of one app for two tenants, and one without a key."""
    other = tenant + "-b"
    keys = f"{tenant}:key-a,{other}:key-b"
    with (
        client_for(store_url, api_keys=keys, key="key-a") as a,
        client_for(store_url, api_keys=keys, key="key-b") as b,
        client_for(store_url, api_keys=keys) as anonymous,
    ):
        yield a, b, anonymous


def test_a_key_never_sees_another_tenants_data(two_tenants, tenant):
    a, b, _ = two_tenants
    chat = a.post("/v1/chat", json={"message": "secret", "contact_id": "+1555"}).json()
    cid = chat["conversation_id"]
    assert a.get(f"/v1/conversations/{cid}").json()["tenant"] == tenant

    base = f"/v1/conversations/{cid}"
    refused = [
        b.get(base),
        b.get(f"{base}/messages"),
        b.get(f"{base}/state"),
        b.put(f"{base}/state", json={"value": 1}),
        b.post(f"{base}/messages", json={"role": "user", "content": "x"}),
        b.post(f"{base}/status", json={"status": "closed"}),
        b.put(f"{base}/stage", json={"stage": "Q9"}),
        b.post("/v1/chat", json={"message": "x", "conversation_id": cid}),
        b.delete(base),
    ]
    for resp in refused:
        assert resp.status_code == 404, (resp.request.method, resp.request.url, resp.text)
        assert resp.json()["error"]["type"] == "ConversationNotFound"

    assert b.get("/v1/conversations").json()["items"] == []
    assert b.get("/v1/counts").json()["total"] == 0
    assert "secret" not in b.get("/v1/events?from_start=true&follow=false").text
    # the same contact id in tenant b is another conversation
    mine = b.post("/v1/chat", json={"message": "hi", "contact_id": "+1555"}).json()
    assert mine["conversation_id"] != cid
    # and nothing of a's changed
    conv = a.get(base).json()
    assert (conv["message_count"], conv["status"], conv["stage"]) == (2, "active", None)
    assert a.get(f"{base}/state").json()["version"] == 0


def test_requests_without_a_valid_key_get_401(two_tenants):
    _, _, anonymous = two_tenants
    resp = anonymous.get("/v1/conversations")
    assert resp.status_code == 401
    assert resp.json()["error"]["type"] == "Unauthorized"
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    wrong = anonymous.get("/v1/conversations", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    basic = anonymous.get("/v1/conversations", headers={"Authorization": "Basic a2V5LWE="})
    assert basic.status_code == 401
    assert anonymous.post("/v1/chat", json={"message": "hi"}).status_code == 401
    # health, readiness and metrics need no key
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").status_code == 200
    assert anonymous.get("/metrics").status_code == 200


def test_a_key_may_also_come_as_x_api_key_or_query(two_tenants):
    _, _, anonymous = two_tenants
    assert anonymous.get("/v1/counts", headers={"X-API-Key": "key-a"}).status_code == 200
    # EventSource cannot send headers: the events stream accepts ?api_key=
    assert anonymous.get("/v1/events?follow=false&api_key=key-b").status_code == 200
    assert anonymous.get("/v1/counts?api_key=key-b").status_code == 401  # only there


def test_keys_from_a_file(tmp_path, tenant):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"file-key": tenant}))
    with client_for("memory://", api_keys_file=path, key="file-key") as api:
        cid = api.post("/v1/chat", json={"message": "hi"}).json()["conversation_id"]
        assert api.get(f"/v1/conversations/{cid}").json()["tenant"] == tenant
    with client_for("memory://", api_keys_file=path, api_keys="x:env-key", key="env-key") as api:
        assert api.get("/v1/conversations").status_code == 200


@pytest.mark.parametrize(
    ("keys", "file_text"),
    [
        ("no-colon", None),
        ("a:k1,b:k1", None),
        ("bad tenant\x00:k", None),
        ("", "not json"),
        ("", '["a list"]'),
    ],
)
def test_malformed_keys_stop_the_start(tmp_path, keys, file_text):
    settings = ServiceSettings(store="memory://", api_keys=keys)
    if file_text is not None:
        path = tmp_path / "keys.json"
        path.write_text(file_text)
        settings = ServiceSettings(store="memory://", api_keys_file=path)
    with pytest.raises(InvalidInput):
        settings.tenants_by_key()


def test_without_keys_only_loopback_clients_are_served(caplog):
    caplog.set_level("INFO", logger="threadkeep.service")
    with client_for("memory://") as local:
        resp = local.post("/v1/chat", json={"message": "hi"})
        assert resp.status_code == 200
        conv = local.get(f"/v1/conversations/{resp.json()['conversation_id']}").json()
        assert conv["tenant"] == "default"
    assert any("loopback clients only" in r.getMessage() for r in caplog.records)
    for address in ("192.168.1.20", "10.0.0.1", "testclient"):
        with client_for("memory://", client=(address, 4000)) as remote:
            resp = remote.get("/v1/conversations")
            assert resp.status_code == 403
            assert "loopback" in resp.json()["error"]["message"]
    with client_for("memory://", client=("::1", 4000)) as local6:
        assert local6.get("/v1/conversations").status_code == 200


def test_refuses_a_public_host_without_keys():
    with pytest.raises(InvalidInput, match="without API keys"):
        check_exposure(ServiceSettings(host="0.0.0.0"))
    check_exposure(ServiceSettings(host="0.0.0.0", api_keys="t:k"))
    check_exposure(ServiceSettings(host="127.0.0.1"))
    check_exposure(ServiceSettings(host="::1"))


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--host", "0.0.0.0"], {}, "without API keys"),
        (["--store", "foo://x", "--workers", "4"], {}, "unknown store scheme 'foo'"),
        (["--store", "redis://127.0.0.1/0?bogus=1"], {}, "unknown option 'bogus'"),
        (["--workers", "4"], {"THREADKEEP_API_KEYS": "no-colon"}, "tenant:key pairs"),
    ],
)
def test_serve_refuses_bad_settings_in_one_line(monkeypatch, args, env, says):
    for name in ("STORE", "HOST", "PORT", "WORKERS", "API_KEYS", "API_KEYS_FILE"):
        monkeypatch.delenv(f"THREADKEEP_{name}", raising=False)
    # run() exports its arguments for the workers; setenv makes monkeypatch restore them
    for name in ("STORE", "HOST", "PORT", "WORKERS"):
        monkeypatch.setenv(f"THREADKEEP_{name}", "")
        monkeypatch.delenv(f"THREADKEEP_{name}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store = [] if "--store" in args else ["--store", "memory://"]
    result = CliRunner().invoke(cli, ["serve", *store, *args])
    assert result.exit_code == 1
    assert says in result.output
    assert "Traceback" not in result.output


def test_cors_only_for_configured_origins():
    with client_for("memory://", cors_origins="https://site.example") as api:
        allowed = api.options(
            "/v1/chat",
            headers={
                "Origin": "https://site.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,authorization",
            },
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://site.example"
        other = api.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    with client_for("memory://") as api:
        plain = api.get("/healthz", headers={"Origin": "https://site.example"})
        assert "access-control-allow-origin" not in plain.headers
