"""GET /v1/playbooks/{name} and GET /v1/conversations/{id}/guidance over the service."""

from __future__ import annotations

import json

import pytest
from _service_helpers import client_for

import threadkeep


@pytest.fixture(params=["memory", "sqlite"])
def url(request, tmp_path):
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 's.db'}"


@pytest.fixture
def own_playbook(tmp_path):
    path = tmp_path / "buyers.json"
    stage = {"id": "new", "name": "New", "objectives": ["o"], "replies": ["a", "b", "c"]}
    path.write_text(json.dumps({"name": "buyers", "stages": [stage]}))
    return path


def test_playbooks(url, own_playbook):
    keys = "loc-1:k1,loc-2:k2"
    with client_for(
        url, api_keys=keys, playbook="realtor", playbooks=f"loc-1:{own_playbook}", key="k1"
    ) as api:
        assert api.get("/v1/playbooks").json() == {
            "current": "buyers",
            "items": ["buyers", "realtor", "seller"],
        }
        assert api.get("/v1/playbooks/buyers").json()["stages"][0]["id"] == "new"
        assert api.get("/v1/playbooks/current").json()["name"] == "buyers"
        realtor = api.get("/v1/playbooks/realtor").json()
        assert len(realtor["stages"]) == 13
        assert realtor["stages"][2]["transition"]["criteria"][1]["label"] == (
            "Pre-approved or paying cash"
        )
        r = api.get("/v1/playbooks/nope")
        assert r.status_code == 404 and r.json()["error"]["type"] == "PlaybookNotFound"
        assert api.get(f"/v1/playbooks/{own_playbook}").status_code == 404  # never a path
        other = api.get("/v1/playbooks/buyers", headers={"Authorization": "Bearer k2"})
        assert other.status_code == 404  # loc-1's own playbook is not loc-2's
        assert (
            api.get("/v1/playbooks/current", headers={"Authorization": "Bearer k2"}).json()["name"]
            == "realtor"
        )
        assert (
            api.get("/v1/playbooks/seller", headers={"Authorization": "Bearer x"}).status_code
            == 401
        )


def test_guidance_follows_messages_state_and_stage(url):
    with client_for(url, playbook="seller") as api:
        cid = api.post("/v1/conversations", json={"contact_id": "+1555", "stage": "Q2"}).json()[
            "id"
        ]
        g = api.get(f"/v1/conversations/{cid}/guidance").json()
        assert g["stage"] == "Q2" and g["objections"] == [] and len(g["suggestions"]) == 3
        assert g["criteria_missing"][0]["when"] == "price_expectation is set"
        api.post(
            f"/v1/conversations/{cid}/messages",
            json={"role": "user", "content": "Sounds like a lowball"},
        )
        g = api.get(f"/v1/conversations/{cid}/guidance").json()
        assert g["objections"][0]["id"] == "lowball_fear" and g["last_seq"] == 1
        assert g["suggestions"][0]["kind"] == "objection"
        api.put(
            f"/v1/conversations/{cid}/state",
            json={"value": {"price_expectation": 4}},
            headers={"If-Match": '"0"'},
        )
        g = api.get(f"/v1/conversations/{cid}/guidance").json()
        assert g["ready"] and g["next_stage"] == "Q3" and g["state_version"] == 1
        assert api.put(f"/v1/conversations/{cid}/stage", json={"stage": "Q3"}).status_code == 200
        g = api.get(f"/v1/conversations/{cid}/guidance").json()
        assert g["stage"] == "Q3" and not g["ready"]
        g = api.get(f"/v1/conversations/{cid}/guidance?playbook=realtor").json()
        assert g["playbook"] == "realtor" and not g["known_stage"]
        r = api.get("/v1/conversations/01aaaaaaaaaaaaaaaaaaaaaaaa/guidance")
        assert r.status_code == 404


def test_a_bad_playbook_stops_the_service_at_start(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "stages": [{"id": "a"}]}))
    with (
        pytest.raises(threadkeep.InvalidInput, match=r"stages\[0\].name: Field required"),
        client_for("memory://", playbook=str(bad)),
    ):
        pass
