"""Shared fixtures: the storage suite runs on SQLite and on PostgreSQL.

PostgreSQL comes from PEERWATCH_TEST_POSTGRES_URL (default: the local server on 127.0.0.1:5432,
database `test`). Locally its half is skipped with the reason when no server answers; in CI (CI set)
an unreachable server fails the run instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from peerwatch.storage.database import make_engine, migrate, sqlite_url

PG_URL = os.environ.get("PEERWATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_pg_problem: str | None = None
_pg_checked = False


def _postgres_reachable() -> str | None:
    global _pg_checked, _pg_problem
    if not _pg_checked:
        _pg_checked = True
        try:
            probe = make_engine(PG_URL, connect_args={"connect_timeout": 3})
            with probe.connect() as conn:
                conn.execute(text("select 1"))
            probe.dispose()
        except OperationalError as exc:
            _pg_problem = f"no PostgreSQL at {PG_URL}: {str(exc.orig).strip().splitlines()[0]}"
    return _pg_problem


def postgres_engine() -> Iterator[Engine]:
    """A migrated engine on a fresh schema of the test server, dropped afterwards."""
    problem = _postgres_reachable()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (CI must run the PostgreSQL half)")
        pytest.skip(problem)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The storage suite's database: every test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        e = make_engine(sqlite_url(tmp_path / "peerwatch.db"))
        migrate(e)
        yield e
        e.dispose()
    else:
        yield from postgres_engine()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    e = make_engine(sqlite_url(tmp_path / "peerwatch.db"))
    migrate(e)
    yield e
    e.dispose()
