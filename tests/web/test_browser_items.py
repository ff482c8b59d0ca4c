"""Tool calls and results: one compact line each for agents, never shown to visitors."""

from __future__ import annotations

import pytest

from tests._servers import unavailable
from tests.web._pages import conversation_id, open_row, say, transcript

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - depends on the machine
    unavailable("playwright is not installed (pip install playwright)")

pytestmark = pytest.mark.browser

CALL = {
    "type": "function_call",
    "call_id": "c1",
    "name": "estimate_value",
    "arguments": '{"zip":"78701"}',
}
OUTPUT = {"type": "function_call_output", "call_id": "c1", "output": '{"low": 420000}'}


def test_items_show_to_agents_only(new_page, api):
    chat = new_page("/", width=390, height=820)
    say(chat, "What could I get for my house?")
    conv = conversation_id(chat)
    path = f"/v1/conversations/{conv}/messages"
    api(path, {"role": "assistant", "payload": CALL})
    api(path, {"role": "tool", "payload": OUTPUT})
    api(path, {"role": "system", "content": "note for agents"})
    api(path, {"role": "assistant", "content": "About 420k and up."})
    expect(transcript(chat).last).to_contain_text("About 420k and up.")
    expect(transcript(chat)).to_have_count(3)  # the visitor's words and the bot's, nothing else
    expect(chat.locator(".tk-item, [data-role=tool], [data-role=system]")).to_have_count(0)

    dashboard = new_page("/dashboard")
    expect(dashboard.locator("body")).to_have_attribute("data-ready", "1")
    open_row(dashboard, conv)
    items = dashboard.locator(".tk-item")
    expect(items).to_have_count(2)
    expect(items.first).to_contain_text('→ estimate_value({"zip":"78701"})')
    expect(items.last).to_contain_text('← {"low": 420000}')
    expect(dashboard.locator("[data-role=system]")).to_contain_text("note for agents")
