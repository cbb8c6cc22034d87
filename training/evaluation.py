"""What ``autodidact evolve`` measures a policy on: several suites, greedy and sampled, paired.

A :class:`SuiteEval` names a suite (and split) to measure. Its evaluation is one greedy run (one
episode a task) and, with ``samples`` > 0, one sampled run (``samples`` episodes a task at
``temperature``). :func:`suite_numbers` turns the runs' episodes into what the report and the
gate use:

- ``greedy``: greedy pass@1, its 95% Wilson interval, mean reward;
- ``sampled``: sampled pass@1 (the mean over tasks of the share of a task's samples that pass),
  pass@k (the unbiased estimator, k = ``samples``), mean reward, and the two-attempt numbers
  below over the sampled episodes (k times the greedy run's, so finer);
- ``two_attempts``: SCoRe's Acc@t1, Acc@t2, Δ(t1,t2), Δi→c and Δc→i of the greedy episodes
  (the first submission's outcome against the final answer's); only where episodes submit
  answers (code): a web episode has no attempts to count, and every success would read as a
  correction;
- ``tasks``: each task's greedy outcome and sampled share, so that two policies measured on the
  same suite can be compared task by task (:func:`compare`).

Example:
    >>> s = SuiteEval(name="test", split="test")
    >>> (s.suite, s.samples, s.temperature)
    (None, 4, 0.8)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autodidact.types import Step, Trajectory
from environments.code.env import SUBMIT_KINDS
from environments.tasks import SplitFilter
from training.stats import PairedDifference, mean_pass_at_k, paired_bootstrap, two_attempts, wilson

Metric = Literal["sampled", "greedy"]
METRICS: tuple[Metric, ...] = ("greedy", "sampled")


class SuiteEval(BaseModel):
    """One suite a policy is measured on, greedy and (``samples`` > 0) sampled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="its label in the report and its run ids")
    suite: str | None = Field(None, description="registered suite id or a .jsonl path (None: the run's own suite)")
    split: SplitFilter = "test"
    limit: int | None = Field(None, ge=1, description="first N tasks (with task_seed: N drawn at random)")
    task_seed: int | None = Field(None, description="draw the tasks at random with this seed; the same every round")
    samples: int = Field(4, ge=0, description="sampled episodes per task (0: greedy only)")
    temperature: float = Field(0.8, gt=0, description="of the sampled episodes")

    def run_fields(self) -> dict[str, Any]:
        """The RunConfig fields that pick this suite's tasks."""
        picked = {"split": self.split, "limit": self.limit, "task_seed": self.task_seed}
        return picked if self.suite is None else {"suite": self.suite, **picked}


def submissions(t: Trajectory) -> list[Step]:
    """The steps of an episode that submitted code and were scored."""
    return [s for s in t.steps if s.action is not None and s.action.kind in SUBMIT_KINDS and s.observation is not None]


def first_and_final(t: Trajectory) -> tuple[bool, bool]:
    """Whether an episode's first submission was right, and whether its final answer was."""
    submitted = submissions(t)
    first = bool(submitted) and submitted[0].reward >= 1.0
    return first, t.success


def suite_numbers(greedy: Sequence[Trajectory], sampled: Sequence[Trajectory] = ()) -> dict[str, Any]:
    """The numbers of one suite's evaluation (see the module docstring)."""
    n = len(greedy)
    ok = sum(t.success for t in greedy)
    tasks: dict[str, dict[str, Any]] = {t.task.id: {"greedy": int(t.success)} for t in greedy}
    out: dict[str, Any] = {
        "tasks_n": n,
        "greedy": {
            "pass_at_1": ok / n if n else 0.0,
            "successes": ok,
            "ci95": list(wilson(ok, n)),
            "mean_reward": sum(t.reward for t in greedy) / n if n else 0.0,
            "errored": sum(t.error is not None for t in greedy),
        },
    }
    attempts = any(submissions(t) for t in (*greedy, *sampled))
    if attempts:
        out["two_attempts"] = vars(two_attempts([first_and_final(t) for t in greedy]))
    if sampled:
        per_task: dict[str, list[bool]] = {}
        for t in sampled:
            per_task.setdefault(t.task.id, []).append(t.success)
        counts = [(len(v), sum(v)) for v in per_task.values()]
        k = min(len(v) for v in per_task.values())
        out["sampled"] = {
            "k": k,
            "pass_at_1": mean_pass_at_k(counts, 1),
            "pass_at_k": mean_pass_at_k(counts, k),
            "mean_reward": sum(t.reward for t in sampled) / len(sampled),
            "episodes": len(sampled),
        }
        if attempts:
            out["sampled"]["two_attempts"] = vars(two_attempts([first_and_final(t) for t in sampled]))
        for task_id, v in per_task.items():
            tasks.setdefault(task_id, {})["sampled"] = sum(v) / len(v)
    out["tasks"] = tasks
    return out


def headline(numbers: dict[str, Any], metric: Metric) -> float:
    """The suite's pass@1 by ``metric`` (sampled falls back to greedy when it was not sampled)."""
    got = numbers.get(metric) or numbers["greedy"]
    return float(got["pass_at_1"])


def compare(
    candidate: dict[str, Any], incumbent: dict[str, Any], metric: Metric, *, seed: int = 0
) -> PairedDifference | None:
    """Candidate minus incumbent on the tasks both were measured on, by ``metric``; None if none."""
    a, b = candidate["tasks"], incumbent["tasks"]
    ids = sorted(i for i in a if i in b and metric in a[i] and metric in b[i])
    if not ids:
        return None
    return paired_bootstrap([a[i][metric] for i in ids], [b[i][metric] for i in ids], seed=seed)
