"""The encryption config and the sealed-value format, without a store."""

from __future__ import annotations

import base64
import json

import pytest

import threadkeep
from threadkeep import Encryption, EncryptionError, InvalidInput
from threadkeep._encryption import HANDLING, Sealer
from threadkeep._rules.ops import ALL_OPS

KEY = b"k" * 32


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"keys": {}, "current": "k1"}, "at least one key"),
        ({"keys": {"k1": b"short"}, "current": "k1"}, "32 bytes"),
        ({"keys": {"k1": "not bytes" * 4}, "current": "k1"}, "32 bytes"),
        ({"keys": {"k 1": KEY}, "current": "k 1"}, "key id"),
        ({"keys": {"k1": KEY}, "current": "k2"}, "current key id 'k2' is not one of the keys"),
    ],
)
def test_bad_configs_are_refused(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        Encryption(**kwargs)  # type: ignore[arg-type]


def test_keys_are_kept_read_only_and_never_shown() -> None:
    keys = {"k1": KEY}
    encryption = Encryption(keys=keys, current="k1")
    keys["k1"] = b"x" * 32
    assert encryption.keys["k1"] == KEY
    assert "kkkk" not in repr(encryption) and "k1" in repr(encryption)
    assert len(Encryption.generate_key()) == 32
    assert encryption == Encryption(keys={"k1": KEY}, current="k1")
    assert hash(encryption) == hash(Encryption(keys={"k1": KEY}, current="k1"))


def test_from_env_takes_the_first_key_as_current() -> None:
    text = f"new:{base64.b64encode(b'n' * 32).decode()}, old:{base64.b64encode(KEY).decode()}"
    encryption = Encryption.from_env(text)
    assert encryption.current == "new" and set(encryption.keys) == {"new", "old"}


def test_a_sealed_value_names_its_key_and_opens_only_in_its_place() -> None:
    sealer = Sealer(Encryption(keys={"k1": KEY}, current="k1"))
    sealed = sealer.seal("hello", b"content\x00c-1")
    prefix, kid, body = sealed.split(":")
    assert (prefix, kid) == ("tk1", "k1")
    assert len(base64.urlsafe_b64decode(body + "==")) == 12 + len("hello") + 16
    assert sealer.open(sealed, b"content\x00c-1") == "hello"
    assert sealer.seal("hello", b"content\x00c-1") != sealed  # random nonces
    with pytest.raises(EncryptionError, match="fails authentication"):
        sealer.open(sealed, b"content\x00c-2")
    assert sealer.open("plain text", b"content\x00c-1") == "plain text"


def test_json_values_stay_json_and_facts_seal_deterministically() -> None:
    sealer = Sealer(Encryption(keys={"k1": KEY}, current="k1"))
    sealed = sealer.seal_json('{"a": 1}', b"fact\x00t", derived=True)
    assert json.loads(sealed).startswith("tk1:k1:")
    assert sealer.seal_json('{"a": 1}', b"fact\x00t", derived=True) == sealed
    assert sealer.seal_json('{"a": 2}', b"fact\x00t", derived=True) != sealed
    assert sealer.seal_json('{"a": 1}', b"fact\x00u", derived=True) != sealed
    assert sealer.open_json(sealed, b"fact\x00t") == '{"a": 1}'


def test_open_takes_only_an_encryption() -> None:
    with pytest.raises(InvalidInput, match="must be a threadkeep.Encryption, not dict"):
        threadkeep.open("memory://", encryption={"k1": KEY})  # type: ignore[arg-type]


def test_every_op_says_what_is_sealed_and_opened() -> None:
    """A new op must say how the values it writes and answers are sealed and opened."""
    assert set(HANDLING) == set(ALL_OPS)
