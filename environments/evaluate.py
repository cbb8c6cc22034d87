"""Run a scripted policy over a suite: proof that tasks are solvable and checkers are right.

A scripted policy (registered under the ``policy`` kind as ``<env>:<name>``, e.g.
``code:reference``) acts without a model. :func:`evaluate` runs one episode per task through
the registered environment, ``concurrency`` at a time, and reports per task whether the
episode succeeded and, when it did not, why. ``autodidact eval`` is its command line.

Example:
    >>> outcomes = await evaluate("code", load_suite("humaneval"), ReferencePolicy())  # doctest: +SKIP
    >>> sum(o.success for o in outcomes)  # doctest: +SKIP
    164
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from autodidact import registry
from autodidact.types import Action, Observation, Task


class ScriptedPolicy(Protocol):
    """Chooses actions without a model."""

    name: str
    expect_success: bool  # False for policies meant to fail (mutants): success then means a weak checker

    async def act(self, task: Task, observation: Observation) -> Action: ...


@dataclass(frozen=True)
class EpisodeOutcome:
    """How one scripted episode ended."""

    task_id: str
    success: bool
    reward: float
    steps: int
    detail: str | None  # why it did not succeed (or what the policy did, e.g. the mutation)
    duration_s: float


async def evaluate(
    env_id: str,
    tasks: Sequence[Task],
    policy: ScriptedPolicy,
    *,
    concurrency: int = 2,
    max_steps: int = 50,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[EpisodeOutcome]:
    """Run ``policy`` once on every task; outcomes in task order. Episode faults are outcomes, not raises.

    Code episodes show the hidden tests' verdict (``feedback="hidden"``, unless ``env_kwargs``
    says otherwise): this checks the checkers, so a failure's detail is why the hidden tests
    failed, and nothing runs twice."""
    gate = asyncio.Semaphore(concurrency)
    env_kwargs = {**({"feedback": "hidden"} if env_id == "code" else {}), **(env_kwargs or {})}

    async def one(task: Task) -> EpisodeOutcome:
        async with gate:
            outcome = await _episode(env_id, task, policy, max_steps, env_kwargs)
        if bar is not None:
            bar.advance(bar_task)
        return outcome

    bar = None
    if progress:
        from rich.progress import Progress, TextColumn

        # the default columns, but the description (ids) printed as it is, not parsed as markup
        columns = (
            TextColumn("{task.description}", style="progress.description", markup=False),
            *Progress.get_default_columns()[1:],
        )
        bar = Progress(*columns, transient=True)
        bar_task = bar.add_task(f"{policy.name} on {env_id}", total=len(tasks))
        bar.start()
    try:
        return list(await asyncio.gather(*(one(t) for t in tasks)))
    finally:
        if bar is not None:
            bar.stop()


async def _episode(
    env_id: str, task: Task, policy: ScriptedPolicy, max_steps: int, env_kwargs: dict[str, Any]
) -> EpisodeOutcome:
    start = time.perf_counter()
    env = registry.make("environment", env_id, **env_kwargs)
    reward, steps, detail, success = 0.0, 0, None, False
    action: Action | None = None
    why = ""
    try:
        observation = await env.reset(task)
        while steps < max_steps:
            action = await policy.act(task, observation)
            result = await env.step(action)
            steps += 1
            observation, reward = result.observation, result.reward
            why = str(result.info.get("error") or result.info.get("detail") or "")
            if result.terminated or result.truncated:
                success = result.terminated and reward >= 1.0
                break
        if not success:  # what a failure's reader needs: how far it got, what it did last, why, the page
            said = str(action.args or action.text)[:160] if action is not None else ""
            last = f"last action {action.kind}{' ' + said if said else ''}" if action is not None else "no action"
            page = observation.text.strip()[:400] or "no reward"
            detail = f"after {steps} step(s), {last}{f' ({why})' if why else ''}: {page}"
        if action is not None and "mutation" in action.args:
            detail = f"mutation {action.args['mutation']}: {detail or 'survived'}"
    except Exception as e:  # an environment fault is this task's outcome, not the run's end
        detail = f"{type(e).__name__}: {e}"
    finally:
        await env.close()
    return EpisodeOutcome(task.id, success, reward, steps, detail, time.perf_counter() - start)
