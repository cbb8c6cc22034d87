"""Reflections: lessons written after failed or costly episodes and recalled into the solver's prompt.

After an episode fails (or succeeds only after failed attempts that took more than half its
step budget), a one-sentence lesson is written — by the refiner, inside a
reflexion episode, or by the ``reflector`` role afterwards — and kept with its provenance
(task, episode, run, round, model). Before an episode, :meth:`ReflectionMemory.recall` gives
the latest ``recent`` lessons about the same task and the ``similar`` nearest lessons about
other tasks (by the embedding of each lesson with its task; see :mod:`memory.embed`); the
runner puts them in the solver's first prompt. Reflections live in the store's ``memory``
table, beside the trajectories (SQLite or PostgreSQL).

Example:
    >>> memory = ReflectionMemory(store)  # doctest: +SKIP
    >>> memory.add([Reflection(text="Check the empty list first.", task_id=task.id, task_prompt=task.prompt)])  # doctest: +SKIP
    >>> [r.text for r in memory.recall(task)]  # doctest: +SKIP
    ['Check the empty list first.']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autodidact.types import Record, Task
from memory.base import MemoryEntry, TrajectoryStore
from memory.embed import Embedder, default_embedder
from memory.vectors import VectorIndex

KIND = "reflection"
_QUERY_CACHE = 4096


class Reflection(Record):
    """A lesson and where it came from."""

    text: str
    task_id: str
    task_prompt: str = ""
    suite: str = ""
    trajectory_id: str | None = None
    run_id: str | None = None
    round: int = 0
    model: str = ""


class ReflectionMemory:
    """Reflections in ``store``: added with their embeddings, recalled per task."""

    def __init__(self, store: TrajectoryStore, embedder: Embedder | None = None) -> None:
        self.store = store
        self.embedder = embedder or default_embedder()
        self.index = VectorIndex(store, KIND, self.embedder)
        self._queries: dict[str, np.ndarray] = {}  # task prompt -> embedding: samples and rounds repeat tasks

    def _query(self, text: str) -> np.ndarray:
        vector = self._queries.get(text)
        if vector is None:
            if len(self._queries) >= _QUERY_CACHE:
                self._queries.pop(next(iter(self._queries)))
            vector = self._queries[text] = self.embedder.embed([text])[0]
        return vector

    def add(self, reflections: Sequence[Reflection]) -> None:
        """Store each reflection with the embedding of its task and text."""
        if not reflections:
            return
        vectors = self.embedder.embed([f"{r.task_prompt}\n{r.text}" for r in reflections])
        for r, v in zip(reflections, vectors, strict=True):
            entry = MemoryEntry(kind=KIND, key=r.task_id, embedder=self.embedder.name, data=r.model_dump(mode="json"))
            self.store.put_memory(entry, v.tobytes())
        self.index.refresh()

    def recall(self, task: Task, *, recent: int = 3, similar: int = 3) -> list[Reflection]:
        """The latest ``recent`` reflections on ``task``, then the ``similar`` nearest ones on other tasks."""
        self.index.refresh(max_age_s=self.index.max_age_s)
        known = self.index.has_key(task.id)  # no lessons on the task: no query for them
        own = self.store.memory(KIND, key=task.id, limit=recent) if recent > 0 and known else []
        others: list[MemoryEntry] = []
        if similar > 0 and len(self.index) > 0:
            hits = self.index.search(self._query(task.prompt), similar, exclude_key=task.id)
            others = self.store.get_memory([entry_id for entry_id, _ in hits])
        return [Reflection.model_validate(e.data) for e in [*own, *others]]
