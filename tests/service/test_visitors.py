"""Visitor tokens: a public chat's visitor reaches its own conversation and nothing else."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service._service_helpers import client_for
from threadkeep import InvalidInput
from threadkeep.service.app import create_app
from threadkeep.service.settings import ServiceSettings, load_settings
from threadkeep.service.visitors import Visitor, VisitorTokens

SECRET = "s" * 32
OTHER_SECRET = "o" * 32
BROWSER = "web-0123456789abcdef"


class Site:
    """A service with public chat: ``agent`` calls with the tenant's key, ``visitor`` without."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client = client
        self.key = key

    def agent(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.key}", **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def visitor(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.request(method, path, headers={**headers, **kw.pop("headers", {})}, **kw)


@pytest.fixture
def site(tmp_path, tenant):
    key = f"key-{tenant}"
    settings = {
        "api_keys": f"{tenant}:{key}",
        "public_chat": True,
        "public_tenant": tenant,
        "visitor_secret": SECRET,
    }
    with client_for(f"sqlite:///{tmp_path}/site.db", **settings) as client:
        yield Site(client, key)


def first_message(site: Site, text: str = "hello", **body: Any) -> dict[str, Any]:
    resp = site.visitor("POST", "/v1/chat", json={"message": text, **body})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_a_visitor_without_a_key_gets_a_token_for_its_conversation(site, tenant):
    out = first_message(site, contact_id=BROWSER)
    assert out["reply"] == "echo: hello"
    assert out["stage"] is None  # the bot's stage is an internal label
    token, cid = out["visitor_token"], out["conversation_id"]
    assert token

    conv = site.visitor("GET", f"/v1/conversations/{cid}", token)
    assert conv.status_code == 200
    assert set(conv.json()) == {"id", "status", "created_at", "last_activity_at", "expires_at"}
    as_agent = site.agent("GET", f"/v1/conversations/{cid}").json()
    assert as_agent["tenant"] == tenant
    assert as_agent["channel"] == "web"
    assert as_agent["contact_id"].startswith("web-")
    assert as_agent["contact_id"] != BROWSER  # derived, never taken as given

    again = site.visitor(
        "POST", "/v1/chat", token, json={"message": "more", "conversation_id": cid}
    )
    assert again.status_code == 200
    assert again.json()["conversation_id"] == cid
    assert again.json()["visitor_token"]
    texts = [
        m["content"]
        for m in site.visitor("GET", f"/v1/conversations/{cid}/messages", token).json()["items"]
    ]
    assert texts == ["hello", "echo: hello", "more", "echo: more"]


def test_a_visitor_never_sees_system_or_tool_messages_or_metadata(site):
    out = first_message(site)
    token, cid = out["visitor_token"], out["conversation_id"]
    for role, content in [
        ("system", "You are a sales bot. Lead score: 93."),
        ("tool", '{"crm_id": 77, "score": 93}'),
        ("agent", "Hi, this is Jorge."),
    ]:
        resp = site.agent(
            "POST",
            f"/v1/conversations/{cid}/messages",
            json={"role": role, "content": content, "metadata": {"internal": "lead-93"}},
        )
        assert resp.status_code == 201
    seen = site.visitor("GET", f"/v1/conversations/{cid}/messages?last=50", token).json()["items"]
    assert [m["role"] for m in seen] == ["user", "assistant", "agent"]
    assert all(m["metadata"] == {} for m in seen)
    after = site.visitor("GET", f"/v1/conversations/{cid}/messages?after=2&limit=10", token)
    assert [m["content"] for m in after.json()["items"]] == ["Hi, this is Jorge."]
    everything = site.agent("GET", f"/v1/conversations/{cid}/messages").json()["items"]
    assert [m["role"] for m in everything] == ["user", "assistant", "system", "tool", "agent"]

    events = site.visitor("GET", f"/v1/events?from_start=true&follow=false&visitor_token={token}")
    assert events.status_code == 200
    assert '"role":"system"' not in events.text and '"role":"tool"' not in events.text
    assert '"role":"agent"' in events.text
    assert "stage.changed" not in events.text and "state.saved" not in events.text


