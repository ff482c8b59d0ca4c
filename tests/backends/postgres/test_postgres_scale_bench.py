"""``python -m bench.scale --pg-url``: the PostgreSQL runs go to the server it names."""

from __future__ import annotations

import psycopg
import pytest
from bench import scale

from tests._servers import PostgresCluster


def test_pg_url_points_the_runs_at_another_server(
    cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(scale, "pg_base", scale.PG_BASE)  # restored after the test
    base = cluster.url.rsplit("/", 1)[0]
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {scale.PG_DB}")
    assert scale.main(["--backend", "postgres", "--pg-url", base + "/",
                       "--writers", "1", "--calls", "2"]) == 0  # fmt: skip
    assert scale.pg_base == base
    assert "counts: 2 " in capsys.readouterr().out
    with psycopg.connect(cluster.url) as conn:  # the bench's database was made on this server
        found = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (scale.PG_DB,)
        ).fetchone()
    assert found is not None


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379", "postgresql://postgres@h:1/db"])
def test_pg_url_must_name_a_postgres_server_without_a_database(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scale, "pg_base", scale.PG_BASE)
    with pytest.raises(SystemExit) as err:
        scale.main(["--backend", "postgres", "--pg-url", url])
    assert err.value.code == 2


def test_the_default_server_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "pg_base", "postgresql://elsewhere:1")
    with pytest.raises(SystemExit):  # stops at the argument check, before any connection
        scale.main(["--backend", "postgres", "--samples", "1"])
    assert scale.pg_base == "postgresql://postgres@127.0.0.1:5432"


def test_the_wal_count_needs_a_url_and_connects_to_nothing_without_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bench.pg_append_wal`` counts the whole cluster's WAL and drops its schemas: it used
    to default to the shared server at 127.0.0.1:5432; it now refuses to run without --url."""
    from bench import pg_append_wal

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("connected without a URL given")

    monkeypatch.setattr(psycopg, "connect", refuse)
    with pytest.raises(SystemExit) as exit_:
        pg_append_wal.main([])
    assert exit_.value.code == 2
    assert "--url" in capsys.readouterr().err
