"""Every SQL query of the README runs as written, on SQLite and PostgreSQL, with equal answers."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from crash_rate_aggregates.cli import parse_date
from crash_rate_aggregates.fill import FillSettings, fill
from crash_rate_aggregates.synth import generate_store

README = Path(__file__).parents[1] / "README.md"
QUERIES = [q for q in re.findall(r"```sql\n(.*?)```", README.read_text(), re.DOTALL)
           if not q.startswith("-- DuckDB")]  # those run in test_parquet.py


@pytest.fixture(scope="module")
def pings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readme") / "pings"
    generate_store(root, parse_date("2016-03-08"), parse_date("2016-03-14"), 600, heavy=False)
    return root


def _fill(pings: Path, url: str) -> None:
    report = fill(FillSettings(str(pings), parse_date("2016-03-08"), parse_date("2016-03-14"),
                               url))
    assert not report.failed


def _normal(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Dates as text, numbers as floats, so both databases' answers compare."""
    return [tuple(v.isoformat() if hasattr(v, "isoformat") else
                  float(v) if isinstance(v, int | float) else v for v in row) for row in rows]


def test_readme_has_queries() -> None:
    assert len(QUERIES) >= 4


@pytest.mark.parametrize("sql", QUERIES, ids=[q.splitlines()[0][3:40] for q in QUERIES])
def test_query_runs_on_both_stores(sql: str, pings: Path, pg_url: str, tmp_path: Path) -> None:
    _fill(pings, pg_url)
    with psycopg.connect(pg_url) as connection:
        on_postgres = _normal(connection.execute(sql).fetchall())
    assert on_postgres and all(None not in row for row in on_postgres)
    if "PostgreSQL only" in sql:
        return
    _fill(pings, f"sqlite:///{tmp_path / 'readme.db'}")
    with sqlite3.connect(tmp_path / "readme.db") as connection:
        on_sqlite = _normal(connection.execute(sql).fetchall())
    assert len(on_sqlite) == len(on_postgres)
    for left, right in zip(on_sqlite, on_postgres, strict=True):
        assert len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            assert a == (pytest.approx(b) if isinstance(b, float) else b)
