"""The code environment scores like HumanEval's authors, contains bad programs, and reads task files strictly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autodidact.errors import NotRegisteredError, TaskDataError
from autodidact.types import Action, Task
from environments.code.env import CodeEnvironment
from environments.code.policies import MutantPolicy, ReferencePolicy, mutate, reference_program
from environments.evaluate import evaluate
from environments.tasks import load_suite, stable_split


async def _score(task, code: str, **kw) -> tuple[float, bool, bool, str]:  # type: ignore[no-untyped-def]
    env = CodeEnvironment(**kw)
    await env.reset(task)
    r = await env.step(Action(kind="code", text=code))
    return r.reward, r.terminated, r.truncated, r.observation.text


async def test_every_humaneval_reference_passes_in_the_sandbox_and_every_mutant_fails() -> None:
    tasks = load_suite("humaneval")
    assert len(tasks) == 164
    passed = await evaluate("code", tasks, ReferencePolicy(), concurrency=2, progress=False)
    assert [o.task_id for o in passed if not o.success] == []
    mutants = await evaluate("code", tasks, MutantPolicy(), concurrency=2, progress=False)
    survivors = [(o.task_id, o.detail) for o in mutants if o.success]
    assert len(survivors) <= 3, survivors  # an equivalent mutant may survive; a weak checker would show more
    reward, terminated, truncated, text = await _score(tasks[0], "    return False\n", feedback="hidden")
    assert (terminated, truncated) == (False, True) and 0.0 < reward < 1.0 and "AssertionError" in text


async def test_bundled_references_pass_and_return_none_mutants_fail() -> None:
    tasks = load_suite("bundled")
    outcomes = await evaluate("code", tasks, ReferencePolicy(), concurrency=2, progress=False)
    assert [o.task_id for o in outcomes if not o.success] == []
    for task in tasks[:40]:
        mutant = mutate(reference_program(task), task.payload["entry_point"], "return_none")
        assert mutant is not None
        reward, _, _, _ = await _score(task, mutant)
        assert reward < 1.0, task.id


def test_mutations_change_the_program() -> None:
    program = "def f(xs):\n    n = 0\n    for x in xs:\n        if x > 2:\n            n += x * 2\n    return n"
    assert "return None" in mutate(program, "f", "return_none")  # type: ignore[operator]
    assert "n = 1" in mutate(program, "f", "off_by_one")  # type: ignore[operator]
    assert "x <= 2" in mutate(program, "f", "flip_compare")  # type: ignore[operator]
    assert "n -= x * 2" in mutate(program, "f", "swap_arith")  # type: ignore[operator]
    assert mutate(program, "g", "return_none") is None


async def test_multi_turn_run_test_then_submit_with_per_test_outcomes() -> None:
    task = Task(
        id="t/abs",
        suite="t",
        prompt="Write `absolute(x)`.",
        payload={
            "entry_point": "absolute",
            "test": "def check(candidate):\n    assert candidate(3) == 3\n    assert candidate(0) == 0\n"
            "    assert candidate(-2) == 2\n    assert candidate(-7) == 7\n",
            "visible_tests": ["assert absolute(5) == 5"],
        },
    )
    env = CodeEnvironment(max_attempts=2, max_steps=5, feedback="hidden")
    obs = await env.reset(task)
    assert obs.data["visible_tests"] == ["assert absolute(5) == 5"]
    wrong = "def absolute(x):\n    return x"
    ran = await env.step(Action(kind="run", text=wrong + "\nprint(absolute(-4))"))
    assert ran.reward == 0.0 and "-4" in ran.observation.text and not (ran.terminated or ran.truncated)
    tested = await env.step(Action(kind="test", text=wrong))
    assert (
        tested.reward == 0.0
        and tested.info["outcomes"] == [True]
        and tested.observation.text == "All 1 visible tests passed."
    )
    first = await env.step(Action(kind="submit", text=wrong))
    assert first.reward == 0.5 and first.info["outcomes"] == [True, True, False, False]
    assert first.info["passed"] == 2 and first.info["total"] == 4 and not first.info["success"]
    assert not first.terminated and not first.truncated and "2/4 hidden tests passed" in first.observation.text
    second = await env.step(Action(kind="submit", text="def absolute(x):\n    return -x if x < 0 else x"))
    assert second.reward == 1.0 and second.terminated and second.info["success"]


def _abs_task(visible: list[str]) -> Task:
    hidden = "def check(candidate):\n    assert candidate(0) == 0\n    assert candidate(-987654) == 987654\n"
    payload = {"entry_point": "absolute", "test": hidden, "visible_tests": visible}
    return Task(id="t/abs2", suite="t", prompt="Write `absolute(x)`.", payload=payload)


async def test_visible_feedback_never_shows_the_hidden_tests() -> None:
    """The default: a submission is scored by the hidden tests but answered with the visible ones;
    the episode goes on only while a visible test fails, and the last attempt is final."""
    env = CodeEnvironment(max_attempts=2)
    seen = []
    await env.reset(_abs_task(["assert absolute(-3) == 3"]))
    first = await env.step(Action(kind="submit", text="def absolute(x):\n    return x"))
    seen.append(first.observation.text)
    assert first.reward == 0.5 and not first.info["success"] and not first.info["visible_ok"]
    assert not first.terminated and not first.truncated and "0/1 visible tests passed" in first.observation.text
    second = await env.step(Action(kind="submit", text="def absolute(x):\n    return -x if x < 0 else x"))
    seen.append(second.observation.text)
    assert second.reward == 1.0 and second.terminated and second.info["final"]
    assert second.observation.text == "All 1 visible tests passed."

    # a wrong answer that passes the visible tests is final at once: no hint that it is wrong
    await env.reset(_abs_task(["assert absolute(-3) == 3"]))
    fooled = await env.step(Action(kind="submit", text="def absolute(x):\n    return 3 if x == -3 else x"))
    seen.append(fooled.observation.text)
    assert fooled.terminated and fooled.reward == 0.5 and fooled.observation.text == "All 1 visible tests passed."

    # the last attempt is final whatever the visible tests say
    env1 = CodeEnvironment(max_attempts=1)
    await env1.reset(_abs_task(["assert absolute(-3) == 3"]))
    last = await env1.step(Action(kind="submit", text="def absolute(x):\n    return x"))
    seen.append(last.observation.text)
    assert last.terminated and not last.truncated and last.reward == 0.5

    # no visible tests: the code's own run is the feedback
    await env.reset(_abs_task([]))
    crashed = await env.step(Action(kind="submit", text="def absolute(x):\n    return x +"))
    seen.append(crashed.observation.text)
    assert (
        not crashed.terminated
        and "SyntaxError" in crashed.observation.text
        and "no visible tests" in crashed.observation.text
    )
    ran = await env.step(Action(kind="submit", text="def absolute(x):\n    return x"))
    seen.append(ran.observation.text)
    assert ran.terminated and ran.reward == 0.5
    for text in seen:
        assert "987654" not in text and "hidden" not in text.lower(), text


async def test_step_budget_truncates_and_unknown_actions_are_feedback() -> None:
    env = CodeEnvironment(max_attempts=3, max_steps=2)
    await env.reset(load_suite("bundled")[0])
    odd = await env.step(Action(kind="dance", text="x"))
    assert "Unknown action" in odd.observation.text and not odd.truncated
    last = await env.step(Action(kind="run", text="print(1)"))
    assert last.truncated and not last.terminated


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
    env = CodeEnvironment(max_attempts=2, feedback="hidden")
    await env.reset(load_suite("bundled")[0])
    first = await env.step(Action(kind="code", text=""))
    assert "No code" in first.observation.text and not first.truncated
    second = await env.step(Action(kind="code", text="def last(xs):\n    return None"))
    assert second.truncated and not second.terminated


def test_suites_and_splits() -> None:
    bundled = load_suite("bundled")
    assert len(bundled) >= 150 and len({t.id for t in bundled}) == len(bundled)
    assert {t.split for t in bundled} == {"train", "val", "test", "hard"}
    assert 0.15 < len(load_suite("bundled", split="test")) / len(bundled) < 0.3
    assert len(load_suite("bundled", split="hard")) == 48
    assert all(t.payload["solution"] and t.payload["visible_tests"] for t in bundled)
    assert "For example:" in bundled[0].prompt
    assert load_suite("humaneval", limit=3)[2].id == "humaneval/2"
    held_out = load_suite("humaneval", split="test")
    assert 15 < len(held_out) < 50
    assert [t.id for t in held_out[:3]] == ["humaneval/1", "humaneval/7", "humaneval/11"]  # stable_split's


def test_stable_split_depends_on_the_id_alone() -> None:
    # fixed expectations: every machine and process must agree (a salted hash() would not)
    ids = [f"humaneval/{i}" for i in range(16)]
    assert [i for i, task_id in enumerate(ids) if stable_split(task_id) == "test"] == [1, 7, 11]
    assert (stable_split("humaneval/8"), stable_split("humaneval/8", test_fraction=0.25)) == ("train", "test")
    code = "from environments.tasks import stable_split as s; print(*(s(f'humaneval/{i}') for i in range(64)))"
    runs = {
        tuple(
            subprocess.run(
                [sys.executable, "-c", code],
                env={**os.environ, "PYTHONHASHSEED": seed},
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout.split()
        )
        for seed in ("1", "2")
    }
    assert runs == {tuple(stable_split(f"humaneval/{i}") for i in range(64))}


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
    bad.write_text('{"id": "a", "prompt": "p", "entry_point": "f", "test": "t", "visible_tests": "assert f()"}\n')
    with pytest.raises(TaskDataError, match=r":1: visible_tests must be a list"):
        load_suite(str(bad))
    with pytest.raises(NotRegisteredError, match=r"known: .*bundled, .*humaneval"):
        load_suite("nope")
