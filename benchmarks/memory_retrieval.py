"""Memory write rate and top-5 retrieval latency at 10k and 100k entries, on SQLite and PostgreSQL.

Run: ``.venv/bin/python benchmarks/memory_retrieval.py [--sizes 10000 100000] [--queries 200]
[--backends sqlite postgres]`` (PostgreSQL: a throwaway durable server, when its binaries are
installed).
(Not ``benchmarks/memory.py``: a script of that name would hide the ``memory`` package from
every script in this folder.)

Entries are reflections with random unit vectors (384 float32), written one transaction each
through the store, as the runner writes them; the embedder's own speed is measured apart on
real sentences (all-MiniLM-L6-v2 when installed, else the hashing embedder). Printed:

- write rate (entries/s) into the store;
- top-5 search latency of the in-memory index (median and p95 over ``--queries`` queries),
  and of a whole :meth:`ReflectionMemory.recall` (3 of the task's own + 5 similar, the
  query's embedding cached as in a run), target <= 10 ms at 100k;
- the first search after opening (the index reads every vector from the store);
- embedding speed, sentences/s, batched and one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from autodidact.types import Task
from memory.base import MemoryEntry, TrajectoryStore, open_store
from memory.embed import DIM, HashingEmbedder, default_embedder
from memory.reflections import KIND, Reflection, ReflectionMemory
from memory.testing import postgres_bin_dir, start_postgres


class FixedEmbedder(HashingEmbedder):
    """Returns a given vector for every text (queries in the latency runs)."""

    name = "bench-random"

    def __init__(self, vector: np.ndarray) -> None:
        self.vector = vector

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.tile(self.vector, (len(texts), 1))


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def ms(samples: list[float]) -> str:
    p95 = sorted(samples)[int(0.95 * (len(samples) - 1))]
    return f"median {statistics.median(samples) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms"


def measure(store: TrajectoryStore, size: int, rng: np.random.Generator, n_queries: int) -> str:
    """Write ``size`` entries into ``store``, then time the index load, searches and recalls."""
    vectors = unit(rng, size)
    start = time.perf_counter()
    for i in range(size):
        r = Reflection(text=f"lesson {i}", task_id=f"bench/{i % 1000}", task_prompt="p")
        entry = MemoryEntry(kind=KIND, key=r.task_id, embedder=FixedEmbedder.name, data=r.model_dump())
        store.put_memory(entry, vectors[i].tobytes())
    write = size / (time.perf_counter() - start)
    queries = unit(rng, n_queries)
    memory = ReflectionMemory(store, FixedEmbedder(queries[0]))
    start = time.perf_counter()
    memory.index.refresh()
    load = time.perf_counter() - start
    search = []
    for q in queries:
        t = time.perf_counter()
        memory.index.search(q, 5, exclude_key="bench/0")
        search.append(time.perf_counter() - t)
    recall = []
    for i, q in enumerate(queries):
        memory.embedder = FixedEmbedder(q)
        task = Task(id=f"bench/{i % 1000}", suite="bench", prompt=f"query {i}")
        t = time.perf_counter()
        got = memory.recall(task, recent=3, similar=5)
        recall.append(time.perf_counter() - t)
        assert len(got) == 8, got
    return (
        f"{size:>7} entries: write {write:,.0f} entries/s; index load {load * 1000:.0f} ms; "
        f"top-5 search {ms(search)}; whole recall {ms(recall)} (target <= 10 ms)"
    )


@contextlib.contextmanager
def stores(backend: str, tmp: Path) -> Iterator[Callable[[str], TrajectoryStore]]:
    """Open a fresh store by name: a SQLite file, or a schema on a throwaway durable PostgreSQL."""
    if backend == "sqlite":
        yield lambda name: open_store(str(tmp / f"{name}.db"))
        return
    import psycopg

    with start_postgres(durable=True) as url:

        def fresh(name: str) -> TrajectoryStore:
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f"CREATE SCHEMA {name}")
            return open_store(f"{url}?options=-csearch_path%3D{name}")

        yield fresh


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--backends",
        nargs="+",
        choices=["sqlite", "postgres"],
        default=None,
        help="default: both when PostgreSQL is installed",
    )
    args = ap.parse_args()
    backends = args.backends or ["sqlite", *(["postgres"] if postgres_bin_dir() else [])]
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="autodidact-bench-memory-"))
    for backend in backends:
        with stores(backend, tmp) as open_fresh:
            for size in args.sizes:
                with open_fresh(f"m{size}") as store:
                    print(f"{backend:>8} {measure(store, size, rng, args.queries)}", flush=True)
    embedder = default_embedder()
    sentences = [f"Write a function number {i} that reverses a list of {i} items." for i in range(256)]
    embedder.embed(sentences[:8])  # warm up
    start = time.perf_counter()
    embedder.embed(sentences)
    batched = len(sentences) / (time.perf_counter() - start)
    start = time.perf_counter()
    for s in sentences[:32]:
        embedder.embed([s])
    single = 32 / (time.perf_counter() - start)
    print(f"embedder {embedder.name}: {batched:,.0f} sentences/s batched, {single:,.0f} one at a time")


if __name__ == "__main__":
    main()
