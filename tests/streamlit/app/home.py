"""A two-page Streamlit app of a realtor's screens, each embedding the lead's chat."""

import os

import streamlit as st

import threadkeep
from threadkeep.streamlit import chat

st.set_page_config(page_title="Lead", layout="wide")
store = st.cache_resource(threadkeep.open)(os.environ["TK_STREAMLIT_STORE"])
st.title("Lead: Dana")
conv = chat(
    store,
    contact_id=os.environ.get("TK_CONTACT", "+15550100"),
    tenant="loc-1",
    agent_id="jorge",
    playbook=os.environ.get("TK_PLAYBOOK", "realtor"),
    refresh=float(os.environ.get("TK_REFRESH", "1")),
)
st.session_state["conversation_id"] = conv.id
