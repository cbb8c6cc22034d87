"""One conformance suite for every trajectory store backend (SQLite file, PostgreSQL server).

Every test taking ``store`` or ``store_url`` runs once per backend, against the real thing.
Tests at the end pin down what is specific to one backend (its error messages, its files).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from autodidact.errors import StoreError
from autodidact.types import Action, Message, Observation, PolicyRef, SamplingParams, Step, Task, Trajectory
from memory import RunInfo, TrajectoryQuery, TrajectoryStore, open_store
from memory.sqlite import SQLiteTrajectoryStore
from memory.testing import sample_trajectory

SPAWN = multiprocessing.get_context("spawn")


def rich_trajectory(run_id: str = "run-a", **fields: Any) -> Trajectory:
    """An episode exercising every field: unicode, escapes, tokens, logprobs, nested data, errors."""
    steps = (
        Step(
            index=0,
            role="solver",
            messages=(
                Message(role="system", content="You write Python. Answer with one ```python block."),
                Message(
                    role="user", content='Écris `last(xs)` — 最后一个 🙂\n\ttab, \\ backslash, "quote", \\u0000 text'
                ),
            ),
            completion="```python\ndef last(xs):\n    return xs[-1]\n```",
            token_ids=(0, 1, 2, 49151, 17),
            logprobs=(0.0, -1.2345678901234567e-05, -0.1, -3.5, -1e-300),
            action=Action(kind="code", text="def last(xs):\n    return xs[-1]\n", args={"lang": "python"}),
            observation=Observation(
                text="1 passed, 0 failed",
                data={"exit_code": 0, "nested": {"list": [1, 2.5, None, True, "x"], "empty": {}}, "big": 2**53},
            ),
            reward=0.25,
            latency_s=0.123456789,
        ),
        Step(
            index=1,
            role="reviewer",
            messages=(Message(role="assistant", content="Looks right."),),
            completion=None,
            output={"score": 0.3, "critique": "off by one — 最后", "tags": ["a", None]},
            error="ParseError: no code block in the completion",
            truncated=True,
        ),
        Step(index=1, role="tool", observation=Observation(text=""), reward=1.7976931348623157e308, terminated=True),
    )
    values: dict[str, Any] = {
        "run_id": run_id,
        "task": Task(
            id="humaneval/HumanEval_0",
            suite="humaneval",
            prompt="def last(xs):\n    ...",
            split="test",
            payload={"tests": ["assert last([1, 2]) == 2"], "entry_point": "last", "timeout": 2.5},
        ),
        "env_id": "code",
        "policy": PolicyRef(
            model="smollm2-135m",
            backend="transformers",
            adapter="runs/ckpt/round-1",
            sampling=SamplingParams(temperature=0.7, top_p=0.95, max_tokens=64, stop=("```\n",), seed=3),
        ),
        "steps": steps,
        "reward": 1.0,
        "success": True,
        "round": 2,
        "parent_id": "f" * 32,
        "branch_step": 1,
        "started_at": 1700000000.123456,
        "duration_s": 4.5,
        "error": "sandbox: timed out after 2 s",
    }
    return Trajectory(**{**values, **fields})


def _is_postgres(store_or_url: TrajectoryStore | str) -> bool:
    url = store_or_url if isinstance(store_or_url, str) else store_or_url.url
    return url.startswith("postgresql://")


def _execute_raw(url: str, sql: str) -> None:
    """Run one statement with the backend's own driver, around the store."""
    if _is_postgres(url):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]
    else:
        with sqlite3.connect(url) as conn:
            conn.execute(sql)
        conn.close()


