"""Running many episodes at once and storing every one of them.

:func:`run_rollout` takes a :class:`RunConfig`, a model and a store; it runs each task of the
suite (``samples_per_task`` times) through the chosen graph with at most ``concurrency``
episodes in flight, each under ``episode_timeout_s``, and appends every finished episode to
the store as soon as it ends (one transaction per trajectory). Nothing an episode does — a
backend fault, a timeout, a crash in a node — stops the run: the episode is recorded with
its error and the run goes on. A rich progress bar shows the live success rate.

Each episode's graph state is checkpointed after every node (LangGraph's SQLite saver, WAL,
in ``$AUTODIDACT_HOME/checkpoints.sqlite``; see :mod:`agents.checkpointer`), keyed by the
episode's id, which is derived from the run, the task and the sample number. ``run_rollout(..., resume=True)`` (``autodidact run
--resume RUN``) skips the episodes already stored and continues interrupted ones from their
last checkpoint: the environment is reset and the episode's actions replayed, then the
graph goes on from the node it had reached.

Roles other than the solver may have their own model and sampling (``roles``), and a graph's
own settings (reflexion's ``rounds``, mcts' ``simulations``…) are set in ``graph_options``.

Example:
    >>> cfg = RunConfig(suite="bundled", limit=4)
    >>> result = asyncio.run(run_rollout(cfg, model, store))  # doctest: +SKIP
    >>> result.success_rate  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.checkpointer import open_checkpointer
from agents.graphs.react import DEFAULT_SAMPLING, SolverContext, TreePath, acted, replay
from agents.llm.base import AdapterView, ChatModel, TransformersConfig, resolve_model
from agents.roles.reflector import Reflector
from autodidact import registry
from autodidact.config import home
from autodidact.errors import ConfigError, StoreError
from autodidact.types import PolicyRef, SamplingParams, Task, Trajectory, new_id
from environments.base import Environment
from environments.tasks import SplitFilter, load_suite
from memory.base import RunInfo, TrajectoryStore
from memory.reflections import Reflection, ReflectionMemory
from skills.library import Skill, SkillLibrary
from skills.use import SkillEnvironment, learn, skills_prompt, skills_used

log = logging.getLogger(__name__)
WEB_MAX_STEPS = 15
WEB_SUITES = {"web": "miniwob", "browsergym": "browsergym-miniwob"}  # web environments and their default suites
WEB_SAMPLING = SamplingParams(temperature=0.0, max_tokens=64, stop=("\n\n",))


class RoleBinding(BaseModel):
    """A role's own model and sampling (unset: the run's model, the role's default sampling)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="model spec, as for the run's model")
    sampling: dict[str, Any] = Field(default_factory=dict, description="overrides of the role's default sampling")


class ReflectionConfig(BaseModel):
    """Reflection memory for a run (see :mod:`memory.reflections`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        False,
        description="recall lessons into the solver's system prompt; write one after each failed or costly episode",
    )
    recent: int = Field(3, ge=0, description="latest lessons on the same task")
    similar: int = Field(3, ge=0, description="nearest lessons on other tasks")


class SkillConfig(BaseModel):
    """The skill library in a run (see :mod:`skills`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="offer retrieved skills to the solver; learn from solved episodes")
    top_k: int = Field(5, ge=0, description="skills retrieved per episode")
    learn: bool = Field(True, description="extract, verify and admit a skill from each successful episode")
    min_uses: int = Field(4, ge=1, description="uses before a skill may be retired")
    retire_below: float = Field(0.3, ge=0.0, le=1.0, description="success rate under which a used skill is retired")
    duplicate_at: float = Field(0.95, gt=0.0, le=1.0, description="similarity at which a candidate repeats a skill")


