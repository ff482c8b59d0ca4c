"""The service as real processes: a change made while GoHighLevel is down, the service
restarted meanwhile, is delivered once GoHighLevel is back, exactly once across two workers."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from tests.crm._ghl_helpers import LOCATION, STAGE_IDS, TEST_PUBLIC_PEM, event, signed
from tests.fakes.process import FakeProcess
from tests.service._service_helpers import LiveServer, wait_for

CONTACT = "cI08i1Bls3iTB9bKgFJh"


def call(
    server: LiveServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Any:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(
        server.url + path,
        data=data,
        method=method,
        headers={
            "Authorization": "Bearer k1",
            "Content-Type": "application/json",
            **(headers or {}),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


@pytest.mark.slow
def test_a_change_made_while_ghl_is_down_survives_a_restart(tmp_path, map_file):
    fake = FakeProcess("ghl.py", "--token", f"tok-1:{LOCATION}", "--contact", CONTACT).started()
    ghl_url = fake.url
    fake.stop()  # GoHighLevel is down: connections are refused
    server = LiveServer(
        f"sqlite:///{tmp_path / 'tk.db'}",
        tmp_path / "server.log",
        workers=2,
        THREADKEEP_API_KEYS="loc-1:k1",
        THREADKEEP_GHL_LOCATIONS=f"{LOCATION}:loc-1",
        THREADKEEP_GHL_PUBLIC_KEY=TEST_PUBLIC_PEM,
        THREADKEEP_GHL_MAP=str(map_file),
        THREADKEEP_GHL_TOKEN="tok-1",
        THREADKEEP_GHL_API_URL=ghl_url,
        THREADKEEP_GHL_RETRY="0.3",
    )
    server.start()
    try:
        raw, headers = signed(
            event(
                "InboundMessage",
                contactId=CONTACT,
                body="Hi, selling",
                messageType="SMS",
                messageId="m-1",
            )
        )
        assert call(server, "POST", "/v1/crm/ghl/webhook", raw=raw, headers=headers)["status"] == (
            "stored"
        )
        conv = call(server, "GET", f"/v1/conversations?contact_id={CONTACT}")["items"][0]
        call(server, "PUT", f"/v1/conversations/{conv['id']}/stage", {"stage": "Q2"})
        call(
            server,
            "PUT",
            f"/v1/conversations/{conv['id']}/state",
            {"value": {"price_expectation": 450000}},
            headers={"If-Match": '"0"'},
        )
        wait_for(
            lambda: "GoHighLevel unavailable" in server.log_text(),
            30,
            "the outbox to find GoHighLevel down",
        )
        server.restart()
        fake = FakeProcess(
            "ghl.py", "--token", f"tok-1:{LOCATION}", "--contact", CONTACT, port=fake.port
        ).started()

        def delivered():
            state = fake.state()
            opportunities = list(state["opportunities"].values())
            return bool(opportunities) and state["contacts"][CONTACT]["customFields"]

        wait_for(delivered, 60, "the change to reach GoHighLevel")
        state = fake.state()
        [opportunity] = state["opportunities"].values()  # exactly one, with two workers
        assert opportunity["pipelineStageId"] == STAGE_IDS["Q2"]
        assert opportunity["contactId"] == CONTACT
        assert state["contacts"][CONTACT]["customFields"] == {"6dvNaf7VhkQ9snc5vnjJ": 450000}
        # a later change goes out once too
        call(server, "PUT", f"/v1/conversations/{conv['id']}/stage", {"stage": "QUALIFIED"})
        wait_for(
            lambda: fake.state()["contacts"][CONTACT]["tags"] == ["seller-qualified"],
            30,
            "the QUALIFIED tag",
        )
        wait_for(
            lambda: (
                list(fake.state()["opportunities"].values())[0]["pipelineStageId"]
                == STAGE_IDS["QUALIFIED"]
            ),
            30,
            "the QUALIFIED pipeline stage",
        )
        writes = [r for r in fake.requests() if r["method"] != "GET"]
        assert all(r["status"] < 300 for r in writes), writes
        assert len([r for r in writes if r["path"] == "/opportunities/"]) == 1
    finally:
        server.stop()
        fake.stop()
