"""What the SQL backends share: the schema, the record <-> row mapping, the queries, a pool.

Both :mod:`memory.sqlite` and :mod:`memory.postgres` keep the same three tables:

- ``runs``: ``id``, ``created_at``, ``kind``, ``config`` (JSON);
- ``trajectories``: ``seq`` (auto-increment: insertion order), ``id`` (unique), the columns
  queries filter on (``run_id``, ``task_id``, ``suite``, ``env_id``, ``success``, ``reward``,
  ``round``, ``parent_id``, ``error``, ``created_at``, ``n_steps``) and ``data``, the
  trajectory's JSON *without* its steps;
- ``steps``: ``trajectory_id``, ``idx`` (position in the episode), ``role``, ``data`` (the
  step's JSON); primary key ``(trajectory_id, idx)``;

plus a ``meta`` table holding ``schema_version`` so later releases can migrate old stores.
The JSON columns are the source of truth; the other columns are copies kept for filtering.

The functions here run on a DB-API cursor inside a session the backend opened (its
transaction, its error translation). SQL is written with ``?`` placeholders and rewritten
by :meth:`Dialect.sql`; no statement here contains a literal ``?`` or ``%``.
"""

from __future__ import annotations

import abc
import json
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import ValidationError

from autodidact.errors import StoreError
from autodidact.types import Step, Trajectory
from memory.base import MemoryEntry, RunInfo, RunSummary, TrajectoryQuery, TrajectoryStore, TrajectorySummary

SCHEMA_VERSION = 2
"""Version of the tables (not of the records: see ``autodidact.types.SCHEMA_VERSION``)."""

MIN_PREFIX = 6
"""Shortest id prefix :func:`get` resolves."""

_NO_LIMIT = 2**62  # LIMIT without a limit, spelled the same in SQLite and PostgreSQL


class Cursor(Protocol):
    """The part of a DB-API cursor (sqlite3's and psycopg's) the shared code uses."""

    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...

    def executemany(self, sql: Any, params: Iterable[Any], /) -> Any: ...

    def fetchall(self) -> list[Any]: ...


def _same(text: str) -> str:
    return text


