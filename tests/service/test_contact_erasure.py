"""DELETE /v1/contacts/{contact_id}: everything of a contact erased, with a receipt."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from tests.crm._ghl_helpers import TEST_PUBLIC_PEM
from tests.service._service_helpers import client_for
from threadkeep.crm.ghl import Snapshot
from threadkeep.crm.sync import Ledger


def _contact_with_history(api: TestClient, cid: str) -> list[str]:
    ids = []
    for text in ("first", "second"):
        conv = api.post("/v1/conversations", json={"contact_id": cid}).json()
        path = f"/v1/conversations/{conv['id']}"
        api.post(f"{path}/messages", json={"role": "user", "content": text})
        api.post(f"{path}/status", json={"status": "closed"})
        ids.append(conv["id"])
    return ids


def test_erasing_a_contact_answers_the_receipt(
    api: TestClient, tenant: str, store_url: str
) -> None:
    cid = f"+1555{uuid.uuid4().int % 10**7:07d}"
    ids = _contact_with_history(api, cid)
    other = api.post("/v1/conversations", json={"contact_id": "someone-else"}).json()["id"]

    resp = api.delete(f"/v1/contacts/{cid}")

    assert resp.status_code == 200, resp.text
    receipt = resp.json()
    assert (receipt["tenant"], receipt["contact_id"]) == (tenant, cid)
    assert sorted(receipt["conversations"]) == sorted(ids)
    assert (receipt["live"], receipt["messages"], receipt["facts"]) == (2, 2, 0)
    assert receipt["events"] > 0 and receipt["erased_at"]
    assert receipt["backend"] == store_url.split(":", 1)[0]
    assert receipt["ghl_snapshots"] == 0  # GoHighLevel is off
    assert "store" not in receipt  # the store's URL stays with the operator
    for conv in ids:
        assert api.get(f"/v1/conversations/{conv}").status_code == 404
    assert api.get(f"/v1/conversations/{other}").status_code == 200
    again = api.delete(f"/v1/contacts/{cid}").json()  # a retry: nothing left, still a receipt
    assert (again["conversations"], again["live"], again["events"]) == ([], 0, 0)


def test_only_agents_erase_and_only_their_own_tenant(
    make_client: Callable[..., TestClient], tenant: str
) -> None:
    api = make_client(api_keys=f"{tenant}:k1,other-{tenant}:k2", key="k1")
    ids = _contact_with_history(api, "c-1")
    assert api.delete("/v1/contacts/c-1", headers={"Authorization": ""}).status_code == 401
    stranger = api.delete("/v1/contacts/c-1", headers={"Authorization": "Bearer k2"})
    assert stranger.status_code == 200 and stranger.json()["conversations"] == []
    assert api.get(f"/v1/conversations/{ids[0]}").status_code == 200  # untouched
    bad = api.delete(f"/v1/contacts/{'x' * 300}")
    assert bad.status_code == 422


def test_erasure_takes_the_ghl_sync_snapshot_too(
    make_client: Callable[..., TestClient], tenant: str
) -> None:
    api = make_client(
        ghl_locations=f"loc-a:{tenant},loc-b:{tenant},loc-z:elsewhere",
        ghl_public_key=TEST_PUBLIC_PEM,
    )
    app: Any = api.app
    portal = api.portal
    assert portal is not None
    ledger = Ledger(app.state.stores.store)
    snap = Snapshot(fields={"budget": "digest"}, pipeline_stage="s-1")
    for location in ("loc-a", "loc-b", "loc-z"):
        portal.call(ledger.save_snapshot, location, "c-1", snap)
    _contact_with_history(api, "c-1")

    receipt = api.delete("/v1/contacts/c-1").json()

    assert receipt["ghl_snapshots"] == 2  # the two locations of this tenant
    for location, left in (("loc-a", Snapshot()), ("loc-b", Snapshot()), ("loc-z", snap)):
        assert portal.call(ledger.snapshot, location, "c-1") == left


def test_the_openapi_document_shows_the_route_and_its_receipt() -> None:
    with client_for("memory://") as api:
        doc = api.get("/openapi.json").json()
    route = doc["paths"]["/v1/contacts/{contact_id}"]["delete"]
    ok = route["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/ErasureOut"}
    assert {"401", "422", "429", "503"} <= set(route["responses"])
    example = doc["components"]["schemas"]["ErasureOut"]["examples"][0]
    assert set(example) == set(doc["components"]["schemas"]["ErasureOut"]["properties"])