class RunConfig(BaseModel):
    """What to run: environment, suite, graph, model, sampling and how many at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str = Field("code", description="registered environment id")
    suite: str = Field("bundled", description="registered suite id or a .jsonl path")
    split: SplitFilter = Field("all", description="train, test (held out) or all")
    limit: int | None = Field(None, ge=1, description="first N tasks of the suite")
    task_seed: int | None = Field(None, description="draw the tasks at random with this seed instead (with limit: N)")
    graph: str = Field("react", description="registered graph id: react, reflexion, magicore, lookahead, mcts, imagine")
    graph_options: dict[str, Any] = Field(
        default_factory=dict, description="the graph's own settings, e.g. rounds (reflexion), simulations (mcts)"
    )
    model: str = Field("embedded", description="embedded, a checkpoint name, a path, an HF id or a server URL")
    sampling: SamplingParams = DEFAULT_SAMPLING
    samples_per_task: int = Field(1, ge=1)
    max_steps: int = Field(1, ge=1, description="model calls per episode: attempts for code [1], actions for web [15]")
    env_options: dict[str, Any] = Field(
        default_factory=dict,
        description="the environment's own settings, e.g. feedback=hidden (code), budget=4000 (web)",
    )
    concurrency: int = Field(8, ge=1, description="episodes in flight at most")
    episode_timeout_s: float = Field(
        600.0, gt=0, description="a whole episode; past it the episode is recorded as timed out"
    )
    step_timeout_s: float = Field(
        300.0, gt=0, description="one model call or environment step; past it the step is recorded with the error"
    )
    round: int = Field(0, ge=0, description="self-improvement round this run belongs to")
    run_id: str | None = Field(None, description="default: a fresh id")
    roles: dict[str, RoleBinding] = Field(
        default_factory=dict, description="per-role model and sampling, e.g. roles.reviewer.model=http://..."
    )
    checkpoint: bool = Field(True, description="checkpoint each episode's graph state so an interrupted run resumes")
    reflections: ReflectionConfig = ReflectionConfig()
    skills: SkillConfig = SkillConfig()

    @model_validator(mode="after")
    def _solver_is_the_run_model(self) -> RunConfig:
        if "solver" in self.roles:
            raise ValueError("roles.solver: the solver uses the run's own model and sampling; set those instead")
        return self

    @model_validator(mode="before")
    @classmethod
    def _environment_defaults(cls, data: Any) -> Any:
        """Web episodes take many short answers: more steps, short completions, unless set.
        Sampling fields given as a mapping are merged over the environment's defaults (so
        ``sampling.temperature=0.8`` keeps the code answer's stop at its closing fence)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        defaults = DEFAULT_SAMPLING
        if data.get("env") in WEB_SUITES:
            data.setdefault("suite", WEB_SUITES[data["env"]])
            data.setdefault("max_steps", WEB_MAX_STEPS)
            defaults = WEB_SAMPLING
        given = data.get("sampling") or {}
        if isinstance(given, dict):
            data["sampling"] = {**defaults.model_dump(), **given}
        return data


@dataclass
class RunResult:
    """A finished run: its id and every trajectory it stored (tree graphs store several an
    episode; ``episodes`` holds each episode's main trajectory)."""

    run_id: str
    trajectories: list[Trajectory] = field(default_factory=list)
    episodes: list[Trajectory] = field(default_factory=list)
    skipped: int = 0  # episodes already stored when resuming
    skills_learned: list[str] = field(default_factory=list)  # ids of the skills this run added to the library
    seconds: float = 0.0

    @property
    def success_rate(self) -> float:
        return sum(t.success for t in self.episodes) / max(1, len(self.episodes))


def env_options(cfg: RunConfig) -> dict[str, Any]:
    """The keyword arguments of the run's environment: its per-episode budget and ``env_options``."""
    return {"max_attempts": cfg.max_steps, **cfg.env_options}


def _check_env_options(cfg: RunConfig) -> None:
    """``env_options`` the environment does not take, or values it refuses: a ConfigError now,
    not an error in every episode."""
    import inspect

    if not cfg.env_options:
        return
    cls = registry.load("environment", cfg.env)
    params = inspect.signature(cls).parameters
    unknown = sorted(k for k in cfg.env_options if k not in params)
    if unknown:
        takes = ", ".join(k for k in params if k not in ("self", "max_attempts", "sandbox"))
        raise ConfigError(f"env_options: {cfg.env} environments take no {unknown}; they take: {takes}")
    try:
        registry.make("environment", cfg.env, **env_options(cfg))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"env_options: {e}") from e
    except Exception:  # the environment's own faults (no sandbox, ...) are each episode's to record
        pass


