"""The web chat, the dashboard and the widget in headless Chromium against the real app.

Assertions do not depend on the bot's wording: a bot turn is "one more assistant message".
"""

from __future__ import annotations

import re

import pytest

from tests._servers import unavailable

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - depends on the machine
    unavailable("playwright is not installed (pip install playwright)")

pytestmark = pytest.mark.browser

from tests.web._pages import conversation_id, fits_the_screen, open_row, say, transcript  # noqa: E402


def test_chat_remembers_across_reload_and_restart(new_page, server, save_screenshot):
    page = new_page("/", width=390, height=820)  # a phone
    expect(page.get_by_test_id("live")).to_have_attribute("data-state", "live")
    expect(page.locator("body")).to_have_attribute("data-status", "new")
    say(page, "Hi, I want to sell my house")
    expect(page.locator("body")).to_have_attribute("data-stage", "Q1")  # the seller bot asked Q1
    say(page, "It needs a new roof")
    conv = conversation_id(page)
    expect(transcript(page)).to_have_count(4)
    expect(page.locator("body")).to_have_attribute("data-status", "active")
    expect(page.locator("body")).to_have_attribute("data-stage", "Q2")
    expect(transcript(page).last).to_contain_text("price")
    assert fits_the_screen(page)
    expect(page.get_by_test_id("input")).to_be_in_viewport()
    save_screenshot(page, "chat.png")

    page.reload()
    expect(transcript(page)).to_have_count(4)
    assert conversation_id(page) == conv
    expect(transcript(page).first).to_contain_text("Hi, I want to sell my house")
    expect(page.locator("body")).to_have_attribute("data-stage", "Q2")

    server.stop()
    expect(page.get_by_test_id("live")).to_have_attribute(
        "data-state", re.compile("^(reconnecting|offline)$")
    )
    server.start()
    expect(page.get_by_test_id("live")).to_have_attribute("data-state", "live", timeout=30_000)
    # The open page carries on with the same conversation after the restart …
    say(page, "Around 450k")
    expect(transcript(page)).to_have_count(6)
    expect(page.locator("body")).to_have_attribute("data-stage", "Q3")
    assert conversation_id(page) == conv
    # … and so does a fresh load: everything came back from the store.
    page.reload()
    expect(transcript(page)).to_have_count(6)
    expect(transcript(page).nth(4)).to_contain_text("Around 450k")
    assert conversation_id(page) == conv

    page.get_by_test_id("new-chat").click()
    expect(transcript(page)).to_have_count(0)
    expect(page.locator("body")).to_have_attribute("data-status", "new")
    expect(page.locator("body")).to_have_attribute("data-conversation-id", "")
    say(page, "Another house")
    assert conversation_id(page) != conv
    expect(page.locator("body")).to_have_attribute("data-stage", "Q1")
    page.reload()
    expect(transcript(page)).to_have_count(2)  # the new chat is the one kept


def test_second_tab_follows_live(new_page):
    first = new_page("/")
    say(first, "hello from tab one")
    second = first.context.new_page()
    second.goto(first.url)
    expect(transcript(second)).to_have_count(2)
    assert conversation_id(second) == conversation_id(first)
    say(second, "hello from tab two")
    expect(transcript(first)).to_have_count(4)
    expect(transcript(first).nth(2)).to_contain_text("hello from tab two")

    # The indicator follows the connection: offline, then live again (and caught up).
    expect(first.get_by_test_id("live")).to_have_attribute("data-state", "live")
    first.context.set_offline(True)
    expect(first.get_by_test_id("live")).to_have_attribute("data-state", "offline")
    expect(first.get_by_test_id("live")).to_have_text("Offline")
    first.context.set_offline(False)
    expect(first.get_by_test_id("live")).to_have_attribute("data-state", "live")
    say(second, "back online")
    expect(transcript(first)).to_have_count(6)


