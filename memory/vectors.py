"""Nearest memory entries by cosine similarity: an in-memory numpy index over the store's vectors.

The store keeps each entry's vector (float32 bytes); :class:`VectorIndex` holds those of one
kind and one embedder as a float16 matrix, refreshed incrementally (only entries added since
the last refresh are read), and answers top-k by one matrix-vector product. The same code
serves SQLite and PostgreSQL. At 100k entries of 384 dimensions the matrix is 77 MB and a
search takes a few milliseconds (``benchmarks/memory_retrieval.py``).

Example:
    >>> index = VectorIndex(store, "reflection", embedder)  # doctest: +SKIP
    >>> index.search(embedder.embed(["reverse a list"])[0], k=5, exclude_key="bundled/reverse")  # doctest: +SKIP
    [('3f2a…', 0.71), …]
"""

from __future__ import annotations

import threading
import time

import numpy as np

from memory.base import TrajectoryStore
from memory.embed import Embedder


class VectorIndex:
    """The vectors of ``kind``'s entries made by ``embedder``, searchable (thread-safe).

    A search reads new entries first, at most every ``max_age_s`` (a query on the store each
    time would cost more than the search); :meth:`refresh` reads them at once.
    """

    max_age_s = 0.5

    def __init__(self, store: TrajectoryStore, kind: str, embedder: Embedder) -> None:
        self.store = store
        self.kind = kind
        self.embedder = embedder
        self._lock = threading.Lock()
        self._seq = 0
        self._n = 0
        self._ids: list[str] = []
        self._matrix = np.zeros((0, embedder.dim), dtype=np.float16)
        self._codes = np.zeros(0, dtype=np.int32)  # each row's key, as a small integer
        self._key_codes: dict[str, int] = {}
        self._refreshed = -float("inf")

    def __len__(self) -> int:
        return self._n

    def ids(self, start: int = 0) -> list[str]:
        """The ids of the entries from position ``start`` on, in the order they were added."""
        with self._lock:
            return self._ids[start:]

    def has_key(self, key: str) -> bool:
        """Whether an entry with ``key`` was seen (as of the last refresh)."""
        return key in self._key_codes

    def refresh(self, *, max_age_s: float = 0.0) -> None:
        """Read the entries added since the last refresh (none when that was under ``max_age_s`` ago)."""
        with self._lock:
            now = time.monotonic()
            if now - self._refreshed < max_age_s:
                return
            self._refreshed = now
            rows = self.store.memory_vectors(self.kind, self.embedder.name, after=self._seq)
            if not rows:
                return
            need = self._n + len(rows)
            if need > len(self._matrix):  # grow by doubling: appends stay linear overall
                size = max(need, 2 * len(self._matrix), 64)
                matrix = np.zeros((size, self.embedder.dim), dtype=np.float16)
                matrix[: self._n] = self._matrix[: self._n]
                codes = np.zeros(size, dtype=np.int32)
                codes[: self._n] = self._codes[: self._n]
                self._matrix, self._codes = matrix, codes
            for seq, entry_id, key, vector in rows:
                self._matrix[self._n] = np.frombuffer(vector, dtype=np.float32)
                self._codes[self._n] = self._key_codes.setdefault(key, len(self._key_codes))
                self._ids.append(entry_id)
                self._n += 1
                self._seq = seq

    def search(self, vector: np.ndarray, k: int, *, exclude_key: str | None = None) -> list[tuple[str, float]]:
        """The ``k`` entries most similar to ``vector`` (a unit vector): ``(id, cosine)``, best first.

        ``exclude_key`` leaves out the entries with that key (e.g. the task's own reflections).
        Entries written by others show up within ``max_age_s`` (see :meth:`refresh`).
        """
        self.refresh(max_age_s=self.max_age_s)
        with self._lock:
            n = self._n
            if n == 0 or k <= 0:
                return []
            scores = _scores(self._matrix[:n], vector)
            if exclude_key is not None and exclude_key in self._key_codes:
                scores[self._codes[:n] == self._key_codes[exclude_key]] = -np.inf
            k = min(k, n)
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top])]
            return [(self._ids[i], float(scores[i])) for i in top if np.isfinite(scores[i])]


def _scores(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``matrix @ vector`` as float32, computed in float16 by torch: the product reads the whole
    matrix, so half the bytes is about half the time (4.7 ms against numpy's 7.6 ms in float32
    for 100k x 384 on 2 cores); cosines keep about 3 significant digits, plenty to rank by."""
    import torch

    product = torch.from_numpy(matrix) @ torch.from_numpy(vector.astype(np.float16))
    return product.float().numpy()