def _write_transaction_open(url: str) -> bool:
    """Whether some other connection is inside a transaction that has written to the store."""
    if _is_postgres(url):
        import psycopg

        sql = "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
        return row is not None and row[0] > 0
    conn = sqlite3.connect(url, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")  # fails while another connection holds the write lock
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as e:
        return "locked" in str(e)
    finally:
        conn.close()


# --- records survive the store exactly -------------------------------------------------------


def test_round_trip_is_exact(store: TrajectoryStore) -> None:
    t = rich_trajectory()
    store.append(t)
    assert store.get(t.id) == t
    assert store.query() == [t]
    assert [s.index for s in store.query()[0].steps] == [0, 1, 1]  # order kept, whatever the indexes say
    with open_store(store.url) as reopened:
        got = reopened.get(t.id)
    assert got == t
    assert got is not None and got.model_dump() == t.model_dump()
    if not _is_postgres(store):  # JSONB keeps the keys of free-form dicts (payload, data) in its own order
        assert got.model_dump_json() == t.model_dump_json()


def test_episode_without_steps(store: TrajectoryStore) -> None:
    t = rich_trajectory(steps=(), error="backend unreachable", success=False)
    store.append(t)
    assert store.get(t.id) == t
    assert store.count(TrajectoryQuery(success=False)) == 1


def test_nul_characters_are_stored(store: TrajectoryStore) -> None:
    t = sample_trajectory(n_steps=1)
    step = t.steps[0].model_copy(
        update={
            "observation": Observation(text="bin\x00ary"),
            "completion": r"a literal \u0000 stays",
            "error": "e\x00",
        }
    )
    t = t.model_copy(update={"steps": (step,), "error": "x\x00y"})
    store.append(t)
    got = store.get(t.id)
    assert got is not None
    assert got.steps[0].completion == r"a literal \u0000 stays"
    if _is_postgres(store):  # PostgreSQL cannot hold NUL in text or JSONB: stored as U+FFFD
        assert got.steps[0].observation == Observation(text="bin\ufffdary")
        assert (got.error, got.steps[0].error) == ("x\ufffdy", "e\ufffd")
    else:
        assert got == t


def test_non_finite_floats_round_trip(store: TrajectoryStore) -> None:
    t = sample_trajectory(n_steps=1)
    step = t.steps[0].model_copy(update={"logprobs": (float("-inf"), -0.5), "latency_s": float("inf")})
    t = t.model_copy(update={"steps": (step,), "reward": float("nan")})
    store.append(t)
    got = store.get(t.id)
    assert got is not None
    assert got.steps[0].logprobs == (float("-inf"), -0.5) and got.steps[0].latency_s == float("inf")
    assert math.isnan(got.reward)
    assert store.count(TrajectoryQuery(run_id=t.run_id)) == 1


# --- queries ------------------------------------------------------------------------------------


def test_query_filters_limit_offset_and_count(store: TrajectoryStore) -> None:
    episodes = [
        sample_trajectory(
            run_id=f"r{i % 2}",
            suite=("bundled", "humaneval", "mbpp")[i % 3],
            task_id=f"task-{i % 4}",
            success=i % 5 < 2,
            round=i // 6,
            n_steps=1 + i % 3,
            seed=i,
        )
        for i in range(18)
    ]
    for t in episodes:
        store.append(t)

    def matches(t: Trajectory, q: TrajectoryQuery) -> bool:
        return all(
            want is None or want == have
            for want, have in (
                (q.run_id, t.run_id),
                (q.suite, t.task.suite),
                (q.task_id, t.task.id),
                (q.success, t.success),
                (q.round, t.round),
            )
        )

    choices = itertools.product(
        (None, "r0", "r1", "nope"), (None, "humaneval"), (None, "task-1"), (None, True, False), (None, 0, 2)
    )
    for run_id, suite, task_id, success, round_ in choices:
        q = TrajectoryQuery(run_id=run_id, suite=suite, task_id=task_id, success=success, round=round_)
        expected = [t.id for t in episodes if matches(t, q)]
        assert [t.id for t in store.query(q)] == expected, q
        assert store.count(q) == len(expected), q

    q = TrajectoryQuery(run_id="r0")
    in_run = [t for t in episodes if t.run_id == "r0"]
    assert store.query(q.model_copy(update={"limit": 3, "offset": 2})) == in_run[2:5]
    assert store.query(q.model_copy(update={"offset": 7})) == in_run[7:]
    assert store.query(q.model_copy(update={"offset": 100})) == []
    assert store.count(q.model_copy(update={"limit": 1, "offset": 3})) == len(in_run)
    assert store.query() == episodes  # steps included, in order, insertion order overall


def test_query_by_role_finds_episodes_with_a_step_of_that_role(store: TrajectoryStore) -> None:
    def with_roles(seed: int, roles: tuple[str, ...], **fields: Any) -> Trajectory:
        t = sample_trajectory(n_steps=len(roles), seed=seed, **fields)
        return t.model_copy(
            update={"steps": tuple(s.model_copy(update={"role": r}) for s, r in zip(t.steps, roles, strict=True))}
        )

    episodes = [
        with_roles(0, ("solver",)),
        with_roles(1, ("solver", "reviewer", "refiner", "reviewer"), success=True),
        with_roles(2, ("solver", "world_model")),
        with_roles(3, ("reviewer",), run_id="other"),
        with_roles(4, ()),
        with_roles(5, ("solver", "reviewer"), round=1),
        with_roles(6, ("r\x00le",)),  # PostgreSQL stores the NUL as U+FFFD: the filter must match it all the same
    ]
    for t in episodes:
        store.append(t)
    reviewed = [episodes[i].id for i in (1, 3, 5)]
    assert [t.id for t in store.query(TrajectoryQuery(role="reviewer"))] == reviewed  # each once, in order
    assert store.count(TrajectoryQuery(role="reviewer")) == 3
    assert [t.id for t in store.query(TrajectoryQuery(role="solver"))] == [episodes[i].id for i in (0, 1, 2, 5)]
    assert [t.id for t in store.query(TrajectoryQuery(role="world_model"))] == [episodes[2].id]
    assert store.query(TrajectoryQuery(role="reflector")) == [] and store.count(TrajectoryQuery(role="nope")) == 0
    assert store.count(TrajectoryQuery(role="r\x00le")) == 1
    # combined with the other filters and paging
    assert [t.id for t in store.query(TrajectoryQuery(role="reviewer", run_id="run"))] == reviewed[::2]
    assert [t.id for t in store.query(TrajectoryQuery(role="reviewer", success=False))] == reviewed[1:]
    assert [t.id for t in store.query(TrajectoryQuery(role="reviewer", round=1))] == [episodes[5].id]
    assert [t.id for t in store.query(TrajectoryQuery(role="reviewer", limit=1, offset=1))] == [reviewed[1]]
    assert store.count(TrajectoryQuery(role="reviewer", limit=1, offset=1)) == 3
    got = store.query(TrajectoryQuery(role="refiner"))
    assert got == [episodes[1]]  # the whole episode, every step, not only the matching ones

    # summaries: the same trajectories without their steps, each step's role in order
    for q in (TrajectoryQuery(), TrajectoryQuery(role="reviewer", limit=2, offset=1), TrajectoryQuery(run_id="none")):
        rows = store.summaries(q)
        full = store.query(q)
        assert [r.trajectory for r in rows] == [t.model_copy(update={"steps": ()}) for t in full]
        assert [r.roles for r in rows] == [tuple(step.role for step in t.steps) for t in full]
    assert store.summaries(TrajectoryQuery(role="refiner"))[0].roles == ("solver", "reviewer", "refiner", "reviewer")


def test_get_by_full_id_or_unique_prefix(store: TrajectoryStore) -> None:
    a, b, c = (rich_trajectory(id=i) for i in ("abcdef01" + "0" * 24, "abcdef02" + "0" * 24, "123456" + "9" * 26))
    for t in (a, b, c):
        store.append(t)
    assert store.get(a.id) == a
    assert store.get("abcdef01") == a
    assert store.get("123456") == c  # six characters are enough
    assert store.get("12345") is None  # five are not
    assert store.get("abcdef") is None  # ambiguous
    assert store.get("abcdef03") is None
    assert store.get("") is None
    assert store.get("%") is None and store.get("abcde_") is None  # no wildcards


def test_duplicate_id_is_refused(store: TrajectoryStore) -> None:
    t = rich_trajectory()
    store.append(t)
    with pytest.raises(StoreError, match=rf"trajectory {t.id} is already in the store"):
        store.append(t.model_copy(update={"reward": 0.0, "steps": t.steps[:1]}))
    assert store.get(t.id) == t  # the first one is untouched
    assert store.count() == 1
    other = rich_trajectory(id="0" * 32)
    store.append(other)  # the store is still usable
    assert store.query() == [t, other]


def test_runs_count_episodes_and_successes(store: TrajectoryStore) -> None:
    store.put_run(RunInfo(id="r-old", created_at=100.0, kind="eval", config={"lr": 1e-4, "suites": ["humaneval"]}))
    store.put_run(RunInfo(id="r-new", created_at=200.0))
    store.put_run(RunInfo(id="r-empty", created_at=150.0))
    for i, success in enumerate([True, False, True]):
        store.append(sample_trajectory(run_id="r-new", success=success, seed=i))
    store.append(sample_trajectory(run_id="r-old", success=False, seed=10))
    store.append(sample_trajectory(run_id="r-unregistered", success=True, seed=11))

    summaries = store.runs()
    assert [s.run.id for s in summaries] == ["r-unregistered", "r-new", "r-empty", "r-old"]  # newest first
    assert {s.run.id: (s.episodes, s.successes) for s in summaries} == {
        "r-unregistered": (1, 1),
        "r-new": (3, 2),
        "r-empty": (0, 0),
        "r-old": (1, 0),
    }
    assert summaries[-1].run == RunInfo(
        id="r-old", created_at=100.0, kind="eval", config={"lr": 1e-4, "suites": ["humaneval"]}
    )

    store.put_run(RunInfo(id="r-old", created_at=100.0, kind="rollout"))  # replaces, no duplicate
    assert [s.run.kind for s in store.runs() if s.run.id == "r-old"] == ["rollout"]
    assert len(store.runs()) == 4
    found = store.get_run("r-ne")
    assert found is not None and found.run.id == "r-new"


# --- export -------------------------------------------------------------------------------------


def test_export_jsonl_and_dataset(store: TrajectoryStore, tmp_path: Path) -> None:
    kept = [rich_trajectory(run_id="keep", id=f"{i:032x}", success=i % 2 == 0) for i in range(5)]
    for t in [*kept, sample_trajectory(run_id="other")]:
        store.append(t)
    q = TrajectoryQuery(run_id="keep")

    path = tmp_path / "out" / "keep.jsonl"
    assert store.export_jsonl(path, q) == 5
    assert [Trajectory.model_validate_json(line) for line in path.read_text().splitlines()] == kept

    ds = store.to_dataset(q)
    assert len(ds) == 5
    assert ds["id"] == [t.id for t in kept]
    assert ds["success"] == [True, False, True, False, True]
    assert ds["n_steps"] == [3] * 5
    assert ds["suite"] == ["humaneval"] * 5
    assert [Trajectory.model_validate(json.loads(row)) for row in ds["trajectory"]] == kept
    assert len(store.to_dataset(TrajectoryQuery(run_id="missing"))) == 0


# --- concurrency and crashes --------------------------------------------------------------------


def test_concurrent_threads_append_every_episode_once(store: TrajectoryStore) -> None:
    episodes = [sample_trajectory(run_id="threads", n_steps=4, seed=i) for i in range(64)]
    start = threading.Barrier(16)
    errors: list[BaseException] = []

    def writer(chunk: list[Trajectory]) -> None:
        start.wait()
        try:
            for t in chunk:
                store.append(t)
                store.count(TrajectoryQuery(run_id="threads"))  # readers run alongside writers
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(episodes[i::16],)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    stored = store.query(TrajectoryQuery(run_id="threads"))
    assert len(stored) == len({t.id for t in stored}) == 64
    assert sorted(stored, key=lambda t: t.id) == sorted(episodes, key=lambda t: t.id)


async def test_concurrent_appends_through_asyncio_to_thread(store: TrajectoryStore) -> None:
    episodes = [sample_trajectory(run_id="async", n_steps=2, seed=100 + i) for i in range(24)]
    await asyncio.gather(*(asyncio.to_thread(store.append, t) for t in episodes))
    stored = await asyncio.to_thread(store.query, TrajectoryQuery(run_id="async"))
    assert {t.id: t for t in stored} == {t.id: t for t in episodes}


def _append_from_process(url: str, worker: int, n: int, start: Any) -> None:
    start.wait()
    with open_store(url) as store:  # every process creates or checks the schema at the same time
        for i in range(n):
            store.append(sample_trajectory(run_id="procs", n_steps=3, seed=1000 * worker + i))


def test_concurrent_processes_append_every_episode_once(store_url: str) -> None:
    workers, per_worker = 4, 12
    start = SPAWN.Barrier(workers)
    procs = [SPAWN.Process(target=_append_from_process, args=(store_url, w, per_worker, start)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * workers
    expected = {
        t.id: t
        for t in (
            sample_trajectory(run_id="procs", n_steps=3, seed=1000 * w + i)
            for w in range(workers)
            for i in range(per_worker)
        )
    }
    with open_store(store_url) as store:
        stored = store.query(TrajectoryQuery(run_id="procs"))
        assert len(stored) == len({t.id for t in stored}) == workers * per_worker
        assert {t.id: t for t in stored} == expected


def _append_and_die(url: str, trajectory_json: str, marker: str, how: str) -> None:
    from memory import _rows

    real_step_rows = _rows.step_rows

    def step_rows_then_die(t: Trajectory, d: _rows.Dialect) -> Any:
        for i, row in enumerate(real_step_rows(t, d)):
            if i == 3:  # the trajectory row and three step rows went to the database, uncommitted
                Path(marker).touch()
                if how == "exit":
                    os._exit(3)
                time.sleep(120)  # wait for SIGKILL
            yield row

    _rows.step_rows = step_rows_then_die
    store = open_store(url)
    store.append(Trajectory.model_validate_json(trajectory_json))
    os._exit(4)  # not reached


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_writer_dying_mid_episode_leaves_no_partial_episode(store: TrajectoryStore, tmp_path: Path, how: str) -> None:
    before = sample_trajectory(run_id="crash", seed=1)
    store.append(before)
    victim = sample_trajectory(run_id="crash", n_steps=6, seed=2)
    marker = tmp_path / "inside-the-transaction"
    proc = SPAWN.Process(target=_append_and_die, args=(store.url, victim.model_dump_json(), str(marker), how))
    proc.start()
    if how == "kill":
        deadline = time.monotonic() + 30
        while not marker.exists() and proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _write_transaction_open(store.url)  # killed inside it, not before or after
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
    proc.join(30)
    assert marker.exists()
    assert proc.exitcode == (3 if how == "exit" else -signal.SIGKILL)

    with open_store(store.url) as fresh:
        assert fresh.get(victim.id) is None
        assert fresh.query(TrajectoryQuery(run_id="crash")) == [before]
        fresh.append(victim)  # no row of the dead attempt is left (it would collide), no lock is held
        assert fresh.get(victim.id) == victim
    third = sample_trajectory(run_id="crash", seed=3)
    store.append(third)  # the instance opened before the crash works too
    assert store.query(TrajectoryQuery(run_id="crash")) == [before, victim, third]


# --- lifecycle and schema -----------------------------------------------------------------------


def test_closed_store_refuses_calls(store: TrajectoryStore) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.count()
    store.close()  # closing twice is harmless


def test_newer_schema_is_refused(store: TrajectoryStore) -> None:
    store.append(rich_trajectory())
    store.close()
    _execute_raw(store.url, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=r"newer Autodidact \(store schema 99, this release reads up to 2\)"):
        open_store(store.url)


def test_unreadable_row_is_a_clear_error(store: TrajectoryStore) -> None:
    t = rich_trajectory()
    store.append(t)
    _execute_raw(store.url, """UPDATE trajectories SET data = '{"written_by": "someone else"}'""")
    with pytest.raises(StoreError, match=rf"trajectory {t.id} in the store cannot be read back as a Trajectory"):
        store.query()


def test_importing_memory_does_not_import_backends() -> None:
    code = "import sys, memory; assert not {'psycopg', 'memory.sqlite', 'memory.postgres'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- backend-specific: errors say what is wrong and what to do ----------------------------------


def test_unreachable_postgres_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens once the socket closes
    with pytest.raises(
        StoreError,
        match=rf"cannot connect to PostgreSQL at 127\.0\.0\.1:{port}: Connection refused; is the server running\?",
    ) as e:
        open_store(f"postgresql://alice:s3cret-pw@127.0.0.1:{port}/autodidact")
    assert "s3cret-pw" not in str(e.value)


@pytest.mark.pg
def test_missing_postgres_database_is_a_clear_error(postgres_server: str) -> None:
    url = postgres_server.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(
        StoreError, match=r'database "no_such_db" does not exist; check the user, password and database'
    ):
        open_store(url)


def test_invalid_postgres_url_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="invalid PostgreSQL URL"):
        open_store("postgresql://u:pw@127.0.0.1:5432/db?no_such_option=1")


def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(StoreError, match=rf"SQLite store '{path}': file is not a database; .*not a SQLite database"):
        open_store(str(path))
    assert path.read_bytes() == b"these are my notes, not a database\n" * 200  # left untouched


def test_sqlite_lock_held_too_long_is_a_clear_error(tmp_path: Path) -> None:
    path = str(tmp_path / "locked.db")
    store = SQLiteTrajectoryStore(path, busy_timeout_s=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer that does not let go
    t = rich_trajectory()
    with pytest.raises(StoreError, match=r"database is locked; .*busy timeout \(0\.2 s\)"):
        store.append(t)
    assert store.get(t.id) is None  # reads are not blocked by a writer (WAL)
    other.execute("ROLLBACK")
    other.close()
    store.append(t)
    assert store.get(t.id) == t
    store.close()


def test_sqlite_file_in_new_directories_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.db"
    with SQLiteTrajectoryStore(str(path)) as store:
        store.append(rich_trajectory())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_sqlite_in_memory_is_shared_by_threads() -> None:
    with SQLiteTrajectoryStore(":memory:") as store:
        episodes = [sample_trajectory(run_id="mem", seed=i) for i in range(16)]
        threads = [threading.Thread(target=store.append, args=(t,)) for t in episodes]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert sorted(store.query(), key=lambda t: t.id) == sorted(episodes, key=lambda t: t.id)
