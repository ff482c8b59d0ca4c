"""PostgreSQL erasure verified in the raw rows: no row of any table of the store's schema keeps
a byte of an erased contact (each row searched as text).
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

import threadkeep
from tests.backends._erasure import erase_and_check, fill
from tests.backends.postgres._helpers import SHARED, url_of

pytestmark = pytest.mark.postgres


def _rows_with(schema: str, needle: str) -> dict[str, int]:
    """Per table of ``schema``: how many rows hold ``needle`` in their text form."""
    found: dict[str, int] = {}
    with psycopg.connect(SHARED, autocommit=True) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = %s AND table_type = 'BASE TABLE'",
                (schema,),
            )
        ]
        assert {"conversations", "messages", "states", "facts", "events"} <= set(tables)
        for table in tables:
            query = sql.SQL("SELECT count(*) FROM {} AS r WHERE strpos(r::text, %s) > 0").format(
                sql.Identifier(schema, table)
            )
            row = conn.execute(query, (needle,)).fetchone()
            if row and row[0]:
                found[table] = row[0]
    return found


def test_an_erased_contact_leaves_no_row_in_any_table(schema: str) -> None:
    with threadkeep.open(url_of(schema)) as store:
        gone = fill(store, "t-1", "gone")
        kept = fill(store, "t-1", "kept")
        assert set(_rows_with(schema, gone.marker)) >= {"conversations", "messages", "states"}
        assert "facts" in _rows_with(schema, gone.marker)
        erase_and_check(store, gone)
    assert _rows_with(schema, gone.marker) == {}  # content, metadata, payload, state, facts
    assert _rows_with(schema, gone.contact) == {}  # the contact id too (its events went)
    assert set(_rows_with(schema, kept.marker)) >= {"conversations", "messages", "states"}
