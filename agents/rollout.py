"""Running many episodes at once and storing every one of them.

:func:`run_rollout` takes a :class:`RunConfig`, a model and a store; it runs each task of the
suite (``samples_per_task`` times) through the chosen graph with at most ``concurrency``
episodes in flight, each under ``episode_timeout_s``, and appends every finished episode to
the store as soon as it ends (one transaction per episode). Nothing an episode does —
a backend fault, a timeout, a crash in a node — stops the run: the episode is recorded with
its error and the run goes on. A rich progress bar shows the live success rate.

Example:
    >>> cfg = RunConfig(suite="bundled", limit=4)
    >>> result = asyncio.run(run_rollout(cfg, model, store))  # doctest: +SKIP
    >>> result.success_rate  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.graphs.solver import DEFAULT_SAMPLING, SolverContext
from agents.llm.base import ChatModel
from autodidact import registry
from autodidact.types import PolicyRef, SamplingParams, Step, Task, Trajectory, new_id
from environments.tasks import SplitFilter, load_suite
from memory.base import RunInfo, TrajectoryStore

WEB_MAX_STEPS = 15
WEB_SAMPLING = SamplingParams(temperature=0.0, max_tokens=64, stop=("\n\n",))


class RunConfig(BaseModel):
    """What to run: environment, suite, graph, model, sampling and how many at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str = Field("code", description="registered environment id")
    suite: str = Field("bundled", description="registered suite id or a .jsonl path")
    split: SplitFilter = Field("all", description="train, test (held out) or all")
    limit: int | None = Field(None, ge=1, description="first N tasks of the suite")
    graph: str = Field("solver", description="registered graph id")
    model: str = Field("embedded", description="embedded, a checkpoint name, a path, an HF id or a server URL")
    sampling: SamplingParams = DEFAULT_SAMPLING
    samples_per_task: int = Field(1, ge=1)
    max_steps: int = Field(1, ge=1, description="model calls per episode: attempts for code [1], actions for web [15]")
    concurrency: int = Field(8, ge=1, description="episodes in flight at most")
    episode_timeout_s: float = Field(
        600.0, gt=0, description="a whole episode; past it the episode is recorded as timed out"
    )
    step_timeout_s: float = Field(
        300.0, gt=0, description="one model call or environment step; past it the step is recorded with the error"
    )
    round: int = Field(0, ge=0, description="self-improvement round this run belongs to")
    run_id: str | None = Field(None, description="default: a fresh id")

    @model_validator(mode="before")
    @classmethod
    def _environment_defaults(cls, data: Any) -> Any:
        """Web episodes take many short answers: more steps, short completions, unless set."""
        if isinstance(data, dict) and data.get("env") == "web":
            data = dict(data)
            data.setdefault("suite", "miniwob")
            data.setdefault("max_steps", WEB_MAX_STEPS)
            given = data.get("sampling") or {}
            if isinstance(given, dict):
                data["sampling"] = {**WEB_SAMPLING.model_dump(), **given}
        return data


@dataclass
class RunResult:
    """A finished run: its id and every trajectory it stored."""

    run_id: str
    trajectories: list[Trajectory] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def success_rate(self) -> float:
        return sum(t.success for t in self.trajectories) / max(1, len(self.trajectories))


async def run_episode(task: Task, cfg: RunConfig, model: ChatModel, graph: Any, run_id: str) -> Trajectory:
    """Run one episode and return its trajectory; never raises for the episode's own faults."""
    env = registry.make("environment", cfg.env, max_attempts=cfg.max_steps)
    context = getattr(graph, "context_schema", None) or SolverContext  # each graph's own context type
    ctx = context(
        model=model, env=env, sampling=cfg.sampling, max_steps=cfg.max_steps, step_timeout_s=cfg.step_timeout_s
    )
    latest: dict[str, Any] = {}
    error: str | None = None
    start = time.time()

    async def drive() -> None:
        async for state in graph.astream({"task": task}, context=ctx, stream_mode="values"):
            latest.update(state)

    try:
        await asyncio.wait_for(drive(), cfg.episode_timeout_s)
    except TimeoutError:
        error = f"episode timed out after {cfg.episode_timeout_s:g} s"
    except Exception as e:  # a node crashed: record it, keep the run going
        error = f"{type(e).__name__}: {e}"
    finally:
        try:
            await env.close()
        except Exception as e:
            error = error or f"environment close failed: {e}"
    steps: list[Step] = list(latest.get("steps", []))
    error = error or latest.get("error")
    last = steps[-1] if steps else None
    reward = last.reward if last else 0.0
    return Trajectory(
        run_id=run_id,
        task=task,
        env_id=cfg.env,
        policy=PolicyRef(
            model=cfg.model, backend=model.name, adapter=getattr(model, "adapter", None), sampling=cfg.sampling
        ),
        steps=tuple(steps),
        reward=reward,
        success=bool(last and last.terminated and reward >= 1.0 and error is None),
        round=cfg.round,
        started_at=start,
        duration_s=time.time() - start,
        error=error,
    )


async def run_rollout(
    cfg: RunConfig,
    model: ChatModel,
    store: TrajectoryStore,
    *,
    tasks: Sequence[Task] | None = None,
    progress: bool = True,
) -> RunResult:
    """Run every task of ``cfg`` (or the given ``tasks``) and store each episode as it ends."""
    tasks = list(tasks) if tasks is not None else load_suite(cfg.suite, split=cfg.split, limit=cfg.limit)
    run_id = cfg.run_id or new_id()[:12]
    await asyncio.to_thread(store.put_run, RunInfo(id=run_id, config=cfg.model_dump(mode="json")))
    graph = registry.make("graph", cfg.graph)
    jobs = [t for t in tasks for _ in range(cfg.samples_per_task)]
    result = RunResult(run_id=run_id)
    gate = asyncio.Semaphore(cfg.concurrency)
    start = time.perf_counter()

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("success {task.fields[rate]}"),
        TimeElapsedColumn(),
        disable=not progress,
    )
    with bar:
        bar_id = bar.add_task(f"{cfg.suite} · {cfg.model}", total=len(jobs), rate="-")

        async def one(task: Task) -> None:
            async with gate:
                traj = await run_episode(task, cfg, model, graph, run_id)
            await asyncio.to_thread(store.append, traj)
            result.trajectories.append(traj)
            ok = sum(t.success for t in result.trajectories)
            bar.update(bar_id, advance=1, rate=f"{ok}/{len(result.trajectories)} ({ok / len(result.trajectories):.0%})")

        await asyncio.gather(*(one(t) for t in jobs))
    result.seconds = time.perf_counter() - start
    return result
