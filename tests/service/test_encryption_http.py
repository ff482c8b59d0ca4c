"""The service with ``THREADKEEP_ENCRYPTION_KEYS`` set: values are sealed in the store, the API
is unchanged, and a value under a key the service was not given is one JSON error naming it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import threadkeep
from tests.service._service_helpers import LiveServer, client_for
from threadkeep.service.settings import load_settings

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()


def test_the_service_seals_what_it_stores_and_serves_it_in_clear(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'service.db'}"
    with client_for(url, encryption_keys=f"k1:{K1}") as api:
        cid = api.post("/v1/conversations", json={"contact_id": "c-1"}).json()["id"]
        path = f"/v1/conversations/{cid}/messages"
        sent = {"role": "user", "content": "my card is 4111"}
        first = api.post(path, json=sent, headers={"Idempotency-Key": "m-1"})
        assert first.status_code == 201 and first.json()["content"] == "my card is 4111"
        again = api.post(path, json=sent, headers={"Idempotency-Key": "m-1"})
        assert again.status_code == 201 and again.json() == first.json()  # replay compares
        other = api.post(path, json={**sent, "content": "x"}, headers={"Idempotency-Key": "m-1"})
        assert other.status_code == 422  # in clear, not ciphertext against plaintext
        saved = api.put(
            f"/v1/conversations/{cid}/state",
            json={"value": {"pin": 1234}},
            headers={"If-Match": "0"},
        )
        assert saved.status_code == 200, saved.text
        assert [m["content"] for m in api.get(path).json()["items"]] == ["my card is 4111"]
        assert api.get(f"/v1/conversations/{cid}/state").json()["value"] == {"pin": 1234}
    with threadkeep.open(url) as raw:  # no keys: what the file holds
        assert raw.messages(cid)[0].content.startswith("tk1:k1:")
        assert str(raw.load_state(cid).value).startswith("tk1:k1:")
    with client_for(url, encryption_keys=f"k2:{K2}") as wrong:
        answer = wrong.get(path)
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["type"] == "EncryptionError" and error["key_id"] == "k1"
    assert "'k1'" in error["message"] and "Traceback" not in answer.text


def test_the_keys_are_read_from_the_environment() -> None:
    settings = load_settings(
        {"THREADKEEP_STORE": "memory://", "THREADKEEP_ENCRYPTION_KEYS": f"k2:{K2}, k1:{K1}"}
    )
    encryption = settings.encryption()
    assert encryption is not None and encryption.current == "k2"
    assert dict(encryption.keys) == {"k2": b"2" * 32, "k1": b"1" * 32}
    assert K2 not in repr(settings)  # the keys are never shown
    assert load_settings({"THREADKEEP_STORE": "memory://"}).encryption() is None


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ("k1", "'id:base64key'"),
        (f"k1:{K1},k1:{K2}", "repeated"),
        ("k1:not base64!", "not base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "32 bytes"),
    ],
)
def test_malformed_keys_stop_the_service_before_it_starts(keys: str, says: str) -> None:
    with (
        pytest.raises(threadkeep.InvalidInput, match=says),
        client_for("memory://", encryption_keys=keys),
    ):
        pass


def test_threadkeep_serve_reads_the_keys_from_its_environment(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    server = live_server(url, THREADKEEP_ENCRYPTION_KEYS=f"k2:{K2},k1:{K1}")
    chat = httpx.post(server.url + "/v1/chat", json={"message": "my pin is 9731"}, timeout=30)
    assert chat.status_code == 200 and chat.json()["reply"] == "echo: my pin is 9731"
    cid = chat.json()["conversation_id"]
    with threadkeep.open(url) as raw:  # no keys: what the file holds
        stored = [m.content for m in raw.messages(cid)]
    assert stored and all(c.startswith("tk1:k2:") for c in stored)
    assert "9731" not in "".join(stored)
