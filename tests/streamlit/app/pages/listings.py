"""Another page of the same app: the listings screen, with the same lead's chat."""

import os

import streamlit as st

import threadkeep
from threadkeep.streamlit import chat

st.set_page_config(page_title="Listings", layout="wide")
store = st.cache_resource(threadkeep.open)(os.environ["TK_STREAMLIT_STORE"])
st.title("Listings for Dana")
conv = chat(
    store,
    contact_id=os.environ.get("TK_CONTACT", "+15550100"),
    tenant="loc-1",
    agent_id="jorge",
    playbook=os.environ.get("TK_PLAYBOOK", "realtor"),
    refresh=None,
)
st.session_state["listings_conversation_id"] = conv.id