def episode_id(run_id: str, task: Task, sample: int) -> str:
    """The id of a run's ``sample``-th episode of ``task``: stable, so a resumed run finds it."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"autodidact:{run_id}/{task.id}/{sample}").hex


@dataclass(frozen=True)
class Bindings:
    """Models and sampling per role, built once per run from ``RunConfig.roles``."""

    models: dict[str, ChatModel] = field(default_factory=dict)
    samplings: dict[str, SamplingParams] = field(default_factory=dict)


def role_sampling(cfg: RunConfig) -> dict[str, SamplingParams]:
    """Each bound role's sampling: its overrides on top of the role's default."""
    out = {}
    for name, binding in cfg.roles.items():
        if not binding.sampling:
            continue
        base = registry.load("role", name).default_sampling if name in registry.ids("role") else SamplingParams()
        out[name] = SamplingParams.model_validate({**base.model_dump(), **binding.sampling})
    return out


def graph_context(cfg: RunConfig) -> type[SolverContext]:
    """The graph's context type, with ``graph_options`` checked against its fields."""
    graph = registry.make("graph", cfg.graph)
    context: type[SolverContext] = getattr(graph, "context_schema", None) or SolverContext
    known = {f.name for f in dataclasses.fields(context)} - {f.name for f in dataclasses.fields(SolverContext)}
    unknown = set(cfg.graph_options) - known
    if unknown:
        raise ConfigError(
            f"graph_options {sorted(unknown)} are not settings of graph {cfg.graph!r}; "
            f"it has: {', '.join(sorted(known)) or 'none'}"
        )
    return context


async def run_episode(
    task: Task,
    cfg: RunConfig,
    model: ChatModel,
    graph: Any,
    run_id: str,
    *,
    bindings: Bindings = Bindings(),
    episode: str | None = None,
    lessons: Sequence[str] = (),
    skills: Sequence[Skill] = (),
    make_env: Callable[[], Environment] | None = None,
) -> list[Trajectory]:
    """Run one episode; its trajectories, the main one first (tree graphs add one per
    explored path). Never raises for the episode's own faults: they are recorded.

    With a checkpointing graph, ``episode`` keys the checkpoint: a checkpoint left by an
    interrupted run is resumed (environment reset and replayed, then the next node runs).
    ``make_env`` builds the episode's environment (default: ``cfg.env`` from the registry,
    in this process; :mod:`agents.cluster` passes one that lives in a Ray actor).
    """
    episode = episode or new_id()
    env: Environment = make_env() if make_env is not None else registry.make("environment", cfg.env, **env_options(cfg))
    if skills:
        env = SkillEnvironment(env, skills)
    context = getattr(graph, "context_schema", None) or SolverContext  # each graph's own context type
    ctx = context(
        model=model,
        env=env,
        sampling=cfg.sampling,
        max_steps=cfg.max_steps,
        step_timeout_s=cfg.step_timeout_s,
        models=bindings.models,
        samplings=bindings.samplings,
        lessons=tuple(lessons),
        skills=skills_prompt(skills, cfg.env),
        **cfg.graph_options,
    )
    config = {"configurable": {"thread_id": episode}}
    latest: dict[str, Any] = {}
    error: str | None = None
    start = time.time()

    async def drive() -> None:
        start_with: dict[str, Any] | None = {"task": task}
        if graph.checkpointer is not None:
            saved = await graph.aget_state(config)
            if saved.values:  # interrupted earlier: bring the environment back, go on from there
                latest.update(saved.values)
                if not saved.next:
                    return
                await replay(ctx, task, _position(saved.values))
                start_with = None
        async for state in graph.astream(start_with, config, context=ctx, stream_mode="values"):
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
    error = error or latest.get("error")
    paths: list[TreePath] = latest.get("paths") or [TreePath(steps=tuple(latest.get("steps", [])))]
    ids = [episode] + [uuid.uuid5(uuid.NAMESPACE_URL, f"{episode}/{i}").hex for i in range(1, len(paths))]
    policy = PolicyRef(
        model=cfg.model, backend=model.name, adapter=getattr(model, "adapter", None), sampling=cfg.sampling
    )
    out = []
    for i, path in enumerate(paths):
        ran = acted(path.steps)
        last = ran[-1] if ran else None  # the last step the environment answered
        reward = last.reward if last else 0.0
        out.append(
            Trajectory(
                id=ids[i],
                run_id=run_id,
                task=task,
                env_id=cfg.env,
                policy=policy,
                steps=path.steps,
                reward=reward,
                success=bool(last and last.terminated and reward >= 1.0 and error is None),
                round=cfg.round,
                parent_id=ids[path.parent] if path.parent is not None else None,
                branch_step=path.branch_step,
                started_at=start,
                duration_s=time.time() - start,
                error=error,
            )
        )
    return out