@dataclass(frozen=True)
class Dialect:
    """How one backend spells what the shared code needs."""

    placeholder: str
    seq_column: str  # an auto-incrementing integer primary key
    id_text: str  # text compared byte by byte, so that ``id >= prefix`` finds prefixes
    real: str
    boolean: str
    json: str
    blob: str
    steps_of_ids: str  # condition: ``trajectory_id`` is in the JSON array bound to one ``?``
    integrity_error: type[Exception]
    duplicate_marker: str  # in the message of the error a duplicate trajectory id raises
    encode_json: Callable[[str], str] = _same  # applied to every JSON value written
    encode_text: Callable[[str], str] = _same  # applied to free-form text columns written

    def sql(self, statement: str) -> str:
        """``statement`` with this backend's placeholders."""
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    def schema(self) -> tuple[str, ...]:
        """DDL for the three tables and their indexes (idempotent)."""
        return (
            f"CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, created_at {self.real} NOT NULL,"
            f" kind TEXT NOT NULL, config {self.json} NOT NULL)",
            f"""CREATE TABLE IF NOT EXISTS trajectories (
                seq {self.seq_column},
                id {self.id_text} NOT NULL UNIQUE,
                run_id TEXT NOT NULL,
                task_id TEXT NOT NULL,
                suite TEXT NOT NULL,
                env_id TEXT NOT NULL,
                success {self.boolean} NOT NULL,
                reward {self.real},
                round INTEGER NOT NULL,
                parent_id TEXT,
                error TEXT,
                created_at {self.real} NOT NULL,
                n_steps INTEGER NOT NULL,
                data {self.json} NOT NULL
            )""",
            f"""CREATE TABLE IF NOT EXISTS steps (
                trajectory_id {self.id_text} NOT NULL REFERENCES trajectories (id) ON DELETE CASCADE,
                idx INTEGER NOT NULL,
                role TEXT NOT NULL,
                data {self.json} NOT NULL,
                PRIMARY KEY (trajectory_id, idx)
            )""",
            # success is in the run and suite indexes: alone it would be a poor (and tempting) index
            "CREATE INDEX IF NOT EXISTS trajectories_run ON trajectories (run_id, success, seq)",
            "CREATE INDEX IF NOT EXISTS trajectories_suite ON trajectories (suite, success, seq)",
            "CREATE INDEX IF NOT EXISTS trajectories_task ON trajectories (task_id, seq)",
            "CREATE INDEX IF NOT EXISTS trajectories_round ON trajectories (round, seq)",
            *self.memory_schema(),
        )

    def memory_schema(self) -> tuple[str, ...]:
        """DDL for the ``memory`` table (reflections, skills) and its index (schema 2)."""
        return (
            f"""CREATE TABLE IF NOT EXISTS memory (
                seq {self.seq_column},
                id {self.id_text} NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                key TEXT NOT NULL,
                created_at {self.real} NOT NULL,
                embedder TEXT NOT NULL,
                vector {self.blob} NOT NULL,
                data {self.json} NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS memory_kind_key ON memory (kind, key, seq)",
            # the vector index reads only what is new: without this, every refresh scans the kind
            "CREATE INDEX IF NOT EXISTS memory_new ON memory (kind, embedder, seq)",
        )


def _add_memory(cur: Cursor, d: Dialect) -> None:
    for statement in d.memory_schema():
        cur.execute(statement)


# Migrations from version v to v + 1, run in order inside the schema transaction.
_MIGRATIONS: dict[int, Callable[[Cursor, Dialect], None]] = {1: _add_memory}


def init_schema(cur: Cursor, d: Dialect, where: str) -> bool:
    """Create the tables of a new store (returns True), or check and migrate an existing one's."""
    cur.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    rows = cur.execute(d.sql("SELECT value FROM meta WHERE key = ?"), ("schema_version",)).fetchall()
    if not rows:
        for statement in d.schema():
            cur.execute(statement)
        cur.execute(d.sql("INSERT INTO meta (key, value) VALUES (?, ?)"), ("schema_version", str(SCHEMA_VERSION)))
        return True
    found = int(rows[0][0])
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"{where} was written by a newer Autodidact (store schema {found}, this release reads up to"
            f" {SCHEMA_VERSION}); upgrade autodidact or use another store"
        )
    for version in range(found, SCHEMA_VERSION):
        _MIGRATIONS[version](cur, d)
    if found != SCHEMA_VERSION:
        cur.execute(d.sql("UPDATE meta SET value = ? WHERE key = ?"), (str(SCHEMA_VERSION), "schema_version"))
    return False


def put_run(cur: Cursor, d: Dialect, run: RunInfo) -> None:
    """Insert ``run`` or replace the stored run with its id."""
    config = json.dumps(run.model_dump(mode="json")["config"])
    cur.execute(
        d.sql(
            "INSERT INTO runs (id, created_at, kind, config) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE"
            " SET created_at = excluded.created_at, kind = excluded.kind, config = excluded.config"
        ),
        (run.id, run.created_at, run.kind, d.encode_json(config)),
    )


def trajectory_row(t: Trajectory, d: Dialect) -> tuple[Any, ...]:
    """The ``trajectories`` row of ``t`` (its steps go to :func:`step_rows`)."""
    reward = None if math.isnan(t.reward) else t.reward  # SQLite cannot store NaN; the JSON keeps it
    error = None if t.error is None else d.encode_text(t.error)
    data = d.encode_json(t.model_dump_json(exclude={"steps"}))
    return (  # the order of _INSERT_TRAJECTORY's columns
        t.id,
        t.run_id,
        t.task.id,
        t.task.suite,
        t.env_id,
        t.success,
        reward,
        t.round,
        t.parent_id,
        error,
        time.time(),
        len(t.steps),
        data,
    )


def step_rows(t: Trajectory, d: Dialect) -> Iterator[tuple[str, int, str, str]]:
    """The ``steps`` rows of ``t``, in order; ``idx`` is the position, so order survives as is."""
    for idx, step in enumerate(t.steps):
        yield (t.id, idx, d.encode_text(step.role), d.encode_json(step.model_dump_json()))


