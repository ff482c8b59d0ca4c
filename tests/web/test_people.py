"""The scenarios of issue 16, in headless Chromium against the real app, as people meet them.

A visitor on another site with no tenant key in the page; a transcript longer than the screen
that a take-over must not scroll away; a message typed offline; a bad price typed on the
dashboard; the dashboard on a phone; a visitor who comes back after Close.
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

import pytest

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - depends on the machine
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("playwright is not installed (pip install playwright)", allow_module_level=True)

pytestmark = pytest.mark.browser

from tests.web._pages import conversation_id, fits_the_screen, open_row, say, transcript  # noqa: E402


def get_json(url: str, key: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return dict(json.loads(r.read()))


def at_bottom(page: Page, testid: str = "transcript") -> bool:
    return bool(
        page.get_by_test_id(testid).evaluate(
            "el => el.scrollHeight - el.scrollTop - el.clientHeight < 4"
        )
    )


def test_a_visitor_on_another_site_needs_no_tenant_key(
    new_page, public_server, other_site, keyed_api, save_screenshot
):
    """The widget on another origin: a visitor token, its own conversation, no internal words."""
    page = new_page(f"{other_site.origin}/", width=1000, height=700)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(json.dumps([r.url, r.headers])))
    widget = page.locator("#threadkeep-widget")
    expect(widget).to_have_attribute("data-live", "live")
    widget.locator(".bubble").click()
    widget.locator("input").fill("Hi, the house needs a new roof")
    widget.locator("form button").click()
    expect(widget.locator(".tk-msg[data-role=assistant]")).to_have_count(1)
    expect(widget.locator(".error")).to_be_hidden()
    conv = widget.get_attribute("data-conversation-id")
    assert conv
    expect(widget).to_have_attribute("data-stage", "")  # the bot's stage is not the visitor's
    assert not any("key-loc" in line for line in sent)  # no tenant key ever left the page

    # the agent, with the tenant's key, sees it on the dashboard, takes over and answers
    dashboard = new_page(f"{public_server.url}/dashboard#key=key-loc-1")
    open_row(dashboard, conv)
    dashboard.get_by_test_id("take-over").click()
    keyed_api(
        f"/v1/conversations/{conv}/messages",
        {"role": "system", "content": "INTERNAL: lead score 93"},
        "key-loc-1",
    )
    dashboard.get_by_test_id("agent-input").fill("Hi, I'm Dana from Harbor Homes.")
    dashboard.get_by_test_id("agent-send").click()
    expect(widget.locator(".tk-msg[data-role=agent]")).to_contain_text("Dana")
    expect(widget.locator(".banner")).to_be_visible()
    expect(transcript(dashboard, "detail-transcript").filter(has_text="lead score")).to_have_count(
        1
    )
    expect(widget.locator(".log")).not_to_contain_text("lead score")
    expect(widget.locator(".log")).not_to_contain_text("waiting_agent")

    # the token the browser keeps reaches that conversation and nothing else
    token = page.evaluate("JSON.parse(localStorage.getItem('threadkeep.widget')).visitor_token")
    probe = (
        "async ([url, token]) => "
        "(await fetch(url, {headers: {Authorization: 'Bearer ' + token}})).status"
    )
    base = public_server.url
    assert page.evaluate(probe, [f"{base}/v1/conversations/{conv}", token]) == 200
    assert page.evaluate(probe, [f"{base}/v1/conversations", token]) == 404
    assert page.evaluate(probe, [f"{base}/v1/conversations/{conv}/state", token]) == 404

    # a reload keeps the conversation (the browser kept the token), live again
    page.reload()
    widget = page.locator("#threadkeep-widget")
    expect(widget).to_have_attribute("data-conversation-id", conv)
    expect(widget.locator(".tk-msg:not(.tk-pending)")).to_have_count(3)
    widget.locator("input").fill("Thanks Dana!")
    widget.locator("form button").click()
    expect(transcript(dashboard, "detail-transcript").last).to_contain_text("Thanks Dana!")
    save_screenshot(page, "widget-visitor.png")


def test_take_over_keeps_a_long_transcript_at_the_bottom(new_page, api, save_screenshot):
    page = new_page("/", width=390, height=700)  # a phone: the transcript is longer than it
    say(page, "Hi, I'd like to sell")
    conv = conversation_id(page)
    for i in range(1, 16):
        api(f"/v1/conversations/{conv}/messages", {"role": "user", "content": f"detail {i}"})
        api(f"/v1/conversations/{conv}/messages", {"role": "assistant", "content": f"noted {i}"})
    expect(transcript(page)).to_have_count(32)
    expect(transcript(page).last).to_be_in_viewport()
    assert page.get_by_test_id("transcript").evaluate("el => el.scrollHeight > el.clientHeight")

    dashboard = new_page("/dashboard")
    open_row(dashboard, conv)
    dashboard.get_by_test_id("take-over").click()
    expect(page.get_by_test_id("banner")).to_be_visible()
    dashboard.get_by_test_id("agent-input").fill("Hi, this is Dana; I have your details.")
    dashboard.get_by_test_id("agent-send").click()
    agent = transcript(page).and_(page.locator("[data-role=agent]"))
    expect(agent).to_be_in_viewport()  # the banner did not carry the view off the bottom
    assert at_bottom(page)
    say(page, "Great, when can you come by?", replies=False)
    expect(transcript(page).last).to_contain_text("when can you come by")
    expect(transcript(page).last).to_be_in_viewport()
    save_screenshot(page, "chat-takeover.png")

    # a reader who scrolled up to read is left there by a new message …
    page.get_by_test_id("transcript").evaluate("el => el.scrollTo(0, 0)")
    page.get_by_test_id("transcript").dispatch_event("scroll")
    dashboard.get_by_test_id("agent-input").fill("Tomorrow at 10?")
    dashboard.get_by_test_id("agent-send").click()
    expect(transcript(page).last).to_contain_text("Tomorrow at 10?")
    expect(transcript(page).first).to_be_in_viewport()
    # … and one's own message always brings the view down
    say(page, "Tomorrow works", replies=False)
    expect(transcript(page).last).to_be_in_viewport()


def test_a_message_typed_offline_is_sent_once_on_reconnect(new_page, server):
    page = new_page("/", width=390, height=820)
    say(page, "Hi, I want to sell my house")
    conv = conversation_id(page)
    page.context.set_offline(True)
    expect(page.get_by_test_id("live")).to_have_attribute("data-state", "offline")
    page.get_by_test_id("input").fill("It needs a new roof (typed offline)")
    page.get_by_test_id("send").click()
    pending = page.locator(".tk-pending")
    expect(pending).to_contain_text("will send when back online")
    expect(page.get_by_test_id("error")).to_contain_text("offline")
    page.context.set_offline(False)
    expect(pending).to_have_count(0)
    expect(transcript(page).filter(has_text="typed offline")).to_have_count(1)
    expect(transcript(page).and_(page.locator("[data-role=assistant]"))).to_have_count(2)
    expect(page.get_by_test_id("error")).to_be_hidden()
    page.reload()
    expect(transcript(page)).to_have_count(4)
    items = get_json(f"{server.url}/v1/conversations/{conv}/messages")["items"]
    assert [m["content"] for m in items].count("It needs a new roof (typed offline)") == 1
    assert all(m["idempotency_key"] for m in items if m["role"] == "user")


def test_a_bad_price_typed_on_the_dashboard_is_refused_and_the_bot_keeps_answering(
    new_page, server
):
    page = new_page("/")
    say(page, "Hi, the house needs a new roof")
    conv = conversation_id(page)
    dashboard = new_page(f"/dashboard#c={conv}", height=1400)
    expect(dashboard.locator("#d-id")).to_have_text(conv)
    version = dashboard.get_by_test_id("state-version")
    expect(version).to_have_attribute("data-version", "1")
    dashboard.get_by_test_id("field-price_expectation").fill("about 450k")
    dashboard.get_by_test_id("state-save").click()
    expect(dashboard.get_by_test_id("state-msg")).to_contain_text("whole number")
    expect(version).to_have_attribute("data-version", "1")  # nothing saved
    # the API refuses it too, naming the field and the rule
    body = json.dumps({"value": {"price_expectation": "about 450k"}}).encode()
    request = urllib.request.Request(
        f"{server.url}/v1/conversations/{conv}/state",
        data=body,
        method="PUT",
        headers={"Content-Type": "application/json", "If-Match": '"1"'},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 422
    assert json.loads(refused.value.read())["error"]["field"] == "price_expectation"
    # the visitor never sees an error: the bot answers the next message as before
    dashboard.get_by_test_id("state-discard").click()
    say(page, "About 450k")
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(version).to_have_attribute("data-version", "2")
    expect(dashboard.get_by_test_id("field-price_expectation")).to_have_value("450000")
    expect(dashboard.get_by_test_id("summary-price_expectation")).to_contain_text("$450,000")
    # a price typed the way people write it is saved as the number
    dashboard.get_by_test_id("field-price_expectation").fill("$475,000")
    dashboard.get_by_test_id("state-save").click()
    expect(version).to_have_attribute("data-version", "3")
    expect(dashboard.get_by_test_id("summary-price_expectation")).to_contain_text("$475,000")


def test_the_dashboard_on_a_phone(new_page, api, save_screenshot):
    for contact in ("+1 555 0101", "+1 555 0102", "crm-4821"):
        api("/v1/chat", {"message": "Hi, it needs a new roof", "contact_id": contact})
    waiting = api("/v1/chat", {"message": "Can I talk to a person?", "contact_id": "+1 555 0103"})
    dashboard = new_page("/dashboard", width=390, height=844)
    expect(dashboard.locator("tr.row")).to_have_count(4)
    expect(dashboard.get_by_test_id("waiting")).to_contain_text("1")
    assert fits_the_screen(dashboard)  # no table off the edge
    save_screenshot(dashboard, "dashboard-phone.png")
    dashboard.locator(f"tr.row[data-id='{waiting['conversation_id']}']").click()
    expect(dashboard.get_by_test_id("detail-contact")).to_have_text("+1 555 0103")
    expect(dashboard.get_by_test_id("detail-contact")).to_be_in_viewport()
    bar = dashboard.locator(".tk-bar").bounding_box()
    head = dashboard.get_by_test_id("detail-contact").bounding_box()
    assert bar and head and head["y"] >= bar["y"] + bar["height"]  # not under the sticky bar
    status = dashboard.locator(f"tr.row[data-id='{waiting['conversation_id']}'] .tk-badge")
    stage_cell = status.locator("xpath=../following-sibling::td[1]")
    badge, stage = status.bounding_box(), stage_cell.bounding_box()
    assert badge and stage and badge["x"] + badge["width"] <= stage["x"]  # no overlap
    assert fits_the_screen(dashboard)
    save_screenshot(dashboard, "dashboard-phone-detail.png")


def test_the_api_docs_work_without_internet(new_page, server):
    """/docs renders from the package's own files: every request off this machine is refused."""
    page = new_page("/healthz")
    outside: list[str] = []

    def only_loopback(route):
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(server.url + "/docs")
    expect(page.locator(".opblock-summary-path").filter(has_text="/v1/chat")).to_be_visible()
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("threadkeep")
    assert outside == []


