"""Fixtures for the store conformance suite: a real SQLite file, a real PostgreSQL server.

The PostgreSQL server is started once per test session (see :func:`memory.testing.start_postgres`)
and every test gets a fresh schema in it. Without PostgreSQL binaries the ``pg`` tests skip.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from memory import TrajectoryStore, open_store
from memory.testing import postgres_bin_dir, start_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The superuser URL of a throwaway PostgreSQL server on 127.0.0.1, shared by the session."""
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL binaries not found in /usr/lib/postgresql/*/bin (apt-get install -y postgresql)")
    with start_postgres() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The URL of a new, empty schema on the session's server, dropped after the test.

    A schema (made the connection's ``search_path`` by the URL) isolates a test as well as a
    database would, and costs under a millisecond where ``CREATE DATABASE`` costs ~0.4 s.
    """
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    yield f"{postgres_server}?options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file that does not exist yet, or an empty PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "stores" / "trajectories.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[TrajectoryStore]:
    """An open, empty store of each backend."""
    with open_store(store_url) as s:
        yield s
