"""What the database benchmarks share: a timer and a fresh SQLite file or PostgreSQL schema."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

from peerwatch.storage.database import make_engine, migrate, sqlite_url


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


@contextmanager
def sqlite_db() -> Iterator[Engine]:
    """A migrated SQLite database in a temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory() as d:
        engine = make_engine(sqlite_url(Path(d) / "bench.db"))
        migrate(engine)
        yield engine
        engine.dispose()


@contextmanager
def postgres_db(url: str, prefix: str = "bench") -> Iterator[Engine]:
    """A migrated PostgreSQL schema of its own (dropped afterwards), so a benchmark never
    touches the tables of whatever else uses that database."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url, connect_args={"connect_timeout": 3})
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
