"""The outbox against the fake GoHighLevel process: differences only, retries, rate limit,
token refresh, echoes ignored, nothing lost while GoHighLevel is down."""

from __future__ import annotations

import time
from typing import Any

import pytest

import threadkeep
from tests.crm._ghl_helpers import LOCATION, MAP, PIPELINE, STAGE_IDS
from tests.fakes.process import FakeProcess
from threadkeep.crm.client import GhlClient, OAuthTokens
from threadkeep.crm.ghl import GhlMap
from threadkeep.crm.sync import Ledger, Outbox, apply_event, oauth_saver

pytestmark = pytest.mark.anyio

CONTACT = "cI08i1Bls3iTB9bKgFJh"
OTHER = "cJAWDskpkJHbRbhAT7bs"


@pytest.fixture(params=["memory", "sqlite"])
async def store(request, tmp_path):
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/ghl.db"
    async with await threadkeep.open_async(url) as s:
        yield s


@pytest.fixture
async def make_outbox():
    made = []

    def make(store, fake, **client_options):
        client_options.setdefault("token", "tok-1")
        client = GhlClient(fake.url, backoff=0.01, **client_options)

        async def getter():
            return store

        made.append(client)
        return Outbox(getter, client, GhlMap.model_validate(MAP), {LOCATION: "loc-1"}, idle=0.05)

    yield make
    for client in made:
        await client.aclose()


def api_calls(fake: FakeProcess, *skip: str) -> list[tuple[str, str, Any, int]]:
    return [
        (r["method"], r["path"], r["body"], r["status"])
        for r in fake.requests()
        if r["path"] not in skip
    ]


async def test_stage_and_fields_are_sent_once_and_only_what_changed(store, fake_ghl, make_outbox):
    outbox = make_outbox(store, fake_ghl)
    ledger = Ledger(store)
    conv = await store.start(CONTACT, tenant="loc-1", stage="Q2")
    await store.save_state(conv.id, {"price_expectation": 450000, "motivation": "relocation"})
    assert await outbox.run_pass(store, ledger)  # first pass: a rescan
    calls = api_calls(fake_ghl)
    assert [(m, p) for m, p, _, _ in calls] == [
        ("PUT", f"/contacts/{CONTACT}"),
        ("GET", "/opportunities/search"),
        ("POST", "/opportunities/"),
    ]
    assert calls[0][2] == {
        "customFields": [
            {"id": "6dvNaf7VhkQ9snc5vnjJ", "field_value": 450000},
            {"key": "motivation", "field_value": "relocation"},
        ]
    }
    created = calls[2][2]
    assert created["pipelineStageId"] == STAGE_IDS["Q2"] and created["contactId"] == CONTACT
    assert {r["version"] for r in fake_ghl.requests()} == {"2021-07-28"}
    assert {r["authorization"] for r in fake_ghl.requests()} == {"Bearer tok-1"}
    # nothing changed: nothing sent
    assert await outbox.run_pass(store, ledger)
    assert len(fake_ghl.requests()) == 3
    # only the changed field, the tag, and the stage move
    await store.save_state(
        conv.id, {"price_expectation": 500000, "motivation": "relocation"}, expected_version=1
    )
    await store.set_stage(conv.id, "QUALIFIED")
    assert await outbox.run_pass(store, ledger)
    calls = api_calls(fake_ghl)[3:]
    assert [(m, p, b) for m, p, b, _ in calls] == [
        (
            "PUT",
            f"/contacts/{CONTACT}",
            {"customFields": [{"id": "6dvNaf7VhkQ9snc5vnjJ", "field_value": 500000}]},
        ),
        ("POST", f"/contacts/{CONTACT}/tags", {"tags": ["seller-qualified"]}),
        (
            "PUT",
            f"/opportunities/{created and calls[-1][1].split('/')[-1]}",
            {"pipelineId": PIPELINE, "pipelineStageId": STAGE_IDS["QUALIFIED"]},
        ),
    ]
    state = fake_ghl.state()
    assert state["contacts"][CONTACT] == {
        "customFields": {"6dvNaf7VhkQ9snc5vnjJ": 500000, "motivation": "relocation"},
        "tags": ["seller-qualified"],
    }
    [opportunity] = state["opportunities"].values()
    assert opportunity["pipelineStageId"] == STAGE_IDS["QUALIFIED"]
    # leaving QUALIFIED removes our tag (only ours)
    await store.set_stage(conv.id, "Q2")
    assert await outbox.run_pass(store, ledger)
    assert api_calls(fake_ghl)[-2][:3] == (
        "DELETE",
        f"/contacts/{CONTACT}/tags",
        {"tags": ["seller-qualified"]},
    )