def test_dashboard_shows_other_context_live(new_page, api, save_screenshot):
    qualified = api(
        "/v1/chat",
        {
            "message": "Inherited house, needs major repairs, want $280k, can close in 45 days "
            "and cash is totally fine",
            "contact_id": "+1 555 0101",
        },
    )
    assert (qualified["stage"], qualified["status"]) == ("QUALIFIED", "active")
    api("/v1/chat", {"message": "Just curious what my house is worth", "contact_id": "crm-4821"})
    first = api(
        "/v1/chat",
        {"message": "It needs a new roof, I am relocating for work", "contact_id": "+1 555 0199"},
    )
    waiting = api(
        "/v1/chat",
        {"message": "Can I talk to a person?", "conversation_id": first["conversation_id"]},
    )
    assert waiting["status"] == "waiting_agent"  # asking for a human hands the chat over

    dashboard = new_page("/dashboard")
    expect(dashboard.locator("body")).to_have_attribute("data-ready", "1")
    expect(dashboard.get_by_test_id("live")).to_have_attribute("data-state", "live")
    rows = dashboard.locator("tr.row")
    expect(rows).to_have_count(3)
    # newest activity first, with contact, status, stage and message count
    expect(rows.nth(0)).to_contain_text("+1 555 0199")
    expect(rows.nth(0)).to_contain_text("waiting_agent")
    expect(rows.nth(0)).to_contain_text("Q2")
    expect(rows.nth(0).get_by_test_id("count")).to_have_text("4")
    expect(rows.nth(1)).to_contain_text("crm-4821")
    expect(rows.nth(2)).to_contain_text("+1 555 0101")
    expect(rows.nth(2)).to_contain_text("QUALIFIED")
    expect(dashboard.get_by_test_id("count-stage-QUALIFIED")).to_contain_text("1")

    visitor = new_page("/", width=400, height=800)
    say(visitor, "Hello, is anyone there?")
    conv = conversation_id(visitor)
    row = dashboard.locator(f"tr.row[data-id='{conv}']")
    expect(rows.nth(0)).to_have_attribute("data-id", conv)  # it jumped to the top, no reload
    expect(row.get_by_test_id("count")).to_have_text("2")
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("Q1")
    say(visitor, "I have a 3 bedroom house")
    expect(row.get_by_test_id("count")).to_have_text("4")
    expect(dashboard.get_by_test_id("total")).to_have_text("(4)")
    expect(dashboard.get_by_test_id("count-status-active")).to_contain_text("3")
    expect(dashboard.get_by_test_id("count-status-waiting_agent")).to_contain_text("1")
    expect(dashboard.get_by_test_id("count-stage-Q1")).to_contain_text("2")

    open_row(dashboard, conv)
    expect(transcript(dashboard, "detail-transcript")).to_have_count(4)
    expect(dashboard.get_by_test_id("detail-status")).to_have_text("active")
    expect(dashboard.get_by_test_id("field-stage")).to_have_value("Q1")  # the current state
    expect(dashboard.get_by_test_id("field-temperature")).to_have_value("cold")
    expect(dashboard.get_by_test_id("summary-temperature")).to_contain_text("cold")  # lead summary
    say(visitor, "Still there? It needs some work, the roof leaks")
    expect(transcript(dashboard, "detail-transcript")).to_have_count(6)
    expect(dashboard.get_by_test_id("detail-stage")).to_have_text("stage Q2")
    expect(dashboard.get_by_test_id("field-condition")).to_have_value("needs_work")

    dashboard.get_by_test_id("filter-status").select_option("closed")
    expect(rows).to_have_count(0)
    dashboard.get_by_test_id("filter-status").select_option("waiting_agent")
    expect(rows).to_have_count(1)
    expect(row).to_have_count(0)
    dashboard.get_by_test_id("filter-status").select_option("active")
    expect(row).to_be_visible()
    expect(rows).to_have_count(3)
    dashboard.get_by_test_id("filter-status").select_option("")
    dashboard.get_by_test_id("filter-stage").select_option("QUALIFIED")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("+1 555 0101")
    dashboard.get_by_test_id("count-stage-QUALIFIED").click()  # a count chip toggles its filter
    expect(rows).to_have_count(4)
    expect(rows.first).to_have_attribute("data-id", conv)
    save_screenshot(dashboard, "dashboard.png")


