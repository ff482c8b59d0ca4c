"""Store URLs: schemes, typed options, the password kept out of every text."""

from __future__ import annotations

import pytest

import threadkeep
from threadkeep import InvalidInput
from threadkeep._url import StoreURL


def test_unknown_params_are_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(InvalidInput, match="allowed: idempotency_keys, pool_size, prefix"):
        StoreURL.parse("redis://127.0.0.1:6379/0?bogus=1")


def test_the_password_is_redacted() -> None:
    url = StoreURL.parse("postgresql://u:hunter2@127.0.0.1:5432/db?schema=s1")
    assert "hunter2" not in repr(url)
    assert url.options == {"schema": "s1"}
    assert url.host == "127.0.0.1:5432"
    redacted = threadkeep.redact_url("postgresql://u:hunter2@127.0.0.1:5432/db?schema=s1")
    assert "hunter2" not in redacted and "127.0.0.1:5432" in redacted


@pytest.mark.parametrize("bad", ["nope", "ftp://x", "sqlite:///x.db?timeout=-1"])
def test_malformed_urls_are_invalid_input(bad: str) -> None:
    with pytest.raises(InvalidInput):
        StoreURL.parse(bad)
    with pytest.raises(InvalidInput):
        threadkeep.redact_url(bad)


def test_postgres_is_an_alias() -> None:
    assert StoreURL.parse("postgres://127.0.0.1/test").scheme == "postgresql"