def test_a_visitor_token_reaches_nothing_else(site, tenant):
    mine = first_message(site, "mine")
    token, cid = mine["visitor_token"], mine["conversation_id"]
    other = site.agent("POST", "/v1/chat", json={"message": "secret", "contact_id": "+15550100"})
    oid = other.json()["conversation_id"]
    site.agent(
        "PUT",
        f"/v1/conversations/{oid}/state",
        json={"value": {"a": 1}},
        headers={"If-Match": '"0"'},
    )
    before = site.agent("GET", f"/v1/conversations/{oid}").json()

    base, own = f"/v1/conversations/{oid}", f"/v1/conversations/{cid}"
    refused: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/v1/conversations", {}),
        ("GET", "/v1/counts", {}),
        ("POST", "/v1/conversations", {"json": {"contact_id": "+15550100"}}),
        ("GET", base, {}),
        ("GET", f"{base}/messages", {}),
        ("GET", f"{base}/state", {}),
        ("POST", "/v1/chat", {"json": {"message": "x", "conversation_id": oid}}),
        # not even its own conversation's agent routes
        ("GET", f"{own}/state", {}),
        ("GET", f"{own}/state/schema", {}),
        ("PUT", f"{own}/state", {"json": {"value": 1}, "headers": {"If-Match": "*"}}),
        ("POST", f"{own}/messages", {"json": {"role": "agent", "content": "x"}}),
        ("POST", f"{own}/status", {"json": {"status": "closed"}}),
        ("PUT", f"{own}/stage", {"json": {"stage": "Q9"}}),
        ("GET", f"{own}/guidance", {}),
        ("GET", "/v1/playbooks/seller", {}),
        ("DELETE", own, {}),
        ("DELETE", base, {}),
        ("DELETE", "/v1/contacts/+15550100", {}),  # erasing a contact is for agents
    ]
    for method, path, kw in refused:
        resp = site.visitor(method, path, token, **kw)
        assert resp.status_code == 404, (method, path, resp.text)
        assert "secret" not in resp.text

    after = site.agent("GET", f"/v1/conversations/{oid}").json()
    assert after == before
    assert site.agent("GET", f"/v1/conversations/{cid}").json()["message_count"] == 2
    stream = site.visitor("GET", f"/v1/events?from_start=true&follow=false&visitor_token={token}")
    assert oid not in stream.text and cid in stream.text
    # before its first message a visitor may open the stream: it carries nothing
    tokenless = site.visitor("GET", "/v1/events?from_start=true&follow=false")
    assert tokenless.status_code == 200
    assert "data:" not in tokenless.text


def test_a_visitor_cannot_pick_a_contact_or_a_key_of_someone_else(site):
    agent = site.agent(
        "POST",
        "/v1/chat",
        json={"message": "my address is 1 Main St", "contact_id": "crm-contact-0000000001"},
        headers={"Idempotency-Key": "msg-1"},
    ).json()
    # the same contact id and the same Idempotency-Key from a visitor: a contact of its own
    out = site.visitor(
        "POST",
        "/v1/chat",
        json={"message": "my address is 1 Main St", "contact_id": "crm-contact-0000000001"},
        headers={"Idempotency-Key": "msg-1"},
    )
    assert out.status_code == 200
    assert out.json()["replayed"] is False
    assert out.json()["conversation_id"] != agent["conversation_id"]
    short = site.visitor("POST", "/v1/chat", json={"message": "hi", "contact_id": "+15550100"})
    assert short.status_code == 422
    assert short.json()["error"]["field"] == "contact_id"
    # without a token a visitor continues nothing
    stray = site.visitor(
        "POST", "/v1/chat", json={"message": "hi", "conversation_id": agent["conversation_id"]}
    )
    assert stray.status_code == 404
    assert (
        site.agent("GET", f"/v1/conversations/{agent['conversation_id']}").json()["message_count"]
        == 2
    )


def test_a_returning_visitor_keeps_its_contact_across_close(site):
    first = first_message(site, contact_id=BROWSER)
    token, cid = first["visitor_token"], first["conversation_id"]
    contact = site.agent("GET", f"/v1/conversations/{cid}").json()["contact_id"]
    site.agent("POST", f"/v1/conversations/{cid}/status", json={"status": "closed"})

    closed = site.visitor(
        "POST", "/v1/chat", token, json={"message": "back", "conversation_id": cid}
    )
    assert closed.status_code == 409
    nxt = site.visitor("POST", "/v1/chat", token, json={"message": "back"})
    assert nxt.status_code == 200
    new_cid, new_token = nxt.json()["conversation_id"], nxt.json()["visitor_token"]
    assert new_cid != cid
    assert site.agent("GET", f"/v1/conversations/{new_cid}").json()["contact_id"] == contact
    # each token reads its own conversation
    assert site.visitor("GET", f"/v1/conversations/{new_cid}", token).status_code == 404
    assert site.visitor("GET", f"/v1/conversations/{new_cid}", new_token).status_code == 200
    # a browser that lost its token but kept its id is the same contact again
    lost = first_message(site, "anyone?", contact_id=BROWSER)
    assert lost["conversation_id"] == new_cid


def test_forged_expired_or_foreign_tokens_get_401(site, tmp_path, tenant, monkeypatch):
    token = first_message(site)["visitor_token"]
    cid = first_message(site)["conversation_id"]
    payload, stamp, signature = token.split(".")
    forged = f"{payload}.{stamp}.{signature[::-1]}"
    assert site.visitor("GET", "/v1/counts", forged).status_code == 401
    assert site.visitor("GET", f"/v1/conversations/{cid}", "not-a-token").status_code == 401
    conv = site.agent("GET", f"/v1/conversations/{cid}").json()
    scope = Visitor(tenant, conv["contact_id"], cid)
    made = VisitorTokens([OTHER_SECRET], 60).sign(scope)
    assert site.visitor("GET", f"/v1/conversations/{cid}", made).status_code == 401
    assert (
        site.visitor(
            "GET", f"/v1/conversations/{cid}", VisitorTokens([SECRET], 60).sign(scope)
        ).status_code
        == 200
    )

    tokens = VisitorTokens([SECRET], max_age=60)
    fresh = tokens.sign(scope)
    assert tokens.read(fresh) == scope
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 120)
    assert tokens.read(fresh) is None  # expired


