"""PostgreSQL encryption at rest verified in the raw rows (each row of each table as text)."""

from __future__ import annotations

import pytest

import threadkeep
from tests.backends._sealed import KEYS, fill
from tests.backends.postgres._helpers import url_of
from tests.backends.postgres.test_postgres_erasure import _rows_with

pytestmark = pytest.mark.postgres


def test_sealed_values_leave_no_plaintext_in_any_row(schema: str) -> None:
    with threadkeep.open(url_of(schema)) as plain:
        shown = fill(plain, "plain")
    with threadkeep.open(url_of(schema), encryption=KEYS) as store:
        hidden = fill(store, "sealed")
    assert set(_rows_with(schema, shown)) >= {"messages", "states", "facts"}  # scans can fail
    assert "messages" in _rows_with(schema, shown.encode().hex())  # content is bytea: hex text
    assert _rows_with(schema, hidden) == {}
    assert _rows_with(schema, hidden.encode().hex()) == {}