def test_a_returning_visitor_is_recognised(new_page, save_screenshot):
    page = new_page("/", width=390, height=820)
    say(page, "Hi, the house needs a new roof")
    say(page, "Around 450k")
    first = conversation_id(page)
    dashboard = new_page(f"/dashboard#c={first}")
    expect(dashboard.locator("#d-id")).to_have_text(first)
    dashboard.once("dialog", lambda dialog: dialog.accept())
    dashboard.get_by_test_id("close").click()
    expect(page.locator("body")).to_have_attribute("data-status", "closed")

    page.reload()  # later, the same browser: the contact was kept across Close
    page.get_by_test_id("input").fill("Hi again, still thinking about selling")
    page.get_by_test_id("send").click()
    expect(page.locator("body")).not_to_have_attribute("data-conversation-id", first)
    second = conversation_id(page)
    expect(transcript(page)).to_have_count(2)  # a new conversation: the message and a reply
    reply = transcript(page).last
    expect(reply).to_contain_text("Welcome back")
    expect(reply).to_contain_text("$450,000")
    expect(reply).to_contain_text("What's making you think about selling?")  # not Q1 again
    expect(page.locator("body")).to_have_attribute("data-stage", "Q3")

    open_row(dashboard, second)
    related = dashboard.get_by_test_id("related")
    expect(related).to_have_count(1)  # the contact's earlier conversation, one tap away
    related.click()
    expect(dashboard.locator("#d-id")).to_have_text(first)
    save_screenshot(page, "chat-returning.png")
