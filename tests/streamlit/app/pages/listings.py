"""Another page of the same app: the listings screen, with the same lead's chat."""

import streamlit as st
from lead import lead_page

st.session_state["listings_conversation_id"] = lead_page("Listings for Dana", None)
