"""The dashboard's guidance panel in Chromium: the tenant's playbook (the seller bot's), live
updates, a suggestion filling the reply box, a confirmed move past missing criteria, facts."""

from __future__ import annotations

import pytest
from playwright.sync_api import Locator, Page, expect

import threadkeep

pytestmark = pytest.mark.browser

CONTACT = "+1 555 0142"


def transcript_last(page: Page) -> Locator:
    return page.get_by_test_id("detail-transcript").locator("[data-role]").last


def test_guidance_beside_the_transcript(new_page, api, server, save_screenshot):
    first = api("/v1/chat", {"message": "The house is in good condition", "contact_id": CONTACT})
    assert first["stage"] == "Q2"
    dashboard = new_page("/dashboard")
    expect(dashboard.locator("body")).to_have_attribute("data-ready", "1")
    # the stage filter lists the playbook's stages, in order, by name
    options = dashboard.get_by_test_id("filter-stage").locator("option")
    expect(options).to_have_count(8)
    expect(options.nth(3)).to_have_text("Price expectation")
    expect(dashboard.get_by_test_id("count-stage-Q2")).to_contain_text("Price expectation 1")
    dashboard.locator("tr.row").first.click()
    guidance = dashboard.get_by_test_id("guidance")
    expect(guidance.get_by_test_id("guidance-stage")).to_contain_text("Price expectation")
    expect(guidance.get_by_test_id("criterion-missing")).to_have_text(["Price expectation known"])
    expect(guidance.get_by_test_id("guidance-objections")).to_have_count(0)

    # the contact pushes back: the panel follows live, the objection and its reply come first
    api(
        "/v1/chat",
        {
            "message": "I don't want some lowball cash offer",
            "conversation_id": first["conversation_id"],
        },
    )
    expect(guidance.get_by_test_id("guidance-objections")).to_contain_text("lowball fear")
    expect(guidance.get_by_test_id("suggestion-0")).to_have_attribute("data-kind", "objection")
    guidance.get_by_test_id("suggestion-0").click()
    expect(dashboard.get_by_test_id("agent-input")).to_have_value(
        "I understand. There's no obligation: you'll see the offer and decide. What price would "
        "you need to make selling worth it?"
    )

    # what the CRM or another screen remembered about the contact, with where it came from
    with threadkeep.open(f"sqlite:///{server.db}") as store:
        crm = {"kind": "crm", "event": "ContactUpdate"}
        store.remember(CONTACT, "email", "old@example.com", tenant="default", source=crm)
        store.remember(
            CONTACT, "email", "dana@example.com", tenant="default", tier="critical", source=crm
        )
    dashboard.get_by_test_id("agent-send").click()  # the agent's reply refreshes the panel
    fact = guidance.get_by_test_id("fact-email")
    expect(fact).to_contain_text("dana@example.com")
    expect(fact).to_contain_text("critical · CRM ContactUpdate")
    expect(guidance.get_by_test_id("fact-was-email")).to_have_text(
        "was old@example.com (CRM ContactUpdate)"
    )
    save_screenshot(dashboard, "guidance.png")

    # moving on with a criterion missing asks first, naming what is missing
    guidance.get_by_test_id("guidance-move").click()
    expect(guidance.get_by_test_id("guidance-confirm")).to_contain_text("Price expectation known")
    # a change arriving meanwhile redraws the panel: the question stays open
    conv_path = f"/v1/conversations/{first['conversation_id']}/messages"
    api(conv_path, {"role": "agent", "content": "One moment, checking the comps."})
    expect(transcript_last(dashboard)).to_contain_text("checking the comps")
    expect(guidance.get_by_test_id("guidance-confirm")).to_contain_text("Price expectation known")
    guidance.get_by_test_id("guidance-move-cancel").click()
    expect(guidance.get_by_test_id("guidance-confirm")).to_have_count(0)
    expect(dashboard.get_by_test_id("detail-stage")).to_have_text("stage Q2")
    guidance.get_by_test_id("guidance-move").click()
    guidance.get_by_test_id("guidance-move-anyway").click()
    expect(dashboard.get_by_test_id("detail-stage")).to_have_text("stage Q3")
    expect(guidance.get_by_test_id("guidance-stage")).to_contain_text("Motivation")

    # once the criteria are met the move needs no confirmation
    api("/v1/chat", {"message": "Relocating for work", "conversation_id": first["conversation_id"]})
    expect(guidance.get_by_test_id("criterion-met")).to_have_text(["Motivation known"])
    guidance.get_by_test_id("guidance-move").click()
    expect(dashboard.get_by_test_id("detail-stage")).to_have_text("stage Q4")
    expect(guidance.get_by_test_id("guidance-confirm")).to_have_count(0)