def _position(state: Mapping[str, Any]) -> list[Any]:
    """The actions that bring a reset environment to where the saved state was."""
    if "position" in state:  # graphs that move around a tree say where they are
        return list(state["position"])
    return [s.action for s in acted(state.get("steps", [])[state.get("trial_start", 0) :])]


def open_library(store: TrajectoryStore, cfg: SkillConfig) -> SkillLibrary:
    """The run's skill library in ``store``, with ``cfg``'s thresholds."""
    return SkillLibrary(store, duplicate_at=cfg.duplicate_at, min_uses=cfg.min_uses, retire_below=cfg.retire_below)


async def _keep_skills(t: Trajectory, library: SkillLibrary, cfg: SkillConfig) -> str | None:
    """Score the skills ``t`` used; learn one from it when it succeeded: the new skill's id, if
    one was added. A fault here is logged, not raised."""
    try:
        used = skills_used(t)
        if used:
            await asyncio.to_thread(library.record_use, used, t.success)
        if cfg.learn and t.success and t.error is None:
            learned = await learn(t, library)
            if learned.status == "added" and learned.skill is not None:
                return learned.skill.id
            if learned.status == "rejected":
                log.info("skills: episode %s's candidate failed verification: %s", t.id, learned.reason)
    except Exception as e:  # learning is a by-product: a fault in it must not lose the episode
        log.warning("skills: could not learn from episode %s: %s: %s", t.id, type(e).__name__, e)
    return None


def _worth_a_lesson(t: Trajectory, max_steps: int) -> bool:
    """A wrong answer that the environment answered (not a backend fault or a timeout), or a
    costly success: one that took more than half its step budget, after failed attempts."""
    ran = acted(t.steps)
    if t.error is not None or not ran:
        return False
    return not t.success or (len(ran) > 1 and len(ran) > max_steps / 2)


async def reflect(
    t: Trajectory, cfg: RunConfig, model: ChatModel, bindings: Bindings = Bindings()
) -> tuple[Trajectory, list[Reflection]]:
    """The lessons of a failed (or costly) episode: the refiner's reflections when it wrote some
    (reflexion), else one from the reflector on the last attempt that failed, whose call becomes
    the trajectory's last step."""
    written = [
        s.output["reflection"] for s in t.steps if s.role == "refiner" and s.output and s.output.get("reflection")
    ]
    if not written:
        last = [s for s in acted(t.steps) if not (s.terminated and s.reward >= 1.0)][-1]
        observation = last.observation.text if last.observation else ""
        call = await Reflector().call(
            bindings.models.get("reflector", model),
            index=len(t.steps),
            sampling=bindings.samplings.get("reflector"),
            timeout_s=cfg.step_timeout_s,
            task=t.task.prompt,
            attempt=(last.completion or "").strip(),
            feedback=observation,
        )
        t = t.model_copy(update={"steps": (*t.steps, call.step)})
        written = [call.output.text] if call.output else []
    provenance = {"task_id": t.task.id, "task_prompt": t.task.prompt, "suite": t.task.suite, "round": t.round}
    made = {"trajectory_id": t.id, "run_id": t.run_id, "model": t.policy.model}
    return t, [Reflection(text=text, **provenance, **made) for text in written]


async def bind_roles(cfg: RunConfig, model: ChatModel, stack: AsyncExitStack) -> Bindings:
    """Build each role's own model (one per distinct spec; the run's model is reused).

    A role's LoRA checkpoint on the run model's own base is loaded as an adapter into the run's
    model (an :class:`~agents.llm.base.AdapterView`), not as a second copy of the base; it is
    unloaded when the run ends.
    """
    built: dict[str, ChatModel] = {cfg.model: model}
    models = {}
    for name, binding in cfg.roles.items():
        if binding.model is None:
            continue
        if binding.model not in built:
            spec = resolve_model(binding.model)
            if _shares_base(model, spec):
                assert isinstance(spec, TransformersConfig) and spec.adapter is not None
                adapter = f"role{len(built)}_{name}"
                await model.load_adapter(adapter, spec.adapter)  # type: ignore[attr-defined]
                stack.push_async_callback(model.unload_adapter, adapter)  # type: ignore[attr-defined]
                built[binding.model] = AdapterView(model, adapter)
            else:
                m = spec.build()
                stack.push_async_callback(m.aclose)
                built[binding.model] = m
        models[name] = built[binding.model]
    return Bindings(models=models, samplings=role_sampling(cfg))