def test_handoff_silences_the_bot_until_hand_back(new_page):
    visitor = new_page("/")
    say(visitor, "I'd like to talk about selling")
    conv = conversation_id(visitor)
    dashboard = new_page("/dashboard")
    open_row(dashboard, conv)

    dashboard.get_by_test_id("agent-name").fill("Dana")
    dashboard.get_by_test_id("take-over").click()
    expect(dashboard.get_by_test_id("detail-status")).to_have_text("waiting_agent")
    expect(dashboard.get_by_test_id("detail-agent")).to_have_text("with Dana")
    expect(visitor.locator("body")).to_have_attribute("data-status", "waiting_agent")
    expect(visitor.get_by_test_id("banner")).to_be_visible()

    say(visitor, "Are you a real person?", replies=False)
    expect(transcript(dashboard, "detail-transcript").last).to_contain_text(
        "Are you a real person?"
    )
    dashboard.get_by_test_id("agent-input").fill("Yes, I'm Dana from the team.")
    dashboard.get_by_test_id("agent-send").click()
    agent = transcript(visitor).and_(visitor.locator("[data-role=agent]"))
    expect(agent).to_have_count(1)
    expect(agent).to_contain_text("Dana")
    say(visitor, "Great, thanks", replies=False)

    dashboard.get_by_test_id("hand-back").click()
    expect(visitor.locator("body")).to_have_attribute("data-status", "active")
    expect(visitor.get_by_test_id("banner")).to_be_hidden()
    say(visitor, "Back to the bot then")

    dashboard.once("dialog", lambda dialog: dialog.accept())  # Close asks for confirmation
    dashboard.get_by_test_id("close").click()
    expect(visitor.locator("body")).to_have_attribute("data-status", "closed")
    # A closed conversation takes no more messages: the next one starts a new conversation.
    visitor.get_by_test_id("input").fill("One more thing")
    visitor.get_by_test_id("send").click()
    expect(visitor.locator("body")).not_to_have_attribute("data-conversation-id", conv)
    expect(transcript(visitor)).to_have_count(2)
    expect(visitor.locator("body")).to_have_attribute("data-status", "active")

    # Asking the bot for a person hands the new conversation over by itself.
    new_conv = conversation_id(visitor)
    say(visitor, "Can I talk to a human please?")
    expect(visitor.locator("body")).to_have_attribute("data-status", "waiting_agent")
    expect(visitor.get_by_test_id("banner")).to_be_visible()
    row = dashboard.locator(f"tr.row[data-id='{new_conv}']")
    expect(row).to_contain_text("waiting_agent")  # live on the dashboard
    say(visitor, "Hello?", replies=False)
    expect(row.get_by_test_id("count")).to_have_text("5")


def test_widget_keeps_one_conversation_across_pages(new_page, save_screenshot):
    page = new_page("/demo/widget", width=1100, height=760)
    widget = page.locator("#threadkeep-widget")
    widget.locator(".bubble").click()
    widget.locator("input").fill("Hi, I am thinking of selling my house")
    widget.locator("form button").click()
    expect(widget.locator(".tk-msg[data-role=assistant]")).to_have_count(1)
    conv = widget.get_attribute("data-conversation-id")
    assert conv

    page.get_by_test_id("to-page2").click()
    expect(page).to_have_url(re.compile(r"/demo/widget/page2$"))
    widget = page.locator("#threadkeep-widget")
    expect(widget.locator(".panel")).to_be_visible()
    expect(widget.locator(".tk-msg:not(.tk-pending)")).to_have_count(2)
    assert widget.get_attribute("data-conversation-id") == conv

    other = page.context.new_page()
    other.goto(page.url.replace("/page2", ""))
    other_widget = other.locator("#threadkeep-widget")
    expect(other_widget).to_have_attribute("data-conversation-id", conv)
    expect(other_widget.locator(".panel")).to_be_visible()  # it was left open on the other page
    other_widget.locator("input").fill("The roof leaks (typed in another tab)")
    other_widget.locator("form button").click()
    expect(other_widget.locator(".tk-msg[data-role=assistant]")).to_have_count(2)
    expect(widget.locator(".tk-msg:not(.tk-pending)")).to_have_count(4)
    expect(widget.locator(".tk-msg").nth(2)).to_contain_text("The roof leaks (typed in another")
    assert widget.get_attribute("data-conversation-id") == conv
    save_screenshot(page, "widget.png")


