"""Signatures and parsers on the research notes' known-answer payloads (pure, no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.channels._payloads import (
    ACCOUNT_ERROR,
    APP_SECRET,
    AUTH_TOKEN,
    FAILED_STATUS,
    PHONE_NUMBER_ID,
    SIGNATURES,
    TWILIO_URLS,
    TYPES,
    envelope,
    fixture,
)
from threadkeep.channels import (
    SignatureInvalid,
    SignatureMissing,
    UnreadablePayload,
    twilio,
    whatsapp,
)

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
WA_FIXTURES = ["whatsapp_text.json", "whatsapp_image.json", "whatsapp_status_delivered.json"]
TW_FIXTURES = ["twilio_sms.form", "twilio_whatsapp_image.form"]


@pytest.mark.parametrize("name", WA_FIXTURES)
def test_whatsapp_known_answer_signatures_verify(name):
    raw = fixture(name)
    assert whatsapp.sign(raw, APP_SECRET) == SIGNATURES[name]
    whatsapp.verify(raw, {"X-Hub-Signature-256": SIGNATURES[name]}, APP_SECRET)
    whatsapp.verify(raw, {"x-hub-signature-256": SIGNATURES[name]}, APP_SECRET)


@pytest.mark.parametrize("name", WA_FIXTURES)
def test_whatsapp_bad_signatures_are_refused(name):
    raw = fixture(name)
    with pytest.raises(SignatureMissing):
        whatsapp.verify(raw, {}, APP_SECRET)
    with pytest.raises(SignatureInvalid):
        whatsapp.verify(raw, {"X-Hub-Signature-256": SIGNATURES[name]}, "another_secret")
    with pytest.raises(SignatureInvalid):
        whatsapp.verify(raw + b" ", {"X-Hub-Signature-256": SIGNATURES[name]}, APP_SECRET)
    with pytest.raises(SignatureInvalid):  # non-ASCII in a forged header: refused, no TypeError
        whatsapp.verify(raw, {"X-Hub-Signature-256": "sha256=é"}, APP_SECRET)


def test_whatsapp_reserialised_body_does_not_verify():
    raw = fixture("whatsapp_text.json")
    again = json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False).encode()
    assert whatsapp.sign(again, APP_SECRET) == (
        "sha256=618ffa81e9237ebac6a9109a4a1de44a4b6e806a2f2071c7dde3a085d0d4a01b"
    )
    with pytest.raises(SignatureInvalid):
        whatsapp.verify(
            again, {"X-Hub-Signature-256": SIGNATURES["whatsapp_text.json"]}, APP_SECRET
        )


def test_handshake():
    good = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": "vibe"}
    assert whatsapp.handshake(good, "vibe") == "1158201444"
    assert whatsapp.handshake(good, "other") is None
    assert whatsapp.handshake({**good, "hub.mode": "unsubscribe"}, "vibe") is None
    assert whatsapp.handshake({"hub.mode": "subscribe", "hub.verify_token": "vibe"}, "vibe") is None


def test_whatsapp_text_fixture_parses_escapes():
    done = whatsapp.parse(fixture("whatsapp_text.json"))
    (msg,) = done.messages
    assert msg.text == "Does it come in another color? Café 😀"
    assert (
        msg.provider_message_id == "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    )
    assert (msg.contact_id, msg.phone, msg.profile_name) == (
        "16505551234",
        "16505551234",
        "Sheena Nelson",
    )
    assert msg.account == PHONE_NUMBER_ID
    assert msg.provider_timestamp == datetime.fromtimestamp(1749416383, UTC)
    assert (msg.channel, msg.provider, msg.kind, msg.expects_reply) == (
        "whatsapp",
        "whatsapp",
        "text",
        True,
    )


def test_whatsapp_image_fixture_keys_the_contact_by_bsuid():
    (msg,) = whatsapp.parse(fixture("whatsapp_image.json")).messages
    assert msg.contact_id == "US.13491208655302741918"
    assert msg.phone == "16505551234"
    assert msg.kind == "media"
    assert msg.text == "Fachada de la casa — ¿cuánto vale?"
    (media,) = msg.media
    assert (media.kind, media.provider_media_id, media.mime_type) == (
        "image",
        "1003383421387256",
        "image/jpeg",
    )
    assert media.url is not None and media.url.startswith("https://lookaside.fbsbx.com/")


def test_whatsapp_status_fixture():
    done = whatsapp.parse(fixture("whatsapp_status_delivered.json"))
    assert done.messages == []
    (status,) = done.statuses
    assert status.state == "delivered"
    assert (
        status.provider_message_id == "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI0QUQ2MjA4NEYyRkExNjMyREUA"
    )
    assert status.recipient == "16505551234"


EXPECTED = {
    "text": ("text", "Does it come in another color?", None, True),
    "button_reply": ("interactive", "Cancel", "cancel-button", True),
    "list_reply": ("interactive", "Priority Mail Express", "priority_express", True),
    "button": ("button", "Unsubscribe", "Unsubscribe", True),
    "image": ("media", "Taj Mahal", None, True),
    "audio": ("media", "[audio]", None, True),
    "document": ("media", "my receipt", None, True),
    "location": (
        "location",
        "[location: Philz Coffee, 101 Forest Ave, Palo Alto, CA 94301 "
        "(37.44221496582, -122.16165924072)]",
        None,
        True,
    ),
    "contacts": ("contacts", "[contacts: Barbara J. Johnson]", None, True),
    "reaction": ("reaction", "[reaction 👍]", None, False),
    "unsupported": ("unsupported", "[unsupported message: edit]", None, True),
}


@pytest.mark.parametrize("name", sorted(TYPES))
def test_every_whatsapp_message_type(name):
    raw = json.dumps(envelope(messages=[TYPES[name]])).encode()
    (msg,) = whatsapp.parse(raw).messages
    assert (msg.kind, msg.text, msg.reply_payload, msg.expects_reply) == EXPECTED[name]
    assert msg.provider_message_id == TYPES[name]["id"]


def test_whatsapp_type_details():
    by_id = {
        m.provider_message_id: m
        for m in whatsapp.parse(
            json.dumps(envelope(messages=list(TYPES.values()))).encode()
        ).messages
    }
    assert by_id["wamid.I1"].context_message_id == "wamid.CTX1"
    assert by_id["wamid.M3"].media[0].filename == "receipt.pdf"
    assert by_id["wamid.M2"].media[0].mime_type == "audio/ogg; codecs=opus"
    assert (
        by_id["wamid.L1"].location is not None
        and by_id["wamid.L1"].location["latitude"] == 37.44221496582
    )
    assert (
        by_id["wamid.C1"].contacts is not None
        and by_id["wamid.C1"].contacts[0]["phones"][0]["wa_id"] == "14125550829"
    )
    assert by_id["wamid.R1"].reaction == {"message_id": "wamid.OUT1", "emoji": "👍"}
    assert by_id["wamid.U1"].errors[0].code == 131051


def test_whatsapp_batched_entries_changes_statuses_and_errors():
    first = envelope(messages=[TYPES["text"], TYPES["image"]], statuses=[FAILED_STATUS])
    second = envelope(messages=[TYPES["location"]], errors=[ACCOUNT_ERROR], phone_number_id="999")
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            first["entry"][0],
            {
                "id": "2",
                "changes": [
                    second["entry"][0]["changes"][0],
                    {"field": "account_update", "value": {}},
                ],
            },
        ],
    }
    done = whatsapp.parse(json.dumps(body).encode())
    assert [m.provider_message_id for m in done.messages] == ["wamid.T1", "wamid.M1", "wamid.L1"]
    assert [m.account for m in done.messages] == [PHONE_NUMBER_ID, PHONE_NUMBER_ID, "999"]
    (failed,) = done.statuses
    assert failed.state == "failed" and failed.error is not None
    assert (failed.error.code, failed.error.title) == (131047, "Re-engagement message")
    assert [e.code for e in done.errors] == [130429]
    assert done.ignored == ["field 'account_update' ignored"]


def test_whatsapp_sender_matched_among_several_contacts_and_username_adopters():
    other = {"profile": {"name": "Someone Else"}, "wa_id": "19998887777"}
    raw = json.dumps(
        envelope(
            messages=[TYPES["text"]],
            contacts=[other, {"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
        )
    ).encode()
    assert whatsapp.parse(raw).messages[0].profile_name == "Sheena Nelson"
    bsuid = {**TYPES["text"], "from": "", "from_user_id": "user.93737"}
    contact = {
        "profile": {"name": "Sheena Nelson", "username": "@sheena"},
        "wa_id": "",
        "user_id": "user.93737",
    }
    (msg,) = whatsapp.parse(
        json.dumps(envelope(messages=[bsuid], contacts=[contact])).encode()
    ).messages
    assert (msg.contact_id, msg.phone, msg.profile_name) == ("user.93737", None, "Sheena Nelson")


def test_whatsapp_dashboard_test_sample_without_wamid_prefix():
    sample = {
        "field": "messages",
        "value": envelope(messages=[{**TYPES["text"], "id": "ABGGFlA5Fpa"}])["entry"][0]["changes"][
            0
        ]["value"],
    }
    raw = json.dumps(
        {"object": "whatsapp_business_account", "entry": [{"id": "0", "changes": [sample]}]}
    ).encode()
    assert whatsapp.parse(raw).messages[0].provider_message_id == "ABGGFlA5Fpa"


def test_whatsapp_played_and_unknown_statuses_are_ignored():
    played = {"id": "wamid.X", "status": "played", "timestamp": "1"}
    done = whatsapp.parse(json.dumps(envelope(statuses=[played])).encode())
    assert done.statuses == [] and done.ignored == ["status 'played' of 'wamid.X' ignored"]


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"entry": 1}',
        json.dumps(envelope(messages=[{"type": "text"}])).encode(),
        json.dumps(envelope(messages=[{**TYPES["text"], "timestamp": "soon"}])).encode(),
        json.dumps(envelope(messages=[{**TYPES["text"], "from": ""}], contacts=[])).encode(),
    ],
)
def test_whatsapp_unreadable_bodies(raw):
    with pytest.raises(UnreadablePayload):
        whatsapp.parse(raw)


@pytest.mark.parametrize("name", TW_FIXTURES)
def test_twilio_known_answer_signatures(name):
    raw, url = fixture(name), TWILIO_URLS[name]
    assert twilio.sign(url, twilio.form(raw), AUTH_TOKEN) == SIGNATURES[name]
    twilio.verify(url, raw, {"X-Twilio-Signature": SIGNATURES[name]}, AUTH_TOKEN)
    twilio.verify(url.replace("bot.example.com", "bot.example.com:443"), raw,
                  {"X-Twilio-Signature": SIGNATURES[name]}, AUTH_TOKEN)  # fmt: skip


@pytest.mark.parametrize("name", TW_FIXTURES)
def test_twilio_bad_signatures(name):
    raw, url, sig = fixture(name), TWILIO_URLS[name], {"X-Twilio-Signature": SIGNATURES[name]}
    with pytest.raises(SignatureMissing):
        twilio.verify(url, raw, {}, AUTH_TOKEN)
    for wrong_url in (url.replace("https", "http"), url + "/"):  # proxy and redirect mistakes
        with pytest.raises(SignatureInvalid):
            twilio.verify(wrong_url, raw, sig, AUTH_TOKEN)
    with pytest.raises(SignatureInvalid):
        twilio.verify(url, raw, sig, "wrong_token")
    with pytest.raises(SignatureInvalid):
        twilio.verify(url, raw.replace(b"Body=", b"Body=x"), sig, AUTH_TOKEN)


def test_twilio_sdk_vectors():
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675309"), ("Digits", "1234"),
              ("From", "+14158675309"), ("To", "+18005551212")]  # fmt: skip
    assert twilio.sign(url, params, "12345") == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    doc = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675310"), ("Digits", "1234"),
           ("From", "+14158675310"), ("To", "+18005551212")]  # fmt: skip
    assert twilio.sign("https://example.com/myapp.php?foo=1&bar=2", doc, "12345") == (
        "L/OH5YylLD5NRKLltdqwSvS0BnU="
    )


def test_twilio_sms_parses():
    (msg,) = twilio.parse_inbound(fixture("twilio_sms.form"), NOW).messages
    assert (msg.provider, msg.channel, msg.kind) == ("twilio", "sms", "text")
    assert msg.provider_message_id == "SM3c9a1f0e5b7d4c2a8e6f1b0d9c8a7e6f"
    assert (msg.contact_id, msg.phone, msg.account) == (
        "+14155550100",
        "+14155550100",
        "+15558675310",
    )
    assert msg.text == "Hi, I want to sell my house"
    assert msg.provider_timestamp == NOW


def test_twilio_whatsapp_image_parses():
    (msg,) = twilio.parse_inbound(fixture("twilio_whatsapp_image.form"), NOW).messages
    assert (msg.channel, msg.kind, msg.profile_name) == ("whatsapp", "media", "Sheena Nelson")
    assert (msg.contact_id, msg.account) == ("+16505551234", "+14155238886")
    assert msg.text == "Here is the front of the house"
    (media,) = msg.media
    assert (media.kind, media.mime_type) == ("image", "image/jpeg")
    assert media.url is not None and "/Media/ME0a1b2c3d4e5f60718293a4b5c6d7e8f9" in media.url


def test_twilio_bsuid_button_and_location():
    base = [("MessageSid", "SMx"), ("To", "whatsapp:+14155238886")]
    bsuid = base + [
        ("From", "whatsapp:US.1234"),
        ("ExternalUserId", "whatsapp:US.1234"),
        ("Body", "hi"),
    ]
    (msg,) = twilio.parse_inbound(_form(bsuid), NOW).messages
    assert (msg.contact_id, msg.phone) == ("US.1234", None)
    button = base + [("From", "whatsapp:+1555"), ("ButtonPayload", "yes-1"), ("ButtonText", "Yes")]
    (msg,) = twilio.parse_inbound(_form(button), NOW).messages
    assert (msg.kind, msg.text, msg.reply_payload) == ("button", "Yes", "yes-1")
    where = base + [
        ("From", "whatsapp:+1555"),
        ("Latitude", "37.4"),
        ("Longitude", "-122.1"),
        ("Body", ""),
    ]
    (msg,) = twilio.parse_inbound(_form(where), NOW).messages
    assert msg.kind == "location" and msg.location is not None and msg.location["latitude"] == 37.4


def _form(params: list[tuple[str, str]]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(params).encode()


def test_twilio_status_callbacks():
    sent = _form([("MessageSid", "SM1"), ("MessageStatus", "delivered"), ("To", "+1555")])
    (status,) = twilio.parse_status(sent, NOW, "c1:4").statuses
    assert (status.state, status.reference, status.provider_message_id) == (
        "delivered",
        "c1:4",
        "SM1",
    )
    failed = _form(
        [("MessageSid", "SM1"), ("MessageStatus", "undelivered"), ("ErrorCode", "63016")]
    )
    (status,) = twilio.parse_status(failed, NOW).statuses
    assert status.state == "failed" and status.error is not None and status.error.code == 63016
    assert (
        twilio.parse_status(
            _form([("MessageSid", "SM1"), ("MessageStatus", "sending")]), NOW
        ).statuses
        == []
    )
    with pytest.raises(UnreadablePayload):
        twilio.parse_status(_form([("MessageStatus", "sent")]), NOW)
    with pytest.raises(UnreadablePayload):
        twilio.parse_inbound(_form([("Body", "x")]), NOW)
    with pytest.raises(UnreadablePayload):
        twilio.parse_inbound(b"\xff\xfe", NOW)
