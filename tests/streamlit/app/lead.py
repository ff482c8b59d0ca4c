"""The lead's chat as every page of the test app shows it (pages differ in title and refresh)."""

import os

import streamlit as st

import threadkeep
from threadkeep.streamlit import chat


def lead_page(title: str, refresh: float | None) -> str:
    """Render a page with the lead's chat; return the conversation's id."""
    st.set_page_config(page_title=title, layout="wide")
    store = st.cache_resource(threadkeep.open)(os.environ["TK_STREAMLIT_STORE"])
    st.title(title)
    conv = chat(
        store,
        contact_id=os.environ.get("TK_CONTACT", "+15550100"),
        tenant="loc-1",
        agent_id=os.environ.get("TK_AGENT", "jorge"),
        playbook=os.environ.get("TK_PLAYBOOK", "realtor"),
        refresh=refresh,
    )
    return conv.id