def test_widget_on_pages_of_another_site(new_page, other_site):
    """One script tag on another origin's pages: one conversation across its pages and tabs."""
    page = new_page(f"{other_site.origin}/", width=1000, height=700)
    widget = page.locator("#threadkeep-widget")
    expect(widget).to_have_attribute("data-live", "live")  # the events stream, cross-origin
    widget.locator(".bubble").click()
    widget.locator("input").fill("Hi, the house needs a new roof")
    widget.locator("form button").click()
    expect(widget.locator(".tk-msg[data-role=assistant]")).to_have_count(1)
    expect(widget).to_have_attribute("data-stage", "Q2")
    expect(widget.locator(".error")).to_be_hidden()
    conv = widget.get_attribute("data-conversation-id")
    assert conv

    page.get_by_test_id("next").click()
    expect(page).to_have_url(f"{other_site.origin}/listings")
    widget = page.locator("#threadkeep-widget")
    expect(widget.locator(".tk-msg:not(.tk-pending)")).to_have_count(2)
    assert widget.get_attribute("data-conversation-id") == conv

    other = page.context.new_page()
    other.goto(f"{other_site.origin}/")
    other_widget = other.locator("#threadkeep-widget")
    expect(other_widget).to_have_attribute("data-conversation-id", conv)
    other_widget.locator("input").fill("Around 450k")
    other_widget.locator("form button").click()
    expect(widget.locator(".tk-msg:not(.tk-pending)")).to_have_count(4)  # live, other tab
    expect(widget).to_have_attribute("data-stage", "Q3")


def test_two_screens_demo_stays_in_sync(new_page, save_screenshot):
    page = new_page("/demo/two-screens", width=1400, height=760)
    one = page.frame_locator("[data-testid=screen-one]").locator("#threadkeep-widget")
    two = page.frame_locator("[data-testid=screen-two]").locator("#threadkeep-widget")
    for widget in (one, two):
        expect(widget).to_have_attribute("data-live", "live")
        widget.locator(".bubble").click()
        expect(widget.locator(".panel")).to_be_visible()
    one.locator("input").fill("Hi, it needs a new roof")
    one.locator("form button").click()
    expect(two.locator(".tk-msg[data-role=assistant]")).to_have_count(1)  # live on screen two
    expect(two.locator(".tk-msg[data-role=user]")).to_contain_text("needs a new roof")
    two.locator("input").fill("Around 450k")
    two.locator("form button").click()
    expect(one.locator(".tk-msg:not(.tk-pending)")).to_have_count(4)
    expect(one.locator(".tk-msg").nth(2)).to_contain_text("Around 450k")
    expect(one).to_have_attribute("data-stage", "Q3")
    conv = one.get_attribute("data-conversation-id")
    assert conv and two.get_attribute("data-conversation-id") == conv
    save_screenshot(page, "two-screens.png")


