"""The self-evolving curriculum: new training tasks written by the policy from the ones it failed.

After WebRL's curriculum, for code tasks. In a round of ``autodidact evolve`` with
``curriculum.enabled``, after collection:

1. **Failed tasks.** The round's collection tasks that had a failed episode, the least solved
   first, at most ``per_round``.
2. **Write.** The incumbent policy, as the ``task_writer`` role, writes ``samples`` new tasks
   from each: a one-sentence prompt naming a function, a solution and assert tests.
3. **Check.** A task is kept only if it can be checked: its solution passes every one of its
   tests (at least two) in the sandbox, and a function that returns ``None`` fails one of them
   (tests that pass anything check nothing). A task whose function has the name of a suite
   task (held-out ones included) or of another written task is dropped.
4. **Feasibility.** The policy, as the ``feasibility`` role, must answer ``YES``.
5. **Critic.** Value heads fitted on the round's collection (:func:`training.webrl.estimate_values`,
   features of the incumbent) estimate each task's success from its first prompt; a task is
   kept when the estimate is in ``value_band`` ([0.05, 0.75]): neither hopeless nor solved.
6. The kept tasks are written to ``curriculum-r<k>.jsonl`` in the evolve run's dir (a task
   file like any other, ``split: train``) and collected like the training split; their episodes
   train the round's checkpoints with the rest.

Web environments get no written tasks: a goal written by the model has no programmatic checker
on the bundled sites, so every one would be dropped; the stage says so.

Every count (written, parsed, checkable, feasible, in band, kept) and each kept task's value
go into the stage's result and the report.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autodidact.errors import NothingToTrainError
from autodidact.types import Observation, Task

if TYPE_CHECKING:
    from agents.llm.base import ChatModel
    from agents.roles.task_writer import WrittenTask
    from environments.sandbox.base import Sandbox
    from training.evolve import Evolution


def failed_tasks(episodes: Sequence[Any], limit: int) -> list[Task]:
    """Tasks with at least one failed episode (no error), least solved first, then by id."""
    by_task: dict[str, list[Any]] = {}
    for t in episodes:
        if t.error is None:
            by_task.setdefault(t.task.id, []).append(t)
    rates = {tid: sum(t.success for t in ts) / len(ts) for tid, ts in by_task.items()}
    order = sorted((r, tid) for tid, r in rates.items() if r < 1.0)
    return [by_task[tid][0].task for _, tid in order[:limit]]


def task_row(written: WrittenTask, round_: int) -> dict[str, Any]:
    """A task-file row for a written task (``split: train``), its id from its content."""
    digest = hashlib.sha1(f"{written.prompt}\n{written.solution}".encode()).hexdigest()[:8]
    calls = [t.replace(f"{written.entry_point}(", "candidate(") for t in written.tests]
    return {
        "id": f"r{round_}-{written.entry_point}-{digest}",
        "prompt": written.prompt,
        "entry_point": written.entry_point,
        "solution": written.solution,
        "test": "def check(candidate):\n" + "".join(f"    {c}\n" for c in calls),
        "visible_tests": list(written.tests[:1]),
        "split": "train",
        "skill": "generated",
    }


async def uncheckable(row: dict[str, Any], sandbox: Sandbox) -> str | None:
    """Why a written task cannot be checked, or None: its solution must pass its (2+) tests and
    a function returning ``None`` must fail one."""
    from environments.code.harness import run_tests
    from environments.tasks import code_tasks_from_rows

    if len(row["test"].strip().splitlines()) < 3:
        return "fewer than 2 tests"
    try:
        [task] = code_tasks_from_rows([row], "curriculum", "written task")
        report = await run_tests(task, row["solution"], sandbox, timeout_s=5.0)
        if not report.success:
            return "its solution fails its tests"
        stub = f"def {row['entry_point']}(*args, **kwargs):\n    return None\n"
        if (await run_tests(task, stub, sandbox, timeout_s=5.0)).success:
            return "its tests pass a function that returns None"
    except Exception as e:  # a malformed test file or a sandbox fault: not checkable
        return f"{type(e).__name__}: {e}"
    return None


async def write_and_check(
    model: ChatModel,
    failed: Sequence[Task],
    samples: int,
    round_: int,
    taken: set[str],
    sandbox: Sandbox,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Write ``samples`` tasks from each failed one, keep those that parse, are new and can be
    checked, then those the feasibility judge accepts; the rows and the counts."""
    from agents.roles.task_writer import FeasibilityJudge, TaskWriter

    writer, judge = TaskWriter(), FeasibilityJudge()
    calls = await asyncio.gather(*(writer.call(model, task=t.prompt) for t in failed for _ in range(samples)))
    counts = {"written": len(calls), "parsed": 0, "new": 0, "checkable": 0, "feasible": 0}
    rows: list[dict[str, Any]] = []
    seen = set(taken)
    for call in calls:
        if call.output is None:
            continue
        counts["parsed"] += 1
        row = task_row(call.output, round_)
        if row["entry_point"] in seen:
            continue
        seen.add(row["entry_point"])
        counts["new"] += 1
        rows.append(row)
    reasons = await asyncio.gather(*(uncheckable(r, sandbox) for r in rows))
    rows = [r for r, why in zip(rows, reasons, strict=True) if why is None]
    counts["checkable"] = len(rows)
    verdicts = await asyncio.gather(*(judge.call(model, task=r["prompt"], tests="\n".join(_asserts(r))) for r in rows))
    rows = [r for r, v in zip(rows, verdicts, strict=True) if v.output is not None and v.output.yes]
    counts["feasible"] = len(rows)
    return rows, counts


