"""Fixtures of the Streamlit tests: a store file the app and the test share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import threadkeep


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A SQLite store the app (through TK_STREAMLIT_STORE) and the test both open."""
    import streamlit as st

    url = f"sqlite:///{tmp_path / 'crm.db'}"
    monkeypatch.setenv("TK_STREAMLIT_STORE", url)
    st.cache_resource.clear()
    yield url
    st.cache_resource.clear()  # close nothing by hand: the cached store goes with the process


@pytest.fixture
def store(store_url: str) -> Iterator[threadkeep.Store]:
    with threadkeep.open(store_url) as s:
        yield s