def _shares_base(model: ChatModel, spec: Any) -> bool:
    """``spec`` is a LoRA adapter on the base ``model`` runs (same weights, device and dtype),
    and ``model`` can load adapters."""
    mine = getattr(model, "config", None)
    return (
        isinstance(spec, TransformersConfig)
        and spec.adapter is not None
        and isinstance(mine, TransformersConfig)
        and hasattr(model, "load_adapter")
        and (mine.path, mine.device, mine.dtype) == (spec.path, spec.device, spec.dtype)
    )


async def close_shared_workers() -> None:
    """Stop the process-wide workers episodes start (warm sandbox workers, the shared Chromium),
    which belong to the running event loop: call it before that loop ends when the process will
    start another one (``autodidact evolve`` runs one loop per stage)."""
    import sys

    from environments.sandbox.process import ProcessSandbox

    await ProcessSandbox.close_all()
    if "environments.web.browser" in sys.modules:
        from environments.web.browser import close_browsers

        await close_browsers()


def plan_run(cfg: RunConfig, tasks: Sequence[Task] | None, resume: bool) -> tuple[list[Task], str]:
    """The run's tasks (the given ones, or ``cfg``'s suite) and its id (``cfg.run_id`` or a new
    one), once ``cfg`` is checked: a resume names its run, ``graph_options`` fit the graph."""
    if resume and cfg.run_id is None:
        raise ConfigError("resume needs the run id: RunConfig(run_id=...)")
    graph_context(cfg)
    _check_env_options(cfg)
    if tasks is None:
        tasks = load_suite(cfg.suite, split=cfg.split, limit=cfg.limit, seed=cfg.task_seed)
    return list(tasks), cfg.run_id or new_id()[:12]


def progress_bar(enabled: bool = True, console: Any = None) -> Any:
    """A rich progress bar over episodes with a live success rate (field ``rate``).

    Where the output is no terminal (a log file, a pipe) rich draws the bar only when it stops,
    so there each episode that ends is also printed as a line: a long run's log shows its progress.
    """
    import datetime

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    class EpisodeProgress(Progress):
        def update(self, task_id: TaskID, **fields: Any) -> None:
            [task] = [t for t in self.tasks if t.id == task_id]
            before = task.completed
            super().update(task_id, **fields)
            if not self.disable and not self.console.is_terminal and task.completed != before:
                took = datetime.timedelta(seconds=int(task.elapsed or 0))
                line = f"{task.description}: {task.completed:g}/{task.total:g} · success {task.fields['rate']} · {took}"
                self.console.print(line, markup=False, highlight=False)

    return EpisodeProgress(  # markup=False: the description holds config values (a model path, a suite file)
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("success {task.fields[rate]}", markup=False),
        TimeElapsedColumn(),
        disable=not enabled,
        console=console,
    )


def success_text(ok: int, n: int) -> str:
    """``3/4 (75%)``, or ``-`` before the first episode."""
    return f"{ok}/{n} ({ok / n:.0%})" if n else "-"


