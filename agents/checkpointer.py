"""Where episodes' graph states are checkpointed: LangGraph's SqliteSaver, used from asyncio.

LangGraph's ``SqliteSaver`` only has synchronous methods and ``AsyncSqliteSaver`` sends every
statement to a helper thread (aiosqlite), which made checkpointing cost more than the rest
of a step (about 6 ms of thread hops a step, measured with ``benchmarks/rollout.py``).
:class:`InlineSqliteSaver` runs the saver's own synchronous methods inline on the event
loop instead: with WAL and ``synchronous=NORMAL`` a write is tens of microseconds, less than
a hop. Writes are committed in groups (within 50 ms), so a checkpoint survives the process
being killed — what resuming is for — once its group is committed, though not a power cut.
A group never holds the file's write lock longer than that: several processes (two runs, or
Ray drivers, under one ``$AUTODIDACT_HOME``) can checkpoint into the same file.

Only our own records (subclasses of :class:`~autodidact.types.Record`) and the types
LangGraph allows itself are read back from a checkpoint.

Example:
    >>> with open_checkpointer(home() / "checkpoints.sqlite") as saver:  # doctest: +SKIP
    ...     graph = build_react_graph(checkpointer=saver)
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from autodidact.types import Record


class InlineSqliteSaver(SqliteSaver):
    """``SqliteSaver`` whose async methods run its synchronous ones on the calling thread, and
    whose writes are committed together within ``commit_every_s`` (and on close): a process
    killed loses at most that much of the latest checkpoints, and the episode resumes from the
    one before."""

    commit_every_s = 0.05

    def __init__(self, conn: sqlite3.Connection, **kwargs: Any) -> None:
        super().__init__(conn, **kwargs)
        self._committed = time.monotonic()
        self._commit_due = False

    def _commit(self) -> None:
        with self.lock:
            self._commit_due = False
            self._committed = time.monotonic()
            with suppress(sqlite3.ProgrammingError):  # closed meanwhile (its close committed)
                self.conn.commit()

    @contextmanager
    def cursor(self, transaction: bool = True) -> Iterator[sqlite3.Cursor]:
        with self.lock:
            self.setup()
            cur = self.conn.cursor()
            try:
                yield cur
            finally:
                cur.close()
        if not transaction or self._commit_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or time.monotonic() - self._committed >= self.commit_every_s:
            self._commit()
        else:  # commit this group soon, even if nothing else is written: others may wait for the lock
            self._commit_due = True
            loop.call_later(self.commit_every_s, self._commit)

    async def aget_tuple(self, config: Any) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(
        self, config: Any, *, filter: dict[str, Any] | None = None, before: Any = None, limit: int | None = None
    ) -> AsyncIterator[CheckpointTuple]:
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self, config: Any, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions
    ) -> Any:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: Any, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)


@contextmanager
def open_checkpointer(path: str | Path) -> Iterator[InlineSqliteSaver]:
    """A saver on the SQLite file ``path`` (created with its folder; WAL, no fsync per commit;
    a writer waits up to 30 s for another process's write lock)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    serde = JsonPlusSerializer(allowed_msgpack_modules=[(c.__module__, c.__name__) for c in _records(Record)])
    with closing(sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        saver = InlineSqliteSaver(conn, serde=serde)
        try:
            yield saver
        finally:
            conn.commit()


def _records(cls: type) -> list[type]:
    subs: list[type] = cls.__subclasses__()
    return subs + [c for sub in subs for c in _records(sub)]
