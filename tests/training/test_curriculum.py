"""The self-evolving curriculum (training.curriculum, agents.roles.task_writer): parsing written
tasks, checking them in the real sandbox, the filters in order, and the critic's estimates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents.llm.hf_local import TransformersChatModel
from agents.roles.task_writer import FeasibilityJudge, TaskWriter
from autodidact import registry
from autodidact.types import Task
from environments.tasks import load_suite
from memory.base import TrajectoryStore
from tests.agents.scripted import ScriptedModel
from training.curriculum import failed_tasks, task_row, uncheckable, write_and_check

from .test_sft import answer, episode

WRITTEN = (
    "Task: Write a Python function `times_two(n)` that returns twice `n`.\n"
    "Solution:\n```python\ndef times_two(n):\n    return 2 * n\n```\n"
    "Tests:\nassert times_two(2) == 4\nassert times_two(0) == 0\nassert times_two(-3) == -6\n"
)


def written(
    name: str = "times_two", body: str = "2 * n", tests: str = "assert {n}(2) == 4\nassert {n}(-3) == -6"
) -> str:
    return (
        f"Task: Write a Python function `{name}(n)` that returns twice `n`.\nSolution:\n"
        f"```python\ndef {name}(n):\n    return {body}\n```\nTests:\n{tests.format(n=name)}\n"
    )


def test_task_writer_parses_the_three_parts_and_names_what_is_missing() -> None:
    out = TaskWriter().parse(WRITTEN).output
    assert out is not None and out.entry_point == "times_two" and len(out.tests) == 3
    assert out.prompt == "Write a Python function `times_two(n)` that returns twice `n`."
    assert out.solution == "def times_two(n):\n    return 2 * n\n"
    assert "def" in (TaskWriter().parse("Task: something\nSolution: no code").error or "")
    no_tests = TaskWriter().parse(WRITTEN.split("Tests:")[0] + "Tests:\nassert other(1) == 2")
    assert no_tests.output is None and "times_two" in (no_tests.error or "")
    assert FeasibilityJudge().parse("Yes, it is.").output.yes is True  # type: ignore[union-attr]


def test_task_row_is_a_task_file_row_with_a_check_function() -> None:
    row = task_row(TaskWriter().parse(WRITTEN).output, 2)  # type: ignore[arg-type]
    assert row["id"].startswith("r2-times_two-") and row["split"] == "train"
    assert row["test"] == (
        "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(0) == 0\n    assert candidate(-3) == -6\n"
    )
    assert row["visible_tests"] == ["assert times_two(2) == 4"]
    assert task_row(TaskWriter().parse(WRITTEN).output, 2) == row  # the id is the content's  # type: ignore[arg-type]


def test_failed_tasks_are_the_least_solved_first(store: TrajectoryStore) -> None:
    for task, outcomes in (("a", [True, True]), ("b", [False, False]), ("c", [True, False]), ("d", [False])):
        for i, ok in enumerate(outcomes):
            store.append(episode("r", task, success=ok, id=f"{task}{i}"))
    store.append(episode("r", "e", success=False, error="sandbox crashed", id="e0"))
    got = failed_tasks(store.query(), 10)
    assert [t.id for t in got] == ["bundled/b", "bundled/d", "bundled/c"]
    assert [t.id for t in failed_tasks(store.query(), 1)] == ["bundled/b"]


async def test_a_task_is_checkable_only_if_its_solution_passes_and_a_stub_fails() -> None:
    sandbox = registry.make("sandbox", "process")
    row = task_row(TaskWriter().parse(WRITTEN).output, 1)  # type: ignore[arg-type]
    assert await uncheckable(row, sandbox) is None
    wrong = {**row, "solution": "def times_two(n):\n    return n + 2\n"}  # passes times_two(2) == 4 only
    assert await uncheckable(wrong, sandbox) == "its solution fails its tests"
    lax = {**row, "test": "def check(candidate):\n    assert candidate(1) is None or True\n    assert True\n"}
    assert await uncheckable(lax, sandbox) == "its tests pass a function that returns None"
    loops = {**row, "solution": "def times_two(n):\n    while True:\n        pass\n"}
    assert await uncheckable(loops, sandbox) == "its solution fails its tests"


async def test_write_and_check_applies_each_filter_in_order() -> None:
    sandbox = registry.make("sandbox", "process")
    failed = [Task(id="x/a", suite="x", prompt="Write `a`."), Task(id="x/b", suite="x", prompt="Write `b`.")]
    script = [
        WRITTEN,  # good
        written("times_two"),  # the same name again: not new
        "I cannot do that.",  # does not parse
        written("triple", body="3 * n"),  # its solution fails its tests
        written("last"),  # the name of a suite task
        written("twice"),  # good, but the judge says NO
        "YES",  # feasibility of times_two
        "NO",  # feasibility of twice
    ]
    model = ScriptedModel(script)
    taken = {str(t.payload["entry_point"]) for t in load_suite("bundled")}
    rows, counts = await write_and_check(model, failed, 3, 1, taken, sandbox)  # type: ignore[arg-type]
    assert counts == {"written": 6, "parsed": 5, "new": 3, "checkable": 2, "feasible": 1}
    assert [r["entry_point"] for r in rows] == ["times_two"]
    assert "Failed exercise: Write `a`." in model.seen[0][-1].content
    assert "Exercise: Write a Python function `twice(n)`" in model.seen[-1][-1].content


@pytest.mark.slow
def test_critic_estimates_are_per_state_and_in_range(
    store: TrajectoryStore, embedded_model: TransformersChatModel, _isolated_home: Path
) -> None:
    from training.webrl import estimate_values

    for task in ("last", "first"):
        for k in range(3):
            store.append(episode("r", task, success=k == 0, completion=answer(task) + f"\n# {k}", id=f"{task}{k}"))
    states: list[Any] = [[{"role": "user", "content": "Write `last`."}], [{"role": "user", "content": "Write `x`."}]]
    values, metrics = estimate_values(store, ["r"], "embedded", [*states, states[0]])
    assert len(values) == 3 and all(0.0 <= v <= 1.0 for v in values)
    assert values[0] == pytest.approx(values[2])  # the same state, the same estimate
    assert metrics["critic_turns"] == 6 and metrics["critic_loss_after"] <= metrics["critic_loss_before"]