async def test_echo_webhooks_of_our_own_writes_are_ignored(store, fake_ghl, make_outbox):
    outbox = make_outbox(store, fake_ghl)
    ledger = Ledger(store)
    gmap = GhlMap.model_validate(MAP)
    conv = await store.start(CONTACT, tenant="loc-1", stage="Q2")
    await store.save_state(conv.id, {"price_expectation": 450000})
    assert await outbox.run_pass(store, ledger)
    await store.set_stage(conv.id, "QUALIFIED")
    assert await outbox.run_pass(store, ledger)
    # GoHighLevel echoes the earlier write (Q2) late, after the conversation moved on
    echo = {
        "type": "OpportunityStageUpdate",
        "locationId": LOCATION,
        "id": "o",
        "contactId": CONTACT,
        "pipelineId": PIPELINE,
        "pipelineStageId": STAGE_IDS["Q2"],
    }
    assert await apply_event(store, ledger, gmap, echo, "loc-1") == "ignored: echo of our own write"
    assert (await store.get(conv.id)).stage == "QUALIFIED"
    # the contact webhook echoing our custom field write does not become a fact
    contact_echo = {
        "type": "ContactUpdate",
        "locationId": LOCATION,
        "id": CONTACT,
        "customFields": [{"id": "6dvNaf7VhkQ9snc5vnjJ", "value": 450000}],
    }
    assert await apply_event(store, ledger, gmap, contact_echo, "loc-1") == "facts none"
    assert await store.recall(CONTACT, tenant="loc-1") == []
    # a person moving the deal in GoHighLevel is not an echo; the outbox then sends nothing back
    human = {**echo, "pipelineStageId": "manual-stage"}
    gmap2 = GhlMap.model_validate(
        {
            **MAP,
            "pipeline": {"id": PIPELINE, "stages": STAGE_IDS, "inbound": {"manual-stage": "Q2"}},
        }
    )
    assert (await apply_event(store, ledger, gmap2, human, "loc-1")).startswith("stage Q2")
    before = len(fake_ghl.requests())
    outbox.gmap = gmap2
    assert await outbox.run_pass(store, ledger)
    sent = api_calls(fake_ghl)[before:]
    assert [(m, p) for m, p, _, _ in sent] == [
        ("DELETE", f"/contacts/{CONTACT}/tags"),
        ("PUT", f"/opportunities/{(await ledger.snapshot(LOCATION, CONTACT)).opportunity}"),
    ]


async def test_failures_are_retried_and_a_rejection_does_not_block_others(
    store, fake_ghl, make_outbox
):
    outbox = make_outbox(store, fake_ghl)
    ledger = Ledger(store)
    unknown = await store.start("not-in-ghl", tenant="loc-1")
    await store.save_state(unknown.id, {"price_expectation": 1})
    conv = await store.start(CONTACT, tenant="loc-1")
    await store.save_state(conv.id, {"price_expectation": 2})
    fake_ghl.control(fail=[503, 429, 500])
    assert await outbox.run_pass(store, ledger)
    statuses = [(r["path"], r["status"]) for r in fake_ghl.requests()]
    assert [status for _, status in statuses[:3]] == [503, 429, 500]  # retried
    assert statuses[:4] == [(statuses[0][0], s) for s in (503, 429, 500, statuses[3][1])]
    # the contact GoHighLevel does not know is refused for good (logged, never retried) and
    # the other one is delivered
    assert sorted(statuses[3:]) == [(f"/contacts/{CONTACT}", 200), ("/contacts/not-in-ghl", 400)]
    assert await outbox.run_pass(store, ledger)
    assert len(fake_ghl.requests()) == 5


