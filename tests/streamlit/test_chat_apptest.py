"""threadkeep.streamlit.chat under Streamlit's own AppTest: pages, reruns, restarts, guidance."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).parent / "app"
CONTACT = "+15550100"
PREFIX = f"tk-jorge-{CONTACT}"  # the page's keys: the logged-in agent's and the lead's
DRAFT = f"{PREFIX}-draft"
SEND = f"{PREFIX}-send"


def app(page: str = "home.py") -> AppTest:
    at = AppTest.from_file(str(APP / page), default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    return at


def transcript(at: AppTest) -> list[str]:
    return [m.markdown[0].value for m in at.chat_message]


def type_and_send(at: AppTest, text: str) -> None:
    at.text_area(key=DRAFT).input(text)
    at.button(key=SEND).click().run()
    assert not at.exception, at.exception


def test_one_conversation_across_pages_reruns_and_restarts(store):
    import streamlit as st

    at = app()
    conv_id = at.session_state["conversation_id"]
    assert store.get(conv_id).agent_id == "jorge" and store.get(conv_id).tenant == "loc-1"
    type_and_send(at, "Hi Dana, thanks for your message!")
    assert transcript(at) == ["Hi Dana, thanks for your message!"]
    assert [(m.role, m.content) for m in store.messages(conv_id)] == [
        ("agent", "Hi Dana, thanks for your message!")
    ]
    assert at.text_area(key=DRAFT).value == ""  # the box is emptied once sent
    at.run()  # a rerun
    assert at.session_state["conversation_id"] == conv_id
    assert transcript(at) == ["Hi Dana, thanks for your message!"]
    at.switch_page("pages/listings.py").run()  # another page of the app
    assert at.session_state["listings_conversation_id"] == conv_id
    assert transcript(at) == ["Hi Dana, thanks for your message!"]
    st.cache_resource.clear()  # a server restart: a new store handle, a new session
    again = app()
    assert again.session_state["conversation_id"] == conv_id
    assert transcript(again) == ["Hi Dana, thanks for your message!"]
    other_tab = app("pages/listings.py")  # a second browser tab opened on another page
    type_and_send(other_tab, "Sending listings now.")
    again.run()
    assert transcript(again) == ["Hi Dana, thanks for your message!", "Sending listings now."]


def test_another_agent_works_the_same_lead_with_a_draft_of_their_own(store, monkeypatch):
    jorge = app()
    conv_id = jorge.session_state["conversation_id"]
    jorge.text_area(key=DRAFT).input("half a thought")
    monkeypatch.setenv("TK_AGENT", "lee")
    lee = app()
    assert lee.session_state["conversation_id"] == conv_id  # the lead has one conversation
    lee_draft = f"tk-lee-{CONTACT}-draft"
    assert lee.text_area(key=lee_draft).value == ""  # not jorge's draft
    lee.text_area(key=lee_draft).input("Lee here, covering for Jorge today.")
    lee.button(key=f"tk-lee-{CONTACT}-send").click().run()
    assert not lee.exception, lee.exception
    assert store.get(conv_id).agent_id == "lee"  # who works the lead now
    assert transcript(lee) == ["Lee here, covering for Jorge today."]


def test_what_another_screen_writes_shows_with_its_guidance(store):
    at = app()
    conv_id = at.session_state["conversation_id"]
    store.append(conv_id, "user", "I'm just browsing, no rush")
    store.save_state(conv_id, {"contact_name": "Dana"})
    at.run()
    assert transcript(at) == ["I'm just browsing, no rush"]
    assert any("just browsing" in w.value for w in at.warning)
    checklist = [m.value for m in at.markdown if "Name known" in m.value]
    assert checklist
    assert ":material/check_circle: Name known" in checklist[0]
    assert ":material/radio_button_unchecked: Lead source known" in checklist[0]


def test_a_click_on_a_suggestion_fills_the_reply_box(store):
    at = app()
    text = "Thanks for reaching out! Who do I have the pleasure of speaking with?"
    assert at.markdown[1].value == text  # the first suggestion, under its heading
    at.button(key=f"{PREFIX}-suggest-0").click().run()
    assert at.text_area(key=DRAFT).value == text
    at.button(key=SEND).click().run()
    assert store.messages(at.session_state["conversation_id"])[-1].content == text


def test_moving_on_with_missing_criteria_asks_for_confirmation(store):
    at = app()
    conv_id = at.session_state["conversation_id"]
    move = at.button(key=f"{PREFIX}-move")
    assert move.label == "Move to Initial Contact" and move.disabled
    at.checkbox(key=f"{PREFIX}-confirm").check().run()
    at.button(key=f"{PREFIX}-move").click().run()
    assert store.get(conv_id).stage == "initial_contact"
    assert at.session_state["conversation_id"] == conv_id
    assert at.markdown[0].value.startswith("**Suggested replies**")
    store.save_state(conv_id, {"responded": True, "intent": "buy"})
    at.run()
    move = at.button(key=f"{PREFIX}-move")
    assert move.label == "Move to Qualification" and not move.disabled  # all criteria met
    move.click().run()
    assert store.get(conv_id).stage == "qualification"


def test_a_conversation_closed_elsewhere_gives_way_to_a_new_one(store):
    at = app()
    first = at.session_state["conversation_id"]
    store.close_conversation(first)
    type_and_send(at, "Are you still looking?")
    second = store.find_open(CONTACT, tenant="loc-1")
    assert second is not None and second.id != first
    assert [m.content for m in store.messages(second.id)] == ["Are you still looking?"]


def test_a_bot_can_answer_and_bad_playbooks_are_refused(store, monkeypatch):
    at = AppTest.from_function(_bot_page, default_timeout=30)
    at.run()
    assert not at.exception
    at.text_area(key="tk-lead-draft").input("hello").run()
    at.button(key="tk-lead-send").click().run()
    conv = store.find_open("lead", tenant="loc-1")
    assert [(m.role, m.content) for m in store.messages(conv.id)] == [
        ("user", "hello"),
        ("assistant", "echo: hello"),
    ]
    monkeypatch.setenv("TK_PLAYBOOK", "nope")
    bad = AppTest.from_file(str(APP / "home.py"), default_timeout=30)
    bad.run()
    assert bad.exception and "unknown playbook 'nope'" in bad.exception[0].message


def _bot_page() -> None:
    import os

    import streamlit as st

    import threadkeep
    from threadkeep.streamlit import chat

    store = st.cache_resource(threadkeep.open)(os.environ["TK_STREAMLIT_STORE"])
    chat(
        store,
        contact_id="lead",
        tenant="loc-1",
        playbook="seller",
        role="user",
        respond=lambda s, conv, message: f"echo: {message.content}",
        key="lead",
        refresh=None,
    )


def test_the_readme_app_runs(tmp_path, monkeypatch):
    import re

    import streamlit as st

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [source] = re.findall(r"```py\n(# app\.py.*?)```", readme, flags=re.S)
    monkeypatch.chdir(tmp_path)  # its store is ./threadkeep.db
    st.cache_resource.clear()
    at = AppTest.from_string(source, default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Lead: Dana"
    assert at.subheader[0].value == "Lead Capture"
    at.text_area(key=DRAFT).input("Hello from the README").run()
    at.button(key=SEND).click().run()
    assert transcript(at) == ["Hello from the README"]
    st.cache_resource.clear()
