"""The SQLite trajectory store: one file, WAL mode, the default backend.

Owns the SQLite connection handling: a small pool of connections (one for ``":memory:"``)
shared by threads, write transactions taken with ``BEGIN IMMEDIATE`` and serialized inside
the process by a lock (so threads queue on the lock instead of SQLite's sleeping busy
handler), a busy timeout for writers in other processes, and the translation of every
``sqlite3.Error`` into a :class:`~autodidact.errors.StoreError` that names the file and
says what to do. Schema and queries are shared with PostgreSQL in :mod:`memory._rows`.

Durability: ``synchronous=NORMAL`` in WAL mode. A crashed or killed process never leaves a
partial episode; a power cut may lose the last few committed episodes, never corrupt the file.

Example:
    >>> store = SQLiteTrajectoryStore("runs/autodidact.db")  # doctest: +SKIP
    >>> store.append(trajectory)  # doctest: +SKIP
    >>> store.count(TrajectoryQuery(run_id=trajectory.run_id))  # doctest: +SKIP
    1
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, nullcontext
from pathlib import Path

from autodidact.errors import StoreError
from memory import _rows

_DIALECT = _rows.Dialect(
    placeholder="?",
    seq_column="INTEGER PRIMARY KEY AUTOINCREMENT",
    id_text="TEXT",  # SQLite's default BINARY collation compares bytes
    real="REAL",
    boolean="INTEGER",
    json="TEXT",
    blob="BLOB",
    steps_of_ids="trajectory_id IN (SELECT value FROM json_each(?))",
    integrity_error=sqlite3.IntegrityError,
    duplicate_marker="trajectories.id",
)

_HINTS = {
    sqlite3.SQLITE_BUSY: "another process held the write lock longer than the busy timeout ({timeout:g} s);"
    " retry, or stop the process that keeps a transaction open",
    sqlite3.SQLITE_LOCKED: "the database is locked by another connection; retry",
    sqlite3.SQLITE_NOTADB: "the file exists but is not a SQLite database; point the store at another path"
    " or move the file away",
    sqlite3.SQLITE_FULL: "the disk is full; free some space and retry",
    sqlite3.SQLITE_CANTOPEN: "the file cannot be opened; check that its directory exists and is writable",
    sqlite3.SQLITE_READONLY: "the file is read-only; check the permissions of the file and its directory"
    " (WAL mode writes -wal and -shm files beside it)",
    sqlite3.SQLITE_CORRUPT: "the file is corrupt; restore it from a backup or try `sqlite3 FILE .recover`",
    sqlite3.SQLITE_IOERR: "a disk I/O error occurred; check the disk and its free space",
}


class SQLiteTrajectoryStore(_rows.SQLStore):
    """Runs and episodes in one SQLite file; safe from many threads and many processes.

    Args:
        path: the database file (its parent directories are created), or ``":memory:"``.
        busy_timeout_s: how long a writer waits for another process's write lock.
        max_connections: connections kept for concurrent readers (one for ``":memory:"``).
    """

    _dialect = _DIALECT

    def __init__(self, path: str, *, busy_timeout_s: float = 30.0, max_connections: int = 4) -> None:
        self.path = path
        self.url = path
        self._timeout = busy_timeout_s
        in_memory = path == ":memory:"
        if not in_memory:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"SQLite store {path!r}: cannot create its directory: {e}") from e
        self._write_lock = threading.Lock()
        self._pool: _rows.Pool[sqlite3.Connection] = _rows.Pool(
            self._connect,
            close=sqlite3.Connection.close,
            healthy=lambda conn: not conn.in_transaction,
            size=1 if in_memory else max_connections,
            name=repr(path),
        )
        try:
            if not in_memory:
                self._use_wal()
            with self._session(write=True) as cur:
                _rows.init_schema(cur, _DIALECT, f"SQLite store {path!r}")
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"SQLiteTrajectoryStore({self.path!r})"

    def _use_wal(self) -> None:
        # WAL mode is a property of the file, set outside any transaction. Switching a new file
        # needs an exclusive lock, and when several processes open it at the same moment SQLite
        # answers BUSY at once, without waiting on the busy handler: so retry until the timeout.
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                with self._session(write=False) as cur:
                    cur.execute("PRAGMA journal_mode=WAL")
                return
            except StoreError as e:
                cause = e.__cause__
                busy = isinstance(cause, sqlite3.Error) and cause.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; sessions BEGIN and COMMIT themselves.
        conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _session(self, *, write: bool) -> Iterator[sqlite3.Cursor]:
        """A cursor; with ``write``, inside one transaction committed when the block ends."""
        try:
            # Writers queue on the lock before taking a connection, leaving the others to readers.
            # Closing the cursor resets its statement: one left pending would hold a read
            # transaction open on the pooled connection (then COMMIT or BEGIN fails as BUSY).
            with (
                self._write_lock if write else nullcontext(),
                self._pool.connection() as conn,
                closing(conn.cursor()) as cur,
            ):
                if not write:
                    yield cur
                    return
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    conn.rollback()
                    raise
                cur.execute("COMMIT")
        except sqlite3.Error as e:
            raise self._error(e) from e

    def _error(self, e: sqlite3.Error) -> StoreError:
        code = getattr(e, "sqlite_errorcode", None)
        hint = _HINTS.get(code & 0xFF, "") if isinstance(code, int) else ""
        hint = hint.format(timeout=self._timeout) if hint else "check the file, or open the store at another path"
        return StoreError(f"SQLite store {self.path!r}: {e}; {hint}")
