"""Pure tests of the lifecycle tables and store URL parsing."""

from __future__ import annotations

import pytest

from threadkeep import InvalidInput
from threadkeep._rules import lifecycle
from threadkeep._rules.lifecycle import ON_MESSAGE, TRANSITIONS, Status, check_status, sources_for
from threadkeep._url import StoreURL

EXPECTED = {
    "new": {"active", "waiting_agent", "closed"},
    "active": {"idle", "waiting_agent", "closed"},
    "idle": {"active", "waiting_agent", "closed"},
    "waiting_agent": {"active", "closed"},
    "closed": set(),
}


@pytest.mark.parametrize("target", list(Status))
@pytest.mark.parametrize("source", list(Status))
def test_transition_table(source: Status, target: Status) -> None:
    assert (target in TRANSITIONS[source]) == (target.value in EXPECTED[source.value])
    assert (source.value in sources_for(target)) == (
        source is target or target.value in EXPECTED[source.value]
    )


def test_closed_is_final_and_refuses_messages() -> None:
    assert TRANSITIONS[Status.CLOSED] == frozenset()
    assert Status.CLOSED not in ON_MESSAGE
    assert Status.CLOSED not in lifecycle.OPEN
    assert ON_MESSAGE[Status.WAITING_AGENT] is Status.WAITING_AGENT


@pytest.mark.parametrize("bad", ["", "CLOSED", "open", None, 3])
def test_check_status_rejects(bad: object) -> None:
    with pytest.raises(InvalidInput, match="allowed"):
        check_status(bad)


def test_store_url_unknown_param_names_allowed() -> None:
    with pytest.raises(InvalidInput, match="allowed: idempotency_keys, pool_size, prefix"):
        StoreURL.parse("redis://127.0.0.1:6379/0?bogus=1")


def test_store_url_redacts_password() -> None:
    url = StoreURL.parse("postgresql://u:hunter2@127.0.0.1:5432/db?schema=s1")
    assert "hunter2" not in repr(url)
    assert url.options == {"schema": "s1"}
    assert url.host == "127.0.0.1:5432"


@pytest.mark.parametrize("bad", ["nope", "ftp://x", "sqlite:///x.db?timeout=-1"])
def test_store_url_malformed(bad: str) -> None:
    with pytest.raises(InvalidInput):
        StoreURL.parse(bad)


def test_store_url_alias() -> None:
    assert StoreURL.parse("postgres://127.0.0.1/test").scheme == "postgresql"
