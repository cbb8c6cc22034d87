"""The PostgreSQL trajectory store, for clusters: many hosts writing one database.

Owns the PostgreSQL connection handling (psycopg 3): a small pool of autocommit connections
shared by threads, one transaction per write, schema creation serialized across processes by
an advisory lock, and the translation of every ``psycopg.Error`` into a
:class:`~autodidact.errors.StoreError` that names ``host:port`` (never the password). Schema
and queries are shared with SQLite in :mod:`memory._rows`; JSON columns are ``JSONB``.

Two things JSONB does not keep: the NUL character (PostgreSQL cannot store it in text or
JSONB; this backend writes U+FFFD, the replacement character, instead) and the key order of
free-form dicts (``Task.payload``, ``Observation.data``, ``Action.args``). Records read back
compare equal to the ones written.

Example:
    >>> store = PostgresTrajectoryStore("postgresql://me@db.example:5432/autodidact")  # doctest: +SKIP
    >>> store.append(trajectory)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

from autodidact.errors import StoreError
from memory import _rows

# A JSON "\u0000" escape: one not preceded by an odd number of backslashes (those escape each other).
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _json_without_nul(text: str) -> str:
    return _JSON_NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


def _text_without_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd")


_DIALECT = _rows.Dialect(
    placeholder="%s",
    seq_column="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    id_text='TEXT COLLATE "C"',  # byte order, whatever the database's collation
    real="DOUBLE PRECISION",
    boolean="BOOLEAN",
    json="JSONB",
    blob="BYTEA",
    steps_of_ids="trajectory_id = ANY (ARRAY(SELECT jsonb_array_elements_text(CAST(? AS jsonb))))",
    integrity_error=psycopg.IntegrityError,
    duplicate_marker="trajectories_id_key",
    encode_json=_json_without_nul,
    encode_text=_text_without_nul,
)

_SCHEMA_LOCK = 0x6175746F  # pg_advisory_xact_lock key: one schema migration at a time


def _reason(e: BaseException) -> str:
    """The useful line of a libpq message: 'Connection refused', not the whole preamble."""
    lines = str(e).strip().splitlines()
    line = lines[0] if lines else type(e).__name__
    return line.rsplit(" failed: ", 1)[-1].removeprefix("FATAL:").strip()


def _compress_with_lz4(cur: psycopg.Cursor[Any]) -> None:
    # Episode JSON is large enough to be compressed (TOAST); lz4 makes appends ~1.5x faster
    # than the default pglz. Servers built without lz4 keep pglz.
    cur.execute("SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
    row = cur.fetchone()
    if row and row[0]:
        for table in ("runs", "trajectories", "steps"):
            column = "config" if table == "runs" else "data"
            cur.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")


class PostgresTrajectoryStore(_rows.SQLStore):
    """Runs and episodes in a PostgreSQL database; safe from many threads, processes and hosts.

    ``url`` keeps the URL as given, password included, so that other processes can open the
    same store; ``repr()`` and error messages show ``host:port`` only.

    Args:
        url: ``postgresql://user:password@host:port/dbname`` (any libpq URL or DSN).
        max_connections: connections this store opens at most (threads beyond wait for one).
        connect_timeout_s: how long to wait for the server when connecting, unless the URL says.
    """

    _dialect = _DIALECT

    def __init__(self, url: str, *, max_connections: int = 8, connect_timeout_s: int = 10) -> None:
        self.url = url
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as e:
            raise StoreError(f"invalid PostgreSQL URL: {_reason(e)}; expected postgresql://user@host:port/db") from None
        self._where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
        params.setdefault("connect_timeout", connect_timeout_s)
        params.setdefault("application_name", "autodidact")
        self._conninfo = make_conninfo("", **params)
        self._pool: _rows.Pool[psycopg.Connection[Any]] = _rows.Pool(
            self._connect,
            close=psycopg.Connection.close,
            healthy=lambda c: not c.broken and c.info.transaction_status == TransactionStatus.IDLE,
            size=max_connections,
            name=f"PostgreSQL at {self._where}",
        )
        try:
            with self._session(write=True) as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                if _rows.init_schema(cur, _DIALECT, f"PostgreSQL store at {self._where}"):
                    _compress_with_lz4(cur)
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresTrajectoryStore({self._where!r})"

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as e:
            reason = _reason(e)
            wrong_url = any(s in reason for s in ("authentication", "password", "does not exist"))
            hint = "check the user, password and database name in the URL" if wrong_url else "is the server running?"
            raise StoreError(f"cannot connect to PostgreSQL at {self._where}: {reason}; {hint}") from e

    @contextmanager
    def _session(self, *, write: bool) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor; with ``write``, inside one transaction committed when the block ends."""
        try:
            with self._pool.connection() as conn:
                if write:
                    with conn.transaction(), conn.cursor() as cur:
                        yield cur
                else:
                    with conn.cursor() as cur:
                        yield cur
        except psycopg.Error as e:
            lost = isinstance(e, psycopg.OperationalError) and (e.sqlstate or "08").startswith(("08", "57P"))
            if lost:
                self._pool.discard_idle()  # so that the next call connects afresh, once the server is back
                raise StoreError(
                    f"lost the connection to PostgreSQL at {self._where}: {_reason(e)}; is the server running?"
                ) from e
            raise StoreError(f"PostgreSQL store at {self._where}: {_reason(e)}") from e