_INSERT_TRAJECTORY = (
    "INSERT INTO trajectories (id, run_id, task_id, suite, env_id, success, reward, round, parent_id, error,"
    " created_at, n_steps, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_STEP = "INSERT INTO steps (trajectory_id, idx, role, data) VALUES (?, ?, ?, ?)"


def append(cur: Cursor, d: Dialect, t: Trajectory) -> None:
    """Insert ``t`` and its steps; the caller's transaction makes it all or nothing."""
    try:
        cur.execute(d.sql(_INSERT_TRAJECTORY), trajectory_row(t, d))
    except d.integrity_error as e:
        if d.duplicate_marker not in str(e):
            raise
        raise StoreError(
            f"trajectory {t.id} is already in the store; a trajectory is appended once (give a new episode a new id)"
        ) from None
    cur.executemany(d.sql(_INSERT_STEP), step_rows(t, d))


def _where(q: TrajectoryQuery, d: Dialect) -> tuple[str, list[Any]]:
    filters = {"run_id": q.run_id, "suite": q.suite, "task_id": q.task_id, "success": q.success, "round": q.round}
    used = {column: value for column, value in filters.items() if value is not None}
    conditions, params = [f"{column} = ?" for column in used], list(used.values())
    if q.role is not None:
        # the steps' primary key (trajectory_id, idx) makes this a short range scan per trajectory
        conditions.append("EXISTS (SELECT 1 FROM steps WHERE steps.trajectory_id = trajectories.id AND steps.role = ?)")
        params.append(d.encode_text(q.role))  # roles are written encoded (PostgreSQL: no NUL)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params


def _matching(cur: Cursor, d: Dialect, q: TrajectoryQuery) -> list[tuple[str, str]]:
    """``(id, data)`` of the trajectories matching ``q``, in insertion order."""
    where, params = _where(q, d)
    sql = f"SELECT id, CAST(data AS TEXT) FROM trajectories{where} ORDER BY seq LIMIT ? OFFSET ?"
    limit = _NO_LIMIT if q.limit is None else q.limit
    return cur.execute(d.sql(sql), (*params, limit, q.offset)).fetchall()  # type: ignore[no-any-return]


def query(cur: Cursor, d: Dialect, q: TrajectoryQuery) -> list[Trajectory]:
    """Trajectories matching ``q`` in insertion order: one statement for them, one for their steps."""
    return _with_steps(cur, d, _matching(cur, d, q))


def summaries(cur: Cursor, d: Dialect, q: TrajectoryQuery) -> list[TrajectorySummary]:
    """Trajectories matching ``q`` without their steps, with each step's role (the steps' data is not read)."""
    rows = _matching(cur, d, q)
    if not rows:
        return []
    sql = f"SELECT trajectory_id, idx, role FROM steps WHERE {d.steps_of_ids}"
    roles: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for trajectory_id, idx, role in cur.execute(d.sql(sql), (json.dumps([r[0] for r in rows]),)).fetchall():
        roles[trajectory_id].append((idx, role))
    return [
        TrajectorySummary(trajectory=_trajectory(tid, data, []), roles=tuple(r for _, r in sorted(roles[tid])))
        for tid, data in rows
    ]


def count(cur: Cursor, d: Dialect, q: TrajectoryQuery) -> int:
    """How many trajectories match ``q``, ignoring ``limit`` and ``offset``."""
    where, params = _where(q, d)
    return int(cur.execute(d.sql(f"SELECT COUNT(*) FROM trajectories{where}"), params).fetchall()[0][0])


_SELECT_ONE = "SELECT id, CAST(data AS TEXT) FROM trajectories WHERE id = ?"


def get(cur: Cursor, d: Dialect, trajectory_id: str) -> Trajectory | None:
    """The trajectory with this id, else the one whose id starts with it (>= 6 chars, unique)."""
    rows = cur.execute(d.sql(_SELECT_ONE), (trajectory_id,)).fetchall()
    if not rows and len(trajectory_id) >= MIN_PREFIX:
        # ids compare byte by byte, so ids with this prefix come first among ids >= it
        following = cur.execute(
            d.sql("SELECT id FROM trajectories WHERE id >= ? ORDER BY id LIMIT 2"), (trajectory_id,)
        )
        matches = [r[0] for r in following.fetchall() if r[0].startswith(trajectory_id)]
        if len(matches) == 1:
            rows = cur.execute(d.sql(_SELECT_ONE), (matches[0],)).fetchall()
    found = _with_steps(cur, d, rows)
    return found[0] if found else None


def _with_steps(cur: Cursor, d: Dialect, rows: Sequence[tuple[str, str]]) -> list[Trajectory]:
    if not rows:
        return []
    ids = json.dumps([r[0] for r in rows])
    sql = f"SELECT trajectory_id, idx, CAST(data AS TEXT) FROM steps WHERE {d.steps_of_ids}"
    steps: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for trajectory_id, idx, data in cur.execute(d.sql(sql), (ids,)).fetchall():
        steps[trajectory_id].append((idx, data))
    return [_trajectory(tid, data, sorted(steps.get(tid, ()))) for tid, data in rows]


def _trajectory(trajectory_id: str, data: str, steps: list[tuple[int, str]]) -> Trajectory:
    try:
        parsed = tuple(Step.model_validate_json(s) for _, s in steps)
        return Trajectory.model_validate({**json.loads(data), "steps": parsed})
    except (ValidationError, ValueError) as e:
        raise StoreError(f"trajectory {trajectory_id} in the store cannot be read back as a Trajectory: {e}") from e


def runs(cur: Cursor, d: Dialect) -> list[RunSummary]:
    """Every run with its counts, newest first; a run known only from its episodes is listed too."""
    infos = {
        r[0]: RunInfo(id=r[0], created_at=r[1], kind=r[2], config=json.loads(r[3]))
        for r in cur.execute("SELECT id, created_at, kind, CAST(config AS TEXT) FROM runs").fetchall()
    }
    counts = {
        r[0]: (int(r[1]), int(r[2]), float(r[3]))
        for r in cur.execute(
            "SELECT run_id, COUNT(*), SUM(CASE WHEN success THEN 1 ELSE 0 END), MIN(created_at)"
            " FROM trajectories GROUP BY run_id"
        ).fetchall()
    }
    summaries = [
        RunSummary(
            run=infos.get(run_id) or RunInfo(id=run_id, created_at=counts[run_id][2]),
            episodes=counts.get(run_id, (0, 0, 0.0))[0],
            successes=counts.get(run_id, (0, 0, 0.0))[1],
        )
        for run_id in infos.keys() | counts.keys()
    ]
    return sorted(summaries, key=lambda s: (-s.run.created_at, s.run.id))


C = TypeVar("C")


class Pool(Generic[C]):
    """At most ``size`` connections, opened on demand and reused; safe to share between threads.

    A connection that ``healthy`` rejects when it comes back (broken, or left inside a
    transaction) is closed instead of reused, so one failure does not poison later calls.
    """

    def __init__(
        self,
        connect: Callable[[], C],
        *,
        close: Callable[[C], None],
        healthy: Callable[[C], bool],
        size: int,
        name: str,
    ) -> None:
        self._connect, self._close, self._healthy = connect, close, healthy
        self._size, self._name = size, name
        self._idle: list[C] = []
        self._open = 0
        self._closed = False
        self._cond = threading.Condition()

    @contextmanager
    def connection(self) -> Iterator[C]:
        """Borrow a connection for the duration of the ``with`` block."""
        conn = self._acquire()
        try:
            yield conn
        finally:
            self._release(conn)

    def _acquire(self) -> C:
        with self._cond:
            while True:
                if self._closed:
                    raise StoreError(f"the store {self._name} is closed; open a new one")
                if self._idle:
                    return self._idle.pop()
                if self._open < self._size:
                    self._open += 1
                    break
                self._cond.wait()
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _release(self, conn: C) -> None:
        with self._cond:
            keep = not self._closed and self._healthy(conn)
            if keep:
                self._idle.append(conn)
            else:
                self._open -= 1
            self._cond.notify()
        if not keep:
            self._close(conn)

    def discard_idle(self) -> None:
        """Close the idle connections (the server went away: they are dead too); new ones open on demand."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            self._close(conn)

    def close(self) -> None:
        """Close idle connections now and borrowed ones when they come back; later borrows fail."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for conn in idle:
            self._close(conn)


def put_memory(cur: Cursor, d: Dialect, entry: MemoryEntry, vector: bytes) -> None:
    """Insert ``entry`` with its vector; an id already stored gets the new ``data`` only."""
    cur.execute(
        d.sql(
            "INSERT INTO memory (id, kind, key, created_at, embedder, vector, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET data = excluded.data"
        ),
        (
            entry.id,
            entry.kind,
            d.encode_text(entry.key),
            entry.created_at,
            entry.embedder,
            vector,
            d.encode_json(json.dumps(entry.data)),
        ),
    )


_MEMORY_COLUMNS = "id, kind, key, created_at, embedder, CAST(data AS TEXT)"


def memory(cur: Cursor, d: Dialect, kind: str, key: str | None, limit: int | None) -> list[MemoryEntry]:
    """Entries of ``kind`` (and ``key``), newest first."""
    where, params = ("kind = ? AND key = ?", [kind, key]) if key is not None else ("kind = ?", [kind])
    sql = f"SELECT {_MEMORY_COLUMNS} FROM memory WHERE {where} ORDER BY seq DESC LIMIT ?"
    rows = cur.execute(d.sql(sql), (*params, _NO_LIMIT if limit is None else limit)).fetchall()
    return [_entry(r) for r in rows]


def get_memory(cur: Cursor, d: Dialect, entry_ids: Sequence[str]) -> list[MemoryEntry]:
    """The entries with these ids, in the order given (missing ones left out)."""
    if not entry_ids:
        return []
    marks = ", ".join("?" * len(entry_ids))
    rows = cur.execute(d.sql(f"SELECT {_MEMORY_COLUMNS} FROM memory WHERE id IN ({marks})"), tuple(entry_ids))
    found = {r[0]: _entry(r) for r in rows.fetchall()}
    return [found[i] for i in entry_ids if i in found]


def memory_vectors(cur: Cursor, d: Dialect, kind: str, embedder: str, after: int) -> list[tuple[int, str, str, bytes]]:
    """``(seq, id, key, vector)`` of the entries of ``kind`` embedded by ``embedder``, past ``after``."""
    sql = "SELECT seq, id, key, vector FROM memory WHERE kind = ? AND embedder = ? AND seq > ? ORDER BY seq"
    rows = cur.execute(d.sql(sql), (kind, embedder, after)).fetchall()
    return [(int(s), i, k, bytes(v)) for s, i, k, v in rows]


def _entry(row: Sequence[Any]) -> MemoryEntry:
    entry_id, kind, key, created_at, embedder, data = row
    return MemoryEntry(id=entry_id, kind=kind, key=key, created_at=created_at, embedder=embedder, data=json.loads(data))


class SQLStore(TrajectoryStore):
    """The store methods, written once over a backend's ``_session`` and :class:`Dialect`.

    A backend sets ``_dialect`` and ``_pool`` and implements :meth:`_session`: a cursor, inside
    one transaction committed at the end of the block when ``write`` is set, with the backend's
    errors translated to :class:`~autodidact.errors.StoreError`.
    """

    _dialect: Dialect
    _pool: Pool[Any]

    @abc.abstractmethod
    def _session(self, *, write: bool) -> AbstractContextManager[Any]:
        """A cursor in a session (see the class docstring)."""

    def put_run(self, run: RunInfo) -> None:
        with self._session(write=True) as cur:
            put_run(cur, self._dialect, run)

    def append(self, trajectory: Trajectory) -> None:
        with self._session(write=True) as cur:
            append(cur, self._dialect, trajectory)

    def get(self, trajectory_id: str) -> Trajectory | None:
        with self._session(write=False) as cur:
            return get(cur, self._dialect, trajectory_id)

    def query(self, q: TrajectoryQuery = TrajectoryQuery()) -> list[Trajectory]:
        with self._session(write=False) as cur:
            return query(cur, self._dialect, q)

    def count(self, q: TrajectoryQuery = TrajectoryQuery()) -> int:
        with self._session(write=False) as cur:
            return count(cur, self._dialect, q)

    def summaries(self, q: TrajectoryQuery = TrajectoryQuery()) -> list[TrajectorySummary]:
        with self._session(write=False) as cur:
            return summaries(cur, self._dialect, q)

    def runs(self) -> list[RunSummary]:
        with self._session(write=False) as cur:
            return runs(cur, self._dialect)

    def put_memory(self, entry: MemoryEntry, vector: bytes) -> None:
        with self._session(write=True) as cur:
            put_memory(cur, self._dialect, entry, vector)

    def memory(self, kind: str, *, key: str | None = None, limit: int | None = None) -> list[MemoryEntry]:
        with self._session(write=False) as cur:
            return memory(cur, self._dialect, kind, key, limit)

    def get_memory(self, entry_ids: Sequence[str]) -> list[MemoryEntry]:
        with self._session(write=False) as cur:
            return get_memory(cur, self._dialect, entry_ids)

    def memory_vectors(self, kind: str, embedder: str, *, after: int = 0) -> list[tuple[int, str, str, bytes]]:
        with self._session(write=False) as cur:
            return memory_vectors(cur, self._dialect, kind, embedder, after)

    def close(self) -> None:
        self._pool.close()