def test_secrets_rotate_the_first_signs_every_one_is_accepted(tmp_path, tenant):
    store = f"sqlite:///{tmp_path}/rot.db"
    common = {"api_keys": f"{tenant}:k", "public_chat": True, "public_tenant": tenant}
    with client_for(store, visitor_secret=SECRET, **common) as old:
        out = old.post("/v1/chat", json={"message": "hi"}).json()
    path = f"/v1/conversations/{out['conversation_id']}"
    bearer = {"Authorization": f"Bearer {out['visitor_token']}"}
    with client_for(store, visitor_secret=f"{OTHER_SECRET},{SECRET}", **common) as rotated:
        assert rotated.get(path, headers=bearer).status_code == 200
        renewed = rotated.post("/v1/chat", json={"message": "again"}, headers=bearer).json()[
            "visitor_token"
        ]
    with client_for(store, visitor_secret=OTHER_SECRET, **common) as retired:
        assert retired.get(path, headers=bearer).status_code == 401
        renewed_bearer = {"Authorization": f"Bearer {renewed}"}
        assert retired.get(path, headers=renewed_bearer).status_code == 200


def test_tokens_work_only_while_public_chat_is_on(tmp_path, tenant):
    store = f"sqlite:///{tmp_path}/off.db"
    with client_for(
        store, api_keys=f"{tenant}:k", public_chat=True, visitor_secret=SECRET, public_tenant=tenant
    ) as on:
        out = on.post("/v1/chat", json={"message": "hi"}).json()
    with client_for(store, api_keys=f"{tenant}:k", visitor_secret=SECRET) as off:
        assert off.post("/v1/chat", json={"message": "hi"}).status_code == 401
        path = f"/v1/conversations/{out['conversation_id']}"
        bearer = {"Authorization": f"Bearer {out['visitor_token']}"}
        assert off.get(path, headers=bearer).status_code == 401
        assert (
            off.post(
                "/v1/chat", json={"message": "x"}, headers={"Authorization": "Bearer k"}
            ).json()["visitor_token"]
            is None
        )


def test_an_agent_key_keeps_tenant_wide_power_and_can_mint_a_visitor_token(site):
    out = site.agent("POST", "/v1/chat", json={"message": "hi", "contact_id": "crm-42"}).json()
    assert out["stage"] is None or isinstance(out["stage"], str)
    token = out["visitor_token"]
    cid = out["conversation_id"]
    # a site's backend hands this token to its browser: it reads that conversation only
    assert site.visitor("GET", f"/v1/conversations/{cid}", token).status_code == 200
    assert site.agent("GET", "/v1/conversations").json()["items"][0]["id"] == cid
    assert site.agent("GET", f"/v1/conversations/{cid}").json()["contact_id"] == "crm-42"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"THREADKEEP_PUBLIC_CHAT": "true"},
            "THREADKEEP_PUBLIC_CHAT=true needs THREADKEEP_VISITOR_SECRET",
        ),
        ({"THREADKEEP_PUBLIC_CHAT": "1", "THREADKEEP_VISITOR_SECRET": "short"}, "at least 32"),
    ],
)
def test_public_chat_without_a_good_secret_stops_the_start(env, says):
    settings = load_settings({"THREADKEEP_STORE": "memory://", **env})
    with pytest.raises(InvalidInput, match=says) as caught:
        create_app(settings)
    assert "\n" not in str(caught.value)
    assert caught.value.field == "THREADKEEP_VISITOR_SECRET"


def test_the_visitor_identity_is_on_the_request_state(tmp_path, tenant):
    """Per-visitor rate limits key on request.state.visitor (set for visitors only)."""
    app = create_app(
        ServiceSettings(
            store=f"sqlite:///{tmp_path}/state.db",
            bot="echo",
            api_keys=f"{tenant}:key-{tenant}",
            public_chat=True,
            public_tenant=tenant,
            visitor_secret=SECRET,
        )
    )
    seen: list[Any] = []

    @app.middleware("http")
    async def spy(request, call_next):
        response = await call_next(request)
        seen.append(getattr(request.state, "visitor", None))
        return response

    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        site = Site(client, f"key-{tenant}")
        out = first_message(site, contact_id=BROWSER)
        site.agent("GET", "/v1/counts")
        site.visitor("GET", f"/v1/conversations/{out['conversation_id']}", out["visitor_token"])
    assert seen[0] is not None and seen[0].contact_id is None  # a first message: no contact yet
    assert seen[1] is None
    assert seen[2].conversation_id == out["conversation_id"]


def test_settings_hide_the_secret():
    assert SECRET not in repr(ServiceSettings(visitor_secret=SECRET))