def test_state_edit_conflict_between_two_screens(new_page, save_screenshot):
    visitor = new_page("/")
    say(visitor, "My house needs work")
    conv = conversation_id(visitor)

    first = new_page(f"/dashboard#c={conv}", height=1400)
    expect(first.locator("#d-id")).to_have_text(conv)
    expect(first.get_by_test_id("live")).to_have_attribute("data-state", "live")
    # The stage is edited on the dashboard; the visitor's chat shows it without a reload.
    first.get_by_test_id("stage-input").fill("Q4")
    first.get_by_test_id("stage-save").click()
    expect(first.get_by_test_id("detail-stage")).to_have_text("stage Q4")
    expect(visitor.locator("body")).to_have_attribute("data-stage", "Q4")

    first.get_by_test_id("new-key").fill("note")
    first.get_by_test_id("new-value").fill("first draft")
    first.get_by_test_id("add-field").click()
    first.get_by_test_id("state-save").click()
    expect(first.get_by_test_id("state-msg")).to_have_text("Saved.")
    expect(first.get_by_test_id("state-version")).not_to_have_attribute("data-version", "1")
    version = int(first.get_by_test_id("state-version").get_attribute("data-version") or "0")
    assert version == 2  # 1: the bot's turn, 2: this edit

    second = new_page(f"/dashboard#c={conv}", height=1400)
    expect(second.get_by_test_id("state-version")).to_have_attribute("data-version", "2")
    expect(second.get_by_test_id("field-note")).to_have_value("first draft")
    second.get_by_test_id("field-note").fill("edited on screen two")

    first.get_by_test_id("field-note").fill("edited on screen one")
    first.get_by_test_id("state-save").click()
    expect(first.get_by_test_id("state-msg")).to_have_text("Saved.")
    expect(second.get_by_test_id("state-remote")).to_be_visible()  # told live, edit kept

    second.get_by_test_id("state-save").click()
    conflict = second.get_by_test_id("conflict")
    expect(conflict).to_be_visible()
    expect(conflict.get_by_test_id("server-note")).to_have_text("edited on screen one")
    expect(conflict.locator("tr[data-field=note]")).to_contain_text("edited on screen two")
    expect(conflict.locator("tr[data-field=note]")).to_contain_text("first draft")
    second.evaluate("window.scrollTo(0, 0)")
    save_screenshot(second, "conflict.png", full_page=True)

    # Reload: their version replaces my edit.
    second.get_by_test_id("conflict-reload").click()
    expect(conflict).to_be_hidden()
    expect(second.get_by_test_id("field-note")).to_have_value("edited on screen one")
    expect(second.get_by_test_id("state-version")).to_have_attribute("data-version", "3")

    # Conflict again, and this time re-apply my edit on top of theirs.
    second.get_by_test_id("field-note").fill("edited on screen two")
    first.get_by_test_id("field-price_expectation").fill("450000")
    first.get_by_test_id("state-save").click()
    expect(first.get_by_test_id("state-version")).to_have_attribute("data-version", "4")
    second.get_by_test_id("state-save").click()
    expect(conflict).to_be_visible()
    expect(conflict.locator("tr[data-field=price_expectation]")).to_contain_text("450000")
    second.get_by_test_id("conflict-reapply").click()
    expect(conflict).to_be_hidden()
    expect(second.get_by_test_id("field-note")).to_have_value("edited on screen two")
    expect(second.get_by_test_id("field-price_expectation")).to_have_value("450000")
    for screen in (first, second):  # both screens end on version 5, holding both edits
        expect(screen.get_by_test_id("state-version")).to_have_attribute("data-version", "5")
        expect(screen.get_by_test_id("field-note")).to_have_value("edited on screen two")
        expect(screen.get_by_test_id("field-price_expectation")).to_have_value("450000")


def test_api_keys_keep_each_dashboard_to_its_tenant(new_page, keyed_api):
    keyed_api("/v1/chat", {"message": "Hi from loc-1", "contact_id": "owner-loc1"}, "key-loc-1")
    keyed_api("/v1/chat", {"message": "Hi from loc-2", "contact_id": "owner-loc2"}, "key-loc-2")

    keyless = new_page("/dashboard")
    expect(keyless.locator("#list-error")).to_contain_text("/dashboard#key=")
    expect(keyless.locator("tr.row")).to_have_count(0)

    dashboard = new_page("/dashboard#key=key-loc-1")
    rows = dashboard.locator("tr.row")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("owner-loc1")
    expect(dashboard.get_by_test_id("live")).to_have_attribute("data-state", "live")
    assert "key-loc-1" not in dashboard.url  # out of the address bar; remembered instead

    visitor = new_page("/#key=key-loc-1")
    say(visitor, "Hello from the web")
    conv = conversation_id(visitor)
    expect(dashboard.locator(f"tr.row[data-id='{conv}']")).to_be_visible()  # live, same tenant
    expect(rows).to_have_count(2)
    dashboard.reload()
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="owner-loc2")).to_have_count(0)  # loc-2's never shows
