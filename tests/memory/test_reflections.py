"""Reflection memory on both store backends: stored with provenance, recalled for the same task
and by real all-MiniLM-L6-v2 similarity for others; the vector index and the schema migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from autodidact.types import Task
from memory import TrajectoryStore, open_store
from memory.base import MemoryEntry
from memory.embed import HashingEmbedder, MiniLMEmbedder, default_embedder, minilm_available
from memory.reflections import Reflection, ReflectionMemory
from memory.vectors import VectorIndex

needs_minilm = pytest.mark.skipif(not minilm_available(), reason="the memory extra is not installed")


def task(tid: str, prompt: str) -> Task:
    return Task(id=tid, suite="s", prompt=prompt)


REVERSE = task("s/reverse", "Write reverse(xs): the list xs in reverse order.")
FLIP = task("s/flip", "Write flip(items): return the items backwards, last one first.")
DATES = task("s/dates", "Write parse_date(s): read an ISO date like 2024-01-31 into a (year, month, day) tuple.")


def lesson(t: Task, text: str, **fields: object) -> Reflection:
    return Reflection(text=text, task_id=t.id, task_prompt=t.prompt, suite=t.suite, **fields)  # type: ignore[arg-type]


@needs_minilm
def test_recall_gives_the_tasks_latest_lessons_then_the_nearest_from_other_tasks(store: TrajectoryStore) -> None:
    memory = ReflectionMemory(store, default_embedder())
    assert memory.embedder.name == "all-MiniLM-L6-v2"
    memory.add([lesson(REVERSE, f"reverse lesson {i}", trajectory_id=f"t{i}", round=i) for i in range(4)])
    memory.add([lesson(DATES, "Split the string on '-' and convert each part with int().")])
    recalled = memory.recall(REVERSE, recent=3, similar=1)
    assert [r.text for r in recalled[:3]] == ["reverse lesson 3", "reverse lesson 2", "reverse lesson 1"]
    assert recalled[0].trajectory_id == "t3" and recalled[0].round == 3  # provenance kept
    assert [r.task_id for r in recalled[3:]] == ["s/dates"]  # the only other task
    near = memory.recall(FLIP, recent=3, similar=2)  # nothing on flip yet: two nearest others
    assert [r.task_id for r in near] == ["s/reverse", "s/reverse"]  # reversing is nearer than dates
    assert memory.recall(DATES, recent=0, similar=0) == []


def test_the_hashing_embedder_is_a_working_fallback(store: TrajectoryStore) -> None:
    memory = ReflectionMemory(store, HashingEmbedder())
    memory.add([lesson(REVERSE, "Use slicing with step -1."), lesson(DATES, "Split on '-'.")])
    [near] = memory.recall(task("s/other", "reverse the list xs"), recent=0, similar=1)
    assert near.task_id == "s/reverse"
    vectors = HashingEmbedder().embed(["", "a b"])
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), [0.0, 1.0], atol=1e-6)


def test_vectors_of_another_embedder_are_never_compared(store: TrajectoryStore) -> None:
    ReflectionMemory(store, HashingEmbedder()).add([lesson(REVERSE, "Use slicing.")])

    class Other(HashingEmbedder):
        name = "other-384"

    assert ReflectionMemory(store, Other()).recall(FLIP, recent=0, similar=3) == []


def test_the_index_reads_only_new_entries_and_excludes_a_key(store: TrajectoryStore) -> None:
    e = HashingEmbedder()
    index = VectorIndex(store, "note", e)
    for i, text in enumerate(["alpha beta", "alpha gamma", "delta"]):
        entry = MemoryEntry(id=f"n{i}", kind="note", key=f"k{i % 2}", embedder=e.name, data={"i": i})
        store.put_memory(entry, e.embed([text])[0].tobytes())
    hits = index.search(e.embed(["alpha"])[0], k=5)
    assert {h[0] for h in hits} == {"n0", "n1", "n2"} and hits[-1][0] == "n2" and len(index) == 3
    assert [h[0] for h in index.search(e.embed(["alpha"])[0], k=5, exclude_key="k0")] == ["n1"]
    store.put_memory(MemoryEntry(id="n3", kind="note", key="k3", embedder=e.name), e.embed(["alpha"])[0].tobytes())
    index.search(e.embed(["alpha"])[0], k=1)
    assert len(index) == 3  # searches read the store at most every max_age_s
    index.refresh()
    assert index.search(e.embed(["alpha"])[0], k=1)[0][0] == "n3" and len(index) == 4
    # a put with a stored id updates the data only
    store.put_memory(MemoryEntry(id="n3", kind="note", key="k9", embedder=e.name, data={"v": 2}), b"\0" * 1536)
    [again] = store.get_memory(["n3"])
    assert again.data == {"v": 2} and again.key == "k3"
    assert [m.id for m in store.memory("note", key="k0")] == ["n2", "n0"]  # newest first


def test_a_store_from_before_memory_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with open_store(str(path)):
        pass
    with sqlite3.connect(path) as db:  # make it look like schema 1
        db.execute("DROP TABLE memory")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with open_store(str(path)) as store:
        ReflectionMemory(store, HashingEmbedder()).add([lesson(REVERSE, "Use slicing.")])
        assert [e.data["text"] for e in store.memory("reflection")] == ["Use slicing."]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)


@needs_minilm
def test_minilm_vectors_are_unit_length_and_batch_independent() -> None:
    e = default_embedder()
    assert isinstance(e, MiniLMEmbedder)
    one = e.embed(["reverse a list"])
    many = e.embed(["reverse a list", "parse a date"])
    assert one.shape == (1, 384) and np.allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)
    assert np.allclose(one[0], many[0], atol=1e-5)
