"""GoHighLevel's wire format as pure functions: signatures, timestamps, the map, the diff."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

import threadkeep
from tests.crm._ghl_helpers import MAP, PIPELINE, STAGE_IDS, TEST_PUBLIC_PEM, sign
from threadkeep.crm.ghl import (
    PUBLISHED_ED25519_KEY,
    GhlMap,
    SignatureInvalid,
    Snapshot,
    StaleDelivery,
    Verifier,
    check_timestamp,
    desired,
    diff,
    digest,
    load_map,
    parse_event,
)

# The research notes' known-answer vector (§7.6): exact bytes, no trailing newline.
KAT_BODY = (
    b'{"type":"InboundMessage","locationId":"ve9EPM428h8vShlRW1KT","attachments":[],'
    b'"body":"Hi, I want to sell my house","contactId":"cI08i1Bls3iTB9bKgFJh",'
    b'"contentType":"text/plain","conversationId":"fcanlLgpbQgQhderivVs",'
    b'"dateAdded":"2026-06-02T14:05:12.345Z","direction":"inbound","messageType":"SMS",'
    b'"messageId":"tyW42xCD0HQpb3hhfLcx","status":"delivered",'
    b'"conversationProviderId":"cI08i1Bls3iTB9bKgF01","timestamp":"2026-06-02T14:05:12.912Z",'
    b'"webhookId":"7c1f4b2e-0d7a-4f55-9a8e-3b6c2d1e0f9a"}'
)
KAT_SIGNATURE = (
    "6opK2FgBYeyLAhrWgtZgLVnLsv9MyqZffa6GFVsSXtDgeySlzIIgEUpIBQXabMA8fSq+dcYWf9/EcWyok1aPBQ=="
)


def test_known_answer_vector():
    verifier = Verifier(TEST_PUBLIC_PEM)
    assert sign(KAT_BODY) == KAT_SIGNATURE
    assert verifier.verify(KAT_BODY, {"x-ghl-signature": KAT_SIGNATURE}) == "ed25519"
    event = parse_event(KAT_BODY)
    assert event["messageId"] == "tyW42xCD0HQpb3hhfLcx" and event["type"] == "InboundMessage"


@pytest.mark.parametrize(
    "body",
    [
        KAT_BODY + b" ",
        KAT_BODY.replace(b"sell", b"buy!"),
        json.dumps(json.loads(KAT_BODY)).encode(),  # re-serialised: other bytes
    ],
    ids=["trailing-space", "tampered", "reserialised"],
)
def test_other_bytes_do_not_verify(body):
    with pytest.raises(SignatureInvalid, match="does not verify"):
        Verifier(TEST_PUBLIC_PEM).verify(body, {"x-ghl-signature": KAT_SIGNATURE})


def test_published_key_is_the_default_and_rejects_the_test_signature():
    verifier = Verifier()
    with pytest.raises(SignatureInvalid):
        verifier.verify(KAT_BODY, {"x-ghl-signature": KAT_SIGNATURE})


def test_missing_or_garbled_headers():
    verifier = Verifier(TEST_PUBLIC_PEM)
    with pytest.raises(SignatureInvalid, match="no X-GHL-Signature header .*legacy"):
        verifier.verify(KAT_BODY, {})
    with pytest.raises(SignatureInvalid, match="not base64"):
        verifier.verify(KAT_BODY, {"x-ghl-signature": "***"})


def test_a_key_file_with_two_keys_for_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "keys.pem"
    path.write_text(PUBLISHED_ED25519_KEY + TEST_PUBLIC_PEM)
    assert Verifier(str(path)).verify(KAT_BODY, {"x-ghl-signature": KAT_SIGNATURE}) == "ed25519"
    with pytest.raises(threadkeep.InvalidInput, match="not PEM text and not a readable file"):
        Verifier(str(tmp_path / "nope.pem"))
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(threadkeep.InvalidInput, match="must be Ed25519"):
        Verifier(rsa_pem.decode())


def test_legacy_rsa_only_when_configured():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    legacy = base64.b64encode(private.sign(KAT_BODY, padding.PKCS1v15(), hashes.SHA256())).decode()
    assert (
        Verifier(TEST_PUBLIC_PEM, pem.decode()).verify(KAT_BODY, {"x-wh-signature": legacy})
        == "rsa"
    )
    with pytest.raises(SignatureInvalid, match="legacy X-WH-Signature is not accepted"):
        Verifier(TEST_PUBLIC_PEM).verify(KAT_BODY, {"x-wh-signature": legacy})
    with pytest.raises(SignatureInvalid, match="X-WH-Signature does not verify"):
        Verifier(TEST_PUBLIC_PEM, pem.decode()).verify(KAT_BODY + b"x", {"x-wh-signature": legacy})
    # Ed25519 wins when both are present
    both = {"x-wh-signature": legacy, "x-ghl-signature": KAT_SIGNATURE}
    assert Verifier(TEST_PUBLIC_PEM, pem.decode()).verify(KAT_BODY, both) == "ed25519"


def test_timestamps():
    at = datetime(2026, 6, 2, 14, 5, 12, 912000, tzinfo=UTC)
    event = parse_event(KAT_BODY)
    check_timestamp(event, at + timedelta(seconds=299), 300)
    check_timestamp(event, at - timedelta(seconds=299), 300)  # a fast sender clock
    with pytest.raises(StaleDelivery, match="refused as replays"):
        check_timestamp(event, at + timedelta(seconds=301), 300)
    check_timestamp({"type": "X"}, at, 300)  # no timestamp: the webhookId still guards
    with pytest.raises(threadkeep.InvalidInput, match="not an ISO 8601"):
        check_timestamp({"timestamp": "yesterday"}, at, 300)
    with pytest.raises(threadkeep.InvalidInput, match="no time zone"):
        check_timestamp({"timestamp": "2026-06-02T14:05:12"}, at, 300)


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"no": "type"}', b"{bad"])
def test_bodies_that_are_not_events(raw):
    with pytest.raises(threadkeep.InvalidInput):
        parse_event(raw)


def test_map_file(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(
        "fields:\n  price_expectation: abc\n  motivation: {key: motivation}\n"
        "pipeline: {id: P, stages: {Q2: s2}, inbound: {s9: Q2}}\ntags: {QUALIFIED: [q]}\n"
    )
    gmap = load_map(path)
    assert gmap.pipeline is not None
    assert gmap.fields["price_expectation"].ref == "id:abc"
    assert gmap.fields["motivation"].write("x") == {"key": "motivation", "field_value": "x"}
    assert gmap.pipeline.playbook_stage("s2") == "Q2" and gmap.pipeline.playbook_stage("s9") == "Q2"
    assert gmap.pipeline.playbook_stage("zz") is None
    assert gmap.field_of("abc") == "price_expectation" and gmap.managed_tags == {"q"}
    assert load_map(None) == GhlMap()
    path.write_text("fields:\n  price: {id: a, key: b}\n")
    with pytest.raises(threadkeep.InvalidInput, match=r"fields.price: give a custom field's id"):
        load_map(path)
    path.write_text("pipeline: {stages: {}}\n")
    with pytest.raises(threadkeep.InvalidInput, match=r"pipeline.id: Field required"):
        load_map(path)
    with pytest.raises(threadkeep.InvalidInput, match="cannot read GHL_MAP"):
        load_map(tmp_path / "missing.json")


def test_desired_and_diff():
    gmap = GhlMap.model_validate(MAP)
    want = desired(gmap, "QUALIFIED", {"price_expectation": 450000, "motivation": None})
    assert set(want.fields) == {"id:6dvNaf7VhkQ9snc5vnjJ"}  # None is not written
    assert want.tags == {"seller-qualified"} and want.pipeline_stage == STAGE_IDS["QUALIFIED"]
    plan = diff(want, Snapshot(tags=frozenset({"seller-stalled", "vip"})), gmap.managed_tags)
    assert plan.custom_fields == [{"id": "6dvNaf7VhkQ9snc5vnjJ", "field_value": 450000}]
    assert plan.add_tags == ["seller-qualified"]
    assert plan.remove_tags == ["seller-stalled"]  # "vip" is not ours to remove
    assert plan.pipeline_stage == STAGE_IDS["QUALIFIED"]
    synced = Snapshot(
        fields=plan.digests,
        tags=frozenset({"seller-qualified"}),
        pipeline_stage=STAGE_IDS["QUALIFIED"],
    )
    assert diff(want, synced, gmap.managed_tags).empty
    moved = desired(gmap, "Q2", {"price_expectation": 500000})
    plan = diff(moved, synced, gmap.managed_tags)
    assert plan.custom_fields[0]["field_value"] == 500000 and plan.remove_tags == [
        "seller-qualified"
    ]
    assert plan.pipeline_stage == STAGE_IDS["Q2"]
    assert desired(gmap, "Q1", {}).pipeline_stage is None  # unmapped stage: no move
    assert desired(GhlMap(), "Q2", {}).pipeline_stage is None and PIPELINE


def test_snapshot_round_trip_and_recent_writes():
    snap = Snapshot(fields={"id:a": digest(1)}, tags=frozenset({"t"}), opportunity="o")
    for i in range(7):
        snap = snap.with_stage(f"s{i}", written=True)
    assert snap.recent_stages == ("s2", "s3", "s4", "s5", "s6")
    assert snap.with_stage("x", written=False).recent_stages == snap.recent_stages
    assert Snapshot.from_json(snap.to_json()) == snap
    assert Snapshot.from_json(None) == Snapshot()
    assert digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1}) != digest({"a": 2})
