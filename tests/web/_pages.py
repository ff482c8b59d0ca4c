"""What the browser tests do on a page: send a message, read the transcript, open a row."""

from __future__ import annotations

from playwright.sync_api import Locator, Page, expect


def transcript(page: Page, testid: str = "transcript") -> Locator:
    return page.get_by_test_id(testid).locator(".tk-msg:not(.tk-pending)")


def say(page: Page, text: str, *, replies: bool = True) -> None:
    """Send a message from the chat page; wait for it (and for a bot reply when expected)."""
    bot_before = transcript(page).and_(page.locator("[data-role=assistant]")).count()
    page.get_by_test_id("input").fill(text)
    page.get_by_test_id("send").click()
    expect(page.locator(".tk-pending")).to_have_count(0)
    expect(transcript(page).filter(has_text=text).last).to_be_visible()
    bot = transcript(page).and_(page.locator("[data-role=assistant]"))
    expect(bot).to_have_count(bot_before + 1 if replies else bot_before)


def conversation_id(page: Page) -> str:
    expect(page.locator("body")).not_to_have_attribute("data-conversation-id", "")
    return str(page.locator("body").get_attribute("data-conversation-id"))


def open_row(dashboard: Page, conv_id: str) -> None:
    dashboard.locator(f"tr.row[data-id='{conv_id}']").click()
    expect(dashboard.locator("#d-id")).to_have_text(conv_id)


def fits_the_screen(page: Page) -> bool:
    """Whether the page needs no sideways scrolling (a phone-sized screen shows all of it)."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))
