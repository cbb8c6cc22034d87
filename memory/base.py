"""The trajectory store interface: abstract primitives, conveniences built on them.

A store keeps runs and whole episodes. :meth:`TrajectoryStore.append` writes one episode
(its trajectory row and every step) in a single transaction, so a crash mid-write leaves
no partial episode visible. Backends (:mod:`memory.sqlite`, :mod:`memory.postgres`)
implement the abstract methods; the conveniences (export to JSONL and to a Hugging Face
``datasets.Dataset``) are written once here. One conformance suite
(``tests/memory/test_store_conformance.py``) runs against both backends.

Stores are synchronous and thread-safe; async code calls them through
``asyncio.to_thread``.

Example:
    >>> store = open_store(":memory:")  # doctest: +SKIP
    >>> store.append(trajectory)  # doctest: +SKIP
    >>> [t.id for t in store.query(TrajectoryQuery(run_id=trajectory.run_id))]  # doctest: +SKIP
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autodidact.config import home
from autodidact.types import Record, Trajectory, new_id

if TYPE_CHECKING:
    import datasets


class TrajectoryQuery(Record):
    """Which trajectories to read. ``None`` means no filter on that field."""

    run_id: str | None = None
    suite: str | None = None
    task_id: str | None = None
    success: bool | None = None
    round: int | None = None
    role: str | None = Field(None, description="only trajectories with at least one step of this role")
    limit: int | None = Field(None, ge=1)
    offset: int = Field(0, ge=0)


class RunInfo(Record):
    """A run: a named batch of episodes with the config that produced them."""

    id: str
    created_at: float = Field(default_factory=time.time)
    kind: str = "rollout"
    config: dict[str, Any] = Field(default_factory=dict)


class RunSummary(Record):
    """A run with its episode counts, as listed by ``autodidact trajectories list``."""

    run: RunInfo
    episodes: int
    successes: int


class TrajectorySummary(Record):
    """A trajectory without its steps (``trajectory.steps`` is empty) and each step's role, in
    order: what a list shows, read without the steps' messages, observations or screenshots."""

    trajectory: Trajectory
    roles: tuple[str, ...] = ()


class MemoryEntry(Record):
    """What agents keep besides trajectories (a reflection, a skill), stored with a vector.

    ``key`` groups entries (a reflection's task id, a skill's name); ``embedder`` names what
    made the vector, which never changes (a new text is a new entry); ``data`` is the entry's
    own record as JSON, which may be updated (a skill's usage counts).
    """

    id: str = Field(default_factory=new_id)
    kind: str
    key: str
    created_at: float = Field(default_factory=time.time)
    embedder: str
    data: dict[str, Any] = Field(default_factory=dict)


