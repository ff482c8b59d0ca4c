"""Messages over HTTP carry their payload (items kept verbatim), and pages go backwards."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.service.test_visitors import first_message, site  # noqa: F401 (a fixture)

CALL = {"type": "function_call", "call_id": "c1", "name": "estimate", "arguments": '{"zip":"1"}'}
BLOCKS = [
    {"type": "thinking", "thinking": "…", "signature": "EqQBCkgIARAB+/=="},
    {"type": "text", "text": "Checking"},
]


def _start(api: TestClient) -> str:
    resp = api.post("/v1/conversations", json={"contact_id": "c-1"})
    assert resp.status_code == 201
    return f"/v1/conversations/{resp.json()['id']}/messages"


def test_a_payload_goes_in_and_comes_back_verbatim(api):
    url = _start(api)
    made = api.post(url, json={"role": "assistant", "payload": CALL})
    assert made.status_code == 201, made.text
    assert (made.json()["content"], made.json()["payload"]) == ("", CALL)
    blocks = api.post(url, json={"role": "assistant", "content": "Checking", "payload": BLOCKS})
    assert blocks.status_code == 201
    plain = api.post(url, json={"role": "user", "content": "hi"})
    assert plain.json()["payload"] is None
    items = api.get(url).json()["items"]
    assert [m["payload"] for m in items] == [CALL, BLOCKS, None]


def test_text_or_a_payload_is_needed(api):
    url = _start(api)
    for body in ({"role": "user"}, {"role": "user", "content": "  "}):
        resp = api.post(url, json=body)
        assert resp.status_code == 422, resp.text
        assert "content" in resp.text
    resp = api.post(url, json={"role": "user", "content": "x", "payload": "not an item"})
    assert resp.status_code == 422
    assert api.get(url).json()["items"] == []


def test_pages_go_backwards(api):
    url = _start(api)
    for i in range(5):
        api.post(url, json={"role": "user", "content": f"m{i}"})
    assert [m["seq"] for m in api.get(url + "?before=5&limit=2").json()["items"]] == [3, 4]
    assert api.get(url + "?before=2&after=1").status_code == 422
    huge = api.get(url + "?before=" + "9" * 30 + "&limit=1")
    assert [m["seq"] for m in huge.json()["items"]] == [5]


def test_a_visitor_sees_no_items_and_no_payloads(site):  # noqa: F811 (the fixture)
    out = first_message(site)
    token, cid = out["visitor_token"], out["conversation_id"]
    url = f"/v1/conversations/{cid}/messages"
    site.agent("POST", url, json={"role": "assistant", "payload": CALL})
    site.agent("POST", url, json={"role": "tool", "payload": {
        "type": "function_call_output", "call_id": "c1", "output": "450k"}})  # fmt: skip
    site.agent("POST", url, json={"role": "assistant", "content": "Checking", "payload": BLOCKS})
    seen = site.visitor("GET", url + "?last=50", token).json()["items"]
    assert [m["content"] for m in seen][-1] == "Checking"
    assert all(m["content"] and m["payload"] is None for m in seen)
    assert len(site.agent("GET", url).json()["items"]) == len(seen) + 2
