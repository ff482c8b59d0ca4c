"""Security an auditor can check: hashed API keys, rate limits, and logs without secrets.

Issue 15, item 4 (the service's part).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.service._service_helpers import LiveServer, client_for
from threadkeep import InvalidInput
from threadkeep.cli.main import app as cli
from threadkeep.service.limits import RateLimited, RateLimiter
from threadkeep.service.settings import ServiceSettings, hash_key

SECRET = "v" * 32
CLIENT_A = ("203.0.113.7", 40000)
CLIENT_B = ("203.0.113.8", 40000)


def made_key(tenant: str) -> tuple[str, str, dict[str, str]]:
    """Run ``threadkeep api-key``: the key, the THREADKEEP_API_KEYS entry, the file entry."""
    result = CliRunner().invoke(cli, ["api-key", tenant])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    key = lines[0].rsplit(" ", 1)[1]
    entry = lines[1].rsplit(" ", 1)[1]
    file_entry = json.loads(lines[2].split(": ", 1)[1])
    return key, entry, file_entry


def test_the_api_key_command_makes_a_key_configured_by_its_hash(tmp_path: Path) -> None:
    key, entry, file_entry = made_key("acme")
    assert key.startswith("tk_") and len(key) > 40
    assert entry == f"acme:{hash_key(key)}" and key not in entry
    assert file_entry == {hash_key(key): "acme"}
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(file_entry))
    url = f"sqlite:///{tmp_path}/k.db"
    for settings in ({"api_keys": entry}, {"api_keys_file": keys_file}):
        with client_for(url, client=CLIENT_A, **settings) as api:
            good = api.get("/v1/counts", headers={"Authorization": f"Bearer {key}"})
            assert good.status_code == 200, good.text
            # The hash is not a key: a reader of the file cannot use what it holds.
            stolen = api.get("/v1/counts", headers={"Authorization": f"Bearer {hash_key(key)}"})
            assert stolen.status_code == 401


def test_plain_and_hashed_keys_work_side_by_side(tmp_path: Path) -> None:
    keys = f"a:plain-key-of-a,b:{hash_key('key-of-b')}"
    with client_for(f"sqlite:///{tmp_path}/k.db", client=CLIENT_A, api_keys=keys) as api:
        made = api.post(
            "/v1/conversations",
            json={"contact_id": "c"},
            headers={"Authorization": "Bearer key-of-b"},
        )
        assert made.status_code == 201, made.text
        other = api.get(
            f"/v1/conversations/{made.json()['id']}",
            headers={"Authorization": "Bearer plain-key-of-a"},
        )
        assert other.status_code == 404  # tenant a does not see b's


@pytest.mark.parametrize("bad", ["sha256:abc", "sha256:" + "G" * 64, "sha256:" + "A" * 64])
def test_a_malformed_hashed_key_stops_the_start(bad: str) -> None:
    with pytest.raises(InvalidInput, match="64 lowercase hex digits"):
        ServiceSettings(api_keys=f"t:{bad}").tenants_by_key()


def test_a_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(3, 60, clock=lambda: now[0])
    for _ in range(3):
        limiter.take("k", "API key")
    with pytest.raises(RateLimited) as refused:
        limiter.take("k", "API key")
    assert refused.value.retry_after == 20  # one request per 20 s
    limiter.take("other", "API key")  # another key has its own bucket
    now[0] = 19.0
    with pytest.raises(RateLimited) as again:
        limiter.take("k", "API key")
    assert again.value.retry_after == 1
    now[0] = 20.0
    limiter.take("k", "API key")
    RateLimiter(0, 60).take("k", "API key")  # 0: no limit


def test_a_key_over_its_limit_gets_429_with_retry_after(tmp_path: Path) -> None:
    keys = "a:key-a,a:key-a2"
    settings = {"api_keys": keys, "rate_limit": 3, "rate_window": 3.0}
    with client_for(f"sqlite:///{tmp_path}/r.db", client=CLIENT_A, **settings) as api:  # type: ignore[arg-type]
        a = {"Authorization": "Bearer key-a"}
        assert [api.get("/v1/counts", headers=a).status_code for _ in range(3)] == [200] * 3
        refused = api.get("/v1/counts", headers=a)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["type"] == "RateLimited"
        # Per key: the tenant's other key is not limited by this one's requests.
        assert api.get("/v1/counts", headers={"Authorization": "Bearer key-a2"}).status_code == 200
        time.sleep(1.05)
        assert api.get("/v1/counts", headers=a).status_code == 200
        documented = api.get("/openapi.json").json()["paths"]["/v1/chat"]["post"]["responses"]
        assert "429" in documented


def test_a_visitor_over_its_limit_gets_429_and_others_do_not(tmp_path: Path) -> None:
    """A public chat cannot be used to flood the store: per visitor, per client address."""
    settings = {
        "api_keys": "t:key-t",
        "public_chat": True,
        "public_tenant": "t",
        "visitor_secret": SECRET,
        "visitor_rate_limit": 2,
        "rate_window": 60.0,
    }
    url = f"sqlite:///{tmp_path}/v.db"
    with client_for(url, client=CLIENT_A, **settings) as a:  # type: ignore[arg-type]
        first = a.post("/v1/chat", json={"message": "hi", "contact_id": "web-" + "a" * 20})
        assert first.status_code == 200, first.text
        token = {"Authorization": f"Bearer {first.json()['visitor_token']}"}
        # The same address without a token: its bucket (1 left, then empty).
        assert a.post("/v1/chat", json={"message": "hi"}).status_code == 200
        flood = a.post("/v1/chat", json={"message": "hi"})
        assert flood.status_code == 429 and int(flood.headers["Retry-After"]) == 30
        # The visitor with its token has a bucket of its own (its contact), also of 2.
        cid = first.json()["conversation_id"]
        assert a.get(f"/v1/conversations/{cid}/messages", headers=token).status_code == 200
        assert a.get(f"/v1/conversations/{cid}/messages", headers=token).status_code == 200
        assert a.get(f"/v1/conversations/{cid}/messages", headers=token).status_code == 429
        # Agents are not visitors: the key's own limit (default) applies.
        agent = {"Authorization": "Bearer key-t"}
        assert a.get("/v1/counts", headers=agent).status_code == 200
    # Another client address is another visitor.
    with client_for(url, client=CLIENT_B, **settings) as b:  # type: ignore[arg-type]
        assert b.post("/v1/chat", json={"message": "hi"}).status_code == 200


def test_the_access_log_holds_no_secrets(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """No API key (header or query), visitor token, or message content in the server's log."""
    key = "tk_secret-key-0123456789"
    server = live_server(
        f"sqlite:///{tmp_path}/log.db",
        THREADKEEP_API_KEYS=f"t:{hash_key(key)}",
        THREADKEEP_PUBLIC_CHAT="true",
        THREADKEEP_PUBLIC_TENANT="t",
        THREADKEEP_VISITOR_SECRET=SECRET,
        THREADKEEP_LOG_LEVEL="DEBUG",
    )
    base = server.url
    words = "my card is 4111-1111-1111-1111, words-that-must-not-be-logged"
    chat = httpx.post(base + "/v1/chat", json={"message": words}, timeout=10)
    assert chat.status_code == 200, chat.text
    token = chat.json()["visitor_token"]
    cid = chat.json()["conversation_id"]
    auth = {"Authorization": f"Bearer {key}"}
    appended = httpx.post(
        f"{base}/v1/conversations/{cid}/messages",
        json={"role": "agent", "content": words},
        headers={**auth, "Idempotency-Key": "idem-0123"},
        timeout=10,
    )
    assert appended.status_code == 201, appended.text
    for query in (f"api_key={key}", f"visitor_token={token}"):
        events = httpx.get(f"{base}/v1/events?follow=false&{query}", timeout=10)
        assert events.status_code == 200
    assert httpx.get(f"{base}/v1/events?api_key=wrong-{key}", timeout=10).status_code == 401
    assert httpx.get(f"{base}/v1/counts", headers=auth, timeout=10).status_code == 200
    bad = httpx.post(
        f"{base}/v1/conversations/{cid}/messages",
        json={"role": "wizard", "content": words},
        headers=auth,
        timeout=10,
    )
    assert bad.status_code == 422
    time.sleep(0.5)
    text = server.log_text()
    assert '"path":"/v1/events"' in text  # the access log is there
    for secret in (key, token, "words-that-must-not-be-logged", "4111-1111"):
        assert secret not in text, f"{secret[:12]}… is in the server's log"
