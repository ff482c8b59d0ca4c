"""The first page of a realtor's two-page Streamlit app: the lead, with the chat."""

import os

import streamlit as st
from lead import lead_page

st.session_state["conversation_id"] = lead_page(
    "Lead: Dana", float(os.environ.get("TK_REFRESH", "1"))
)