async def test_down_holds_the_cursor_and_delivers_when_back(store, fake_ghl, make_outbox):
    outbox = make_outbox(store, fake_ghl, attempts=2)
    ledger = Ledger(store)
    assert await outbox.run_pass(store, ledger)  # empty rescan sets the cursor
    conv = await store.start(CONTACT, tenant="loc-1", stage="Q2")
    fake_ghl.control(down=True)
    assert not await outbox.run_pass(store, ledger)
    assert not await outbox.run_pass(store, ledger)
    cursor = await ledger.get("cursor")
    fake_ghl.control(down=False)
    assert await outbox.run_pass(store, ledger)
    assert await ledger.get("cursor") != cursor
    [opportunity] = fake_ghl.state()["opportunities"].values()
    assert opportunity["contactId"] == CONTACT and opportunity["pipelineStageId"] == STAGE_IDS["Q2"]
    assert conv.id


async def test_rate_limit_is_kept_per_location(store, fake_ghl_small_window, make_outbox):
    fake = fake_ghl_small_window
    outbox = make_outbox(store, fake, limit=5, window=1.0)
    ledger = Ledger(store)
    for i in range(12):
        conv = await store.start(f"c{i}", tenant="loc-1")
        await store.save_state(conv.id, {"price_expectation": i})
    started = time.monotonic()
    assert await outbox.run_pass(store, ledger)
    requests = fake.requests()
    assert [r["status"] for r in requests] == [400] * 12  # unknown contacts; none got 429
    times = [r["at"] for r in requests]
    assert all(times[i + 5] - times[i] >= 1.0 for i in range(len(times) - 5))
    assert time.monotonic() - started >= 2.0


async def test_an_expired_token_is_refreshed_once_and_kept(store, fake_ghl, make_outbox):
    saved = []

    async def ledger_for():
        return Ledger(store)

    save = oauth_saver(ledger_for)

    async def keep(tokens):
        saved.append(tokens)
        await save(tokens)

    outbox = make_outbox(
        store,
        fake_ghl,
        token=None,
        oauth=OAuthTokens("client-1", "secret-1", "rt-0", "tok-1"),
        on_tokens=keep,
    )
    ledger = Ledger(store)
    conv = await store.start(CONTACT, tenant="loc-1")
    await store.save_state(conv.id, {"price_expectation": 3})
    fake_ghl.control(expire=True)
    assert await outbox.run_pass(store, ledger)
    paths = [(r["path"], r["status"]) for r in fake_ghl.requests()]
    assert paths == [
        (f"/contacts/{CONTACT}", 401),
        ("/oauth/token", 200),
        (f"/contacts/{CONTACT}", 200),
    ]
    assert len(saved) == 1 and saved[0].refresh_token != "rt-0"
    assert (await ledger.get("oauth"))["refresh_token"] == saved[0].refresh_token
    # a restarted worker starts from the rotated refresh token, not the spent one
    fresh = make_outbox(
        store, fake_ghl, token=None, oauth=OAuthTokens("client-1", "secret-1", "rt-0")
    )
    await fresh._load_tokens(ledger)
    assert fresh.client.oauth.refresh_token == saved[0].refresh_token
    # a token refused even after the refresh: GoHighLevel is unavailable, no refresh loop
    fake_ghl.control(expire=True)
    fake_ghl.control(fail=[401, 401])
    await store.save_state(conv.id, {"price_expectation": 4}, expected_version=1)
    assert await outbox.run_pass(store, ledger) in (True, False)
    refreshes = [r for r in fake_ghl.requests() if r["path"] == "/oauth/token"]
    assert len(refreshes) == 2
    await fresh.client.aclose()