async def run_rollout(
    cfg: RunConfig,
    model: ChatModel,
    store: TrajectoryStore,
    *,
    tasks: Sequence[Task] | None = None,
    progress: bool = True,
    resume: bool = False,
    make_env: Callable[[], Environment] | None = None,
    on_episode: Callable[[Trajectory], object] | None = None,
) -> RunResult:
    """Run every task of ``cfg`` (or the given ``tasks``) and store each episode as it ends.

    ``resume=True`` continues the run ``cfg.run_id``: stored episodes are skipped, interrupted
    ones continue from their checkpoints. ``make_env`` builds each episode's environment
    (default: from the registry, in this process); ``on_episode`` is called with each
    episode's main trajectory once it is stored (:mod:`agents.cluster` counts progress with it).

    Raises:
        StoreError: the store failed (disk full, database unreachable). The run stops cleanly:
            the episodes in flight are cancelled, what the run opened is closed, and the message
            says how to resume once the store works again (each episode is one transaction, so
            none is stored in part; resuming runs again every episode not yet stored).
    """
    tasks, run_id = plan_run(cfg, tasks, resume)
    if not resume:
        await asyncio.to_thread(store.put_run, RunInfo(id=run_id, config=cfg.model_dump(mode="json")))
    jobs = [(t, episode_id(run_id, t, k)) for t in tasks for k in range(cfg.samples_per_task)]
    if resume:
        stored = [await asyncio.to_thread(store.get, eid) for _, eid in jobs]
        jobs = [job for job, have in zip(jobs, stored, strict=True) if have is None]
    result = RunResult(run_id=run_id, skipped=len(tasks) * cfg.samples_per_task - len(jobs))
    gate = asyncio.Semaphore(cfg.concurrency)
    start = time.perf_counter()
    bar = progress_bar(progress)
    async with AsyncExitStack() as stack:
        bindings = await bind_roles(cfg, model, stack)
        checkpointer = stack.enter_context(open_checkpointer(home() / "checkpoints.sqlite")) if cfg.checkpoint else None
        graph = registry.make("graph", cfg.graph, checkpointer=checkpointer)
        memory = await asyncio.to_thread(ReflectionMemory, store) if cfg.reflections.enabled else None
        recall = {"recent": cfg.reflections.recent, "similar": cfg.reflections.similar}
        library = await asyncio.to_thread(open_library, store, cfg.skills) if cfg.skills.enabled else None
        # What exists now (libraries, models, the embedder: ~0.5M objects with torch) is not the
        # run's garbage; keeping it out of the collector's full passes saves ~5-10% of a busy
        # run's CPU. Thawed when the run ends.
        gc.freeze()
        stack.callback(gc.unfreeze)
        with bar:
            bar_id = bar.add_task(f"{cfg.graph} · {cfg.suite} · {cfg.model}", total=len(jobs), rate="-")

            async def one(task: Task, eid: str) -> None:
                async with gate:
                    lessons = await asyncio.to_thread(memory.recall, task, **recall) if memory else []
                    texts = [r.text for r in lessons]
                    offered = (
                        await asyncio.to_thread(library.retrieve, task, cfg.env, cfg.skills.top_k) if library else []
                    )
                    trajs = await run_episode(
                        task,
                        cfg,
                        model,
                        graph,
                        run_id,
                        bindings=bindings,
                        episode=eid,
                        lessons=texts,
                        skills=offered,
                        make_env=make_env,
                    )
                    learned: list[Reflection] = []
                    if memory is not None and _worth_a_lesson(trajs[0], cfg.max_steps):
                        trajs[0], learned = await reflect(trajs[0], cfg, model, bindings)
                for traj in reversed(trajs):  # the main trajectory last: once it is stored, the episode is done
                    if not resume or await asyncio.to_thread(store.get, traj.id) is None:
                        await asyncio.to_thread(store.append, traj)
                if memory is not None and learned:
                    await asyncio.to_thread(memory.add, learned)
                if library is not None and (added := await _keep_skills(trajs[0], library, cfg.skills)):
                    result.skills_learned.append(added)
                if checkpointer is not None:
                    await checkpointer.adelete_thread(eid)
                result.trajectories.extend(trajs)
                result.episodes.append(trajs[0])
                if on_episode is not None:
                    on_episode(trajs[0])
                bar.update(
                    bar_id, advance=1, rate=success_text(sum(t.success for t in result.episodes), len(result.episodes))
                )

            running = [asyncio.ensure_future(one(t, eid)) for t, eid in jobs]
            try:
                await asyncio.gather(*running)
            except StoreError as e:
                raise StoreError(
                    f"{e} — run {run_id} stopped with {len(result.episodes)} of {len(jobs)} episodes stored; "
                    f"once the store works again, continue it with `autodidact run --resume {run_id}` "
                    "(run_rollout(..., resume=True))"
                ) from e
            finally:  # a fault outside the episodes (the store): the others stop too, not run on orphaned
                for job in running:
                    job.cancel()
                await asyncio.gather(*running, return_exceptions=True)
    result.seconds = time.perf_counter() - start
    return result