class TrajectoryStore(abc.ABC):
    """Runs and episodes, appended atomically and queried by run, suite, task, success, round, role."""

    url: str

    @abc.abstractmethod
    def put_run(self, run: RunInfo) -> None:
        """Insert ``run``, or replace the stored one with the same id."""

    @abc.abstractmethod
    def append(self, trajectory: Trajectory) -> None:
        """Write one whole episode in one transaction; an id already stored is a StoreError."""

    @abc.abstractmethod
    def get(self, trajectory_id: str) -> Trajectory | None:
        """The trajectory with this id, or None. A unique id prefix of >= 6 characters works too."""

    @abc.abstractmethod
    def query(self, q: TrajectoryQuery = TrajectoryQuery()) -> list[Trajectory]:
        """Trajectories matching ``q``, oldest first (by insertion order)."""

    @abc.abstractmethod
    def count(self, q: TrajectoryQuery = TrajectoryQuery()) -> int:
        """How many trajectories match ``q`` (``limit``/``offset`` ignored)."""

    @abc.abstractmethod
    def runs(self) -> list[RunSummary]:
        """Every run with its counts, newest first."""

    @abc.abstractmethod
    def put_memory(self, entry: MemoryEntry, vector: bytes) -> None:
        """Insert ``entry`` with its vector (float32 bytes); an id already stored gets the new ``data`` only."""

    @abc.abstractmethod
    def memory(self, kind: str, *, key: str | None = None, limit: int | None = None) -> list[MemoryEntry]:
        """Entries of ``kind`` (with ``key``, when given), newest first."""

    @abc.abstractmethod
    def get_memory(self, entry_ids: Sequence[str]) -> list[MemoryEntry]:
        """The entries with these ids, in the order given (ids not stored are left out)."""

    @abc.abstractmethod
    def memory_vectors(self, kind: str, embedder: str, *, after: int = 0) -> list[tuple[int, str, str, bytes]]:
        """``(seq, id, key, vector)`` of ``kind``'s entries made by ``embedder``, with ``seq > after``, in order."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close connections. The store is unusable afterwards."""

    def summaries(self, q: TrajectoryQuery = TrajectoryQuery()) -> list[TrajectorySummary]:
        """Like :meth:`query`, without the steps (their roles only). Backends read less; this default reads all."""
        return [
            TrajectorySummary(trajectory=t.model_copy(update={"steps": ()}), roles=tuple(s.role for s in t.steps))
            for t in self.query(q)
        ]

    def get_run(self, run_id: str) -> RunSummary | None:
        """The run with this id (or unique prefix), or None."""
        matches = [r for r in self.runs() if r.run.id == run_id] or [
            r for r in self.runs() if r.run.id.startswith(run_id)
        ]
        return matches[0] if len(matches) == 1 else None

    def export_jsonl(self, path: str | Path, q: TrajectoryQuery = TrajectoryQuery()) -> int:
        """Write matching trajectories to ``path``, one JSON object a line; returns the count."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        n = 0
        with tmp.open("w") as f:
            for t in self.query(q):
                f.write(t.model_dump_json() + "\n")
                n += 1
        tmp.replace(p)  # nothing half-written is left under the real name
        return n

    def to_dataset(self, q: TrajectoryQuery = TrajectoryQuery()) -> datasets.Dataset:
        """Matching trajectories as a ``datasets.Dataset``: flat columns plus the full record as JSON."""
        import datasets

        rows = [
            {
                "id": t.id,
                "run_id": t.run_id,
                "task_id": t.task.id,
                "suite": t.task.suite,
                "env_id": t.env_id,
                "round": t.round,
                "success": t.success,
                "reward": t.reward,
                "n_steps": len(t.steps),
                "error": t.error,
                "trajectory": json.dumps(t.model_dump(mode="json")),
            }
            for t in self.query(q)
        ]
        return datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict({})

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SQLiteStoreConfig(_Config):
    """A SQLite file (WAL mode). The default lives under ``$AUTODIDACT_HOME``."""

    type: Literal["sqlite"] = "sqlite"
    path: str | None = Field(None, description="database file; default $AUTODIDACT_HOME/autodidact.db")

    def build(self) -> TrajectoryStore:
        from memory.sqlite import SQLiteTrajectoryStore

        return SQLiteTrajectoryStore(self.path or str(home() / "autodidact.db"))


class PostgresStoreConfig(_Config):
    """A PostgreSQL database (``pip install autodidact[pg]``)."""

    type: Literal["postgres"] = "postgres"
    url: str = Field(description="postgresql://user:pass@host:port/db")

    def build(self) -> TrajectoryStore:
        from memory.postgres import PostgresTrajectoryStore

        return PostgresTrajectoryStore(self.url)


StoreConfig = Annotated[SQLiteStoreConfig | PostgresStoreConfig, Field(discriminator="type")]


def open_store(target: str | None = None) -> TrajectoryStore:
    """Open a store from a ``postgresql://`` URL, a SQLite path, or the default (None)."""
    if target and target.startswith(("postgresql://", "postgres://")):
        return PostgresStoreConfig(url=target).build()
    return SQLiteStoreConfig(path=target).build()
