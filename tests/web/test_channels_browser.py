"""The dashboard shows a channel conversation's channel and each reply's delivery state, live."""

from __future__ import annotations

from typing import Any

import pytest

import threadkeep
from tests.web._pages import open_row
from tests.web.conftest import LiveServer

pytestmark = pytest.mark.browser


def test_dashboard_shows_channel_and_delivery_live(new_page: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    with threadkeep.open(f"sqlite:///{server.db}") as store:
        conv = store.start("16505551234", channel="whatsapp", metadata={"phone": "16505551234"})
        store.append(conv.id, "user", "Is the house still for sale?")
        store.append(conv.id, "assistant", "Yes! When can you visit?", metadata={"reply_to": 1})
        store.set_delivery(conv.id, 2, "sent", provider_id="wamid.OUT1")
        store.append(conv.id, "user", "Tomorrow")
        store.append(conv.id, "assistant", "Great, 10am?", metadata={"reply_to": 3})
        store.set_delivery(conv.id, 4, "failed", error="outside the 24-hour window: template")
        dashboard = new_page("/dashboard")
        expect(dashboard.locator("body")).to_have_attribute("data-ready", "1")
        row = dashboard.locator(f"tr.row[data-id='{conv.id}']")
        expect(row).to_contain_text("whatsapp")
        open_row(dashboard, conv.id)
        deliveries = dashboard.get_by_test_id("delivery")
        expect(deliveries).to_have_count(2)
        expect(deliveries.nth(0)).to_have_text("delivery: sent")
        expect(deliveries.nth(1)).to_have_attribute("data-delivery", "failed")
        expect(deliveries.nth(1)).to_contain_text("outside the 24-hour window")
        store.set_delivery(conv.id, 2, "read")  # a status webhook elsewhere: shown live
        expect(deliveries.nth(0)).to_have_text("delivery: read")
