"""Fixtures of the training tests: a fresh SQLite store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memory.base import TrajectoryStore, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TrajectoryStore]:
    s = open_store(str(tmp_path / "t.db"))
    yield s
    s.close()