def _asserts(row: dict[str, Any]) -> list[str]:
    return [
        line.strip().replace("candidate(", f"{row['entry_point']}(")
        for line in row["test"].splitlines()
        if line.strip().startswith("assert")
    ]


def evolve_curriculum(evo: Evolution, k: int, model: str, roles: dict[str, str]) -> dict[str, Any]:
    """The curriculum stage of round ``k``: write, check, filter and collect new tasks."""
    from agents.roles.solver import initial_messages
    from agents.rollout import close_shared_workers
    from autodidact import registry
    from environments.tasks import load_suite
    from training.webrl import estimate_values

    c = evo.config
    if c.env != "code":
        return {"kept": 0, "run": None, "reason": f"written {c.env} goals have no programmatic checker; none kept"}
    path = evo.dir / f"curriculum-r{k}.jsonl"
    collect_run = f"{evo.name}-r{k}-collect"
    result: dict[str, Any] = {}
    if not path.is_file():  # written once: a resumed stage collects the same tasks
        failed = failed_tasks(evo.episodes(collect_run), c.curriculum.per_round)
        taken = {str(t.payload.get("entry_point")) for t in load_suite(c.suite)}  # never a suite task's name

        async def go() -> tuple[list[dict[str, Any]], dict[str, int]]:
            async with evo.policy(model) as (chat, _):
                try:
                    sandbox = registry.make("sandbox", "process")
                    return await write_and_check(chat, failed, c.curriculum.samples, k, taken, sandbox)
                finally:
                    await close_shared_workers()

        rows, counts = asyncio.run(go())
        result.update(counts, failed_tasks=len(failed))
        if rows:
            states = [[m.model_dump() for m in initial_messages(Observation(text=r["prompt"]))] for r in rows]
            try:
                values, metrics = estimate_values(evo.store, [collect_run], model, states)
            except NothingToTrainError as e:
                return {**result, "kept": 0, "run": None, "reason": str(e)}
            low, high = c.curriculum.value_band
            for r, v in zip(rows, values, strict=True):
                r["value"] = round(v, 4)
            rows = [r for r in rows if low <= r["value"] <= high]
            result.update(in_band=len(rows), critic_mae=metrics["critic_mae"])
        _write_rows(path, rows)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    result.update(kept=len(rows), values={r["id"]: r.get("value") for r in rows}, tasks=str(path))
    if not rows:
        return {**result, "run": None}
    stage = {**{k2: v for k2, v in c.collect.items() if k2 != "limit"}, "suite": str(path), "split": "all"}
    got = evo.rollout(f"{evo.name}-r{k}-curriculum", stage, model, roles, k)
    return {**result, **got}


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)
