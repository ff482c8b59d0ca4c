"""``threadkeep rotate-keys``: rewrites a tenant's values under the current key of
``THREADKEEP_ENCRYPTION_KEYS``; the other commands read through the same keys.
"""

from __future__ import annotations

import base64
from pathlib import Path

from typer.testing import CliRunner

import threadkeep
from threadkeep import Encryption
from threadkeep.cli.main import app

K1, K2 = b"1" * 32, b"2" * 32
ENV_K2_K1 = f"k2:{base64.b64encode(K2).decode()},k1:{base64.b64encode(K1).decode()}"


def test_rotate_keys_moves_every_value_to_the_current_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    with threadkeep.open(url) as plain:
        before = plain.start("c0", tenant="t")
        plain.append(before.id, "user", "written before encryption")
    with threadkeep.open(url, encryption=Encryption(keys={"k1": K1}, current="k1")) as old:
        conv = old.start("c1", tenant="t")
        old.append(conv.id, "user", "under k1")
        old.save_state(conv.id, {"a": 1})
        old.remember("c1", "name", "Bob", tenant="t")
    runner = CliRunner()
    env = {"THREADKEEP_ENCRYPTION_KEYS": ENV_K2_K1}
    result = runner.invoke(app, ["rotate-keys", "--store", url, "--tenant", "t"], env=env)
    assert result.exit_code == 0, result.output
    assert "conversations: 2  rewritten: 4  changed meanwhile: 0" in result.stdout
    with threadkeep.open(url, encryption=Encryption(keys={"k2": K2}, current="k2")) as new:
        assert new.messages(before.id)[0].content == "written before encryption"
        assert new.messages(conv.id)[0].content == "under k1"
        assert new.load_state(conv.id).value == {"a": 1}
        assert new.recall("c1", tenant="t")[0].value == "Bob"
    shown = runner.invoke(app, ["show", conv.id, "--store", url], env=env)
    assert shown.exit_code == 0 and "under k1" in shown.stdout  # read through the keys
    again = runner.invoke(app, ["rotate-keys", "--store", url, "--tenant", "t"], env=env)
    assert "rewritten: 0" in again.stdout


def test_rotate_keys_without_keys_or_with_a_missing_key_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    with threadkeep.open(url, encryption=Encryption(keys={"k1": K1}, current="k1")) as old:
        old.append(old.start("c1").id, "user", "under k1")
    runner = CliRunner()
    bare = runner.invoke(app, ["rotate-keys", "--store", url], env={})
    assert bare.exit_code == 1 and "THREADKEEP_ENCRYPTION_KEYS" in bare.stderr
    only_k2 = f"k2:{base64.b64encode(K2).decode()}"
    missing = runner.invoke(
        app, ["rotate-keys", "--store", url], env={"THREADKEEP_ENCRYPTION_KEYS": only_k2}
    )
    assert missing.exit_code == 1
    assert "EncryptionError" in missing.stderr and "'k1'" in missing.stderr
    assert "Traceback" not in missing.output
