"""Fixtures for the store conformance suite: a real SQLite file, a real PostgreSQL server.

The PostgreSQL server (``postgres_url``, in tests/conftest.py) is started once per test
session and every test gets a fresh schema in it. Without PostgreSQL binaries the ``pg`` tests skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memory import TrajectoryStore, open_store


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
