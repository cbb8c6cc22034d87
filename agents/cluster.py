"""Rollouts across a Ray cluster: rollout drivers and environment workers as Ray actors.

:func:`run_rollout_ray` runs the same rollout as :func:`agents.rollout.run_rollout` (same
config, same episode ids, same records) on many processes and hosts, its actors spread over
the cluster's nodes:

- **Rollout drivers** (:class:`RolloutDriver`, one Ray actor each) each build the model from
  ``cfg.model`` (or ``model_factory``), open the shared store and run
  :func:`~agents.rollout.run_rollout` over their share of the episodes (tasks dealt out in
  turn, so easy and hard tasks spread evenly), ``cfg.concurrency`` episodes at once each.
  Every driver appends its episodes to the store itself: the store is where the run meets.
- **Environment workers** (:class:`EnvWorker`, optional) host the environments — sandboxes,
  browsers — in their own processes, so that they can sit on CPU hosts while drivers sit
  next to the model; a driver's episode talks to one through a :class:`RemoteEnvironment`.
  With ``env_workers=0`` each driver runs its environments itself.

Across hosts the store must be PostgreSQL (``--store postgresql://…``); a SQLite file is
accepted only when the cluster is this one host. Every host needs autodidact installed
(same version) and, for ``embedded`` or a checkpoint, the model files; the driver passes its
``AUTODIDACT_*`` environment variables on to the actors.

Faults: an environment worker that dies is restarted by Ray; the episodes it was serving are
recorded with the error ("the environment worker died mid-episode") and the run goes on. A driver that dies (its
host lost) is restarted and its share run again with ``resume``: episodes already stored are
skipped, so nothing is run twice or lost (``retries`` times at most).

Example:
    >>> cfg = RunConfig(suite="bundled", limit=64, model="http://gpu-host:8000", run_id="r1")
    >>> result = run_rollout_ray(cfg, "postgresql://me@db:5432/ad", RayConfig(address="auto"))  # doctest: +SKIP

From the command line: ``autodidact run --ray auto --store postgresql://… [--ray-drivers N]
[--ray-env-workers M]``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents.llm.base import ChatModel, resolve_model
from agents.rollout import (
    RunConfig,
    RunResult,
    close_shared_workers,
    env_options,
    episode_id,
    plan_run,
    progress_bar,
    run_rollout,
    success_text,
)
from autodidact import registry
from autodidact.errors import AutodidactError, ConfigError
from autodidact.types import Action, Observation, Task, Trajectory, new_id
from environments.base import Environment, StepResult
from memory.base import RunInfo, open_store

log = logging.getLogger(__name__)


class RayConfig(BaseModel):
    """Where and how wide a rollout runs on Ray."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(
        "local",
        description="local (start Ray on this host), auto (the cluster this host belongs to), or host:port / ray://host:port",
    )
    drivers: int | None = Field(None, ge=1, description="rollout driver actors [default: one per node]")
    env_workers: int = Field(0, ge=0, description="environment worker actors (0: drivers run their environments)")
    driver_cpus: float = Field(1.0, ge=0, description="CPUs reserved by each driver")
    driver_gpus: float = Field(0.0, ge=0, description="GPUs reserved by each driver (a local model on GPU)")
    env_worker_cpus: float = Field(1.0, ge=0, description="CPUs reserved by each environment worker")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray instance [default: all]")
    retries: int = Field(2, ge=0, description="times a lost driver's share is run again (stored episodes skipped)")


class RemoteEnvironment:
    """An :class:`~environments.base.Environment` that lives in an :class:`EnvWorker` actor."""

    def __init__(self, worker: Any, env_id: str, options: dict[str, Any]) -> None:
        self.id = env_id
        self._worker = worker
        self._options = options
        self._key = new_id()
        self._opened = False

    async def _call(self, method: str, *args: Any, retry: bool = False) -> Any:
        """Call the worker; ``retry``: wait for a worker that Ray is restarting instead of failing
        (for ``open``, before the episode has touched the worker: safe to run again)."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        call = getattr(self._worker, method)
        try:
            return await (call.options(max_task_retries=-1) if retry else call).remote(self._key, *args)
        except (RayActorError, ActorUnavailableError) as e:
            raise RuntimeError(
                f"the environment worker died mid-episode ({type(e).__name__}); Ray restarts it for the next episodes"
            ) from e

    async def reset(self, task: Task, *, seed: int | None = None) -> Observation:
        if not self._opened:
            await self._call("open", self.id, self._options, retry=True)
            self._opened = True
        return await self._call("reset", task, seed)  # type: ignore[no-any-return]

    async def step(self, action: Action) -> StepResult:
        return await self._call("step", action)  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            await self._call("close")


class EnvWorker:
    """Environments of many episodes in one process (a Ray actor; async, so they run at once)."""

    def __init__(self) -> None:
        self._envs: dict[str, Environment] = {}

    async def open(self, key: str, env_id: str, options: dict[str, Any]) -> None:
        self._envs[key] = registry.make("environment", env_id, **options)

    def _env(self, key: str) -> Environment:
        env = self._envs.get(key)
        if env is None:  # this worker was restarted since the episode began: its environment is gone
            raise RuntimeError(f"environment worker {os.getpid()} has no environment {key} (restarted mid-episode?)")
        return env

    async def reset(self, key: str, task: Task, seed: int | None) -> Observation:
        return await self._env(key).reset(task, seed=seed)

    async def step(self, key: str, action: Action) -> StepResult:
        return await self._env(key).step(action)

    async def close(self, key: str) -> None:
        env = self._envs.pop(key, None)
        if env is not None:
            await env.close()


class Tally:
    """Episodes stored and successes so far, across drivers (a Ray actor; the progress bar reads it)."""

    def __init__(self) -> None:
        self.done = 0
        self.ok = 0

    def add(self, success: bool) -> None:
        self.done += 1
        self.ok += bool(success)

    def get(self) -> tuple[int, int]:
        return self.done, self.ok


class RolloutDriver:
    """Runs its share of a rollout's episodes with :func:`~agents.rollout.run_rollout` (a Ray actor)."""

    def __init__(
        self,
        cfg: RunConfig,
        store_url: str,
        env_workers: Sequence[str] = (),
        model_factory: Callable[[], ChatModel] | None = None,
        tally: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.store_url = store_url
        # actor names: handles passed to the constructor would not survive a restart
        self.env_workers = list(env_workers)
        self.model_factory = model_factory
        self.tally = tally

    async def run(self, tasks: list[Task]) -> RunResult:
        """Run ``tasks`` (``samples_per_task`` each) of the run; episodes already stored are skipped."""
        import ray

        model = self.model_factory() if self.model_factory else resolve_model(self.cfg.model).build()
        store = await asyncio.to_thread(open_store, self.store_url)
        workers = itertools.cycle([ray.get_actor(name) for name in self.env_workers])
        tally = ray.get_actor(self.tally) if self.tally else None
        options = env_options(self.cfg)

        def remote_env() -> Environment:
            return RemoteEnvironment(next(workers), self.cfg.env, options)

        def count(t: Trajectory) -> None:
            if tally is not None:
                tally.add.remote(t.success)

        try:
            return await run_rollout(
                self.cfg,
                model,
                store,
                tasks=tasks,
                progress=False,
                resume=True,  # the head recorded the run; a retried share skips what is stored
                make_env=remote_env if self.env_workers else None,
                on_episode=count,
            )
        finally:
            await model.aclose()
            await close_shared_workers()
            await asyncio.to_thread(store.close)


def connect(ray_cfg: RayConfig) -> bool:
    """Connect this process to Ray (start a local instance for ``local``); whether it was not connected before."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local instance on 127.0.0.1 needs no token
    try:
        if ray_cfg.address == "local":
            ray.init(num_cpus=ray_cfg.num_cpus, include_dashboard=False)
        else:
            ray.init(address=ray_cfg.address)
    except ConnectionError as e:
        raise ConfigError(
            f"cannot connect to Ray at {ray_cfg.address!r}: {e}; start one with `ray start --head`, "
            "or use --ray local for a Ray instance on this host"
        ) from None
    return True


def _check_fits(ray_cfg: RayConfig, drivers: int) -> None:
    """Refuse what the cluster cannot place (Ray would leave the actors pending forever)."""
    import ray

    have = ray.cluster_resources()
    cpus = drivers * ray_cfg.driver_cpus + ray_cfg.env_workers * ray_cfg.env_worker_cpus
    gpus = drivers * ray_cfg.driver_gpus
    if cpus > have.get("CPU", 0) + 1e-9 or gpus > have.get("GPU", 0) + 1e-9:
        raise ConfigError(
            f"{drivers} drivers x {ray_cfg.driver_cpus:g} CPU/{ray_cfg.driver_gpus:g} GPU and {ray_cfg.env_workers} "
            f"environment workers x {ray_cfg.env_worker_cpus:g} CPU need {cpus:g} CPUs and {gpus:g} GPUs; the cluster "
            f"has {have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs: use fewer actors or smaller shares"
        )


def _check_store(store_url: str, nodes: int) -> None:
    if nodes > 1 and not store_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"the Ray cluster has {nodes} nodes but the store is a SQLite file ({store_url}) that only this "
            "host can write: use a shared PostgreSQL store, --store postgresql://user@host:port/db"
        )


def run_rollout_ray(
    cfg: RunConfig,
    store_url: str,
    ray_cfg: RayConfig = RayConfig(),
    *,
    tasks: Sequence[Task] | None = None,
    model_factory: Callable[[], ChatModel] | None = None,
    progress: bool = True,
    resume: bool = False,
) -> RunResult:
    """Run the rollout ``cfg`` on Ray; every episode is stored in ``store_url`` by the driver that ran it.

    ``model_factory`` (picklable) builds each driver's model instead of ``cfg.model``.
    ``resume=True`` continues the run ``cfg.run_id`` (stored episodes are skipped). Connects
    to Ray (and starts a local instance for ``address="local"``) unless this process already
    is; disconnects afterwards only if it connected.
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    tasks, run_id = plan_run(cfg, tasks, resume)
    cfg = cfg.model_copy(update={"run_id": run_id})
    assert cfg.run_id is not None
    started = connect(ray_cfg)
    actors: list[Any] = []
    try:
        nodes = sum(bool(n.get("Alive")) for n in ray.nodes())
        drivers = min(ray_cfg.drivers or nodes, max(1, len(tasks)))
        _check_fits(ray_cfg, drivers)
        _check_store(store_url, nodes)
        with open_store(store_url) as store:
            if not resume:
                store.put_run(RunInfo(id=cfg.run_id, config=cfg.model_dump(mode="json")))
            already = (
                sum(
                    store.get(episode_id(cfg.run_id, t, k)) is not None
                    for t in tasks
                    for k in range(cfg.samples_per_task)
                )
                if resume
                else 0
            )
        start = time.perf_counter()
        prefix = f"autodidact-{cfg.run_id}-{new_id()[:6]}"
        tally: Any = ray.remote(Tally).options(name=f"{prefix}-tally", num_cpus=0).remote()
        # The actors see this process's AUTODIDACT_* settings (home, cache), wherever they run.
        runtime_env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith("AUTODIDACT_")}}
        names = [f"{prefix}-env{i}" for i in range(ray_cfg.env_workers)]
        env_workers = [
            ray.remote(EnvWorker)
            .options(
                name=name,
                num_cpus=ray_cfg.env_worker_cpus,
                max_restarts=-1,
                runtime_env=runtime_env,
                scheduling_strategy="SPREAD",
            )
            .remote()
            for name in names
        ]
        driver_cls = ray.remote(RolloutDriver).options(
            num_cpus=ray_cfg.driver_cpus,
            num_gpus=ray_cfg.driver_gpus,
            max_restarts=ray_cfg.retries,
            runtime_env=runtime_env,
            scheduling_strategy="SPREAD",  # over the nodes, not packed on the first that has room
        )
        shares = [tasks[i::drivers] for i in range(drivers)]
        handles: list[Any] = [
            driver_cls.remote(cfg, store_url, names, model_factory, f"{prefix}-tally") for _ in shares
        ]
        actors = [tally, *env_workers, *handles]
        pending = {h.run.remote(share): (h, share, 0) for h, share in zip(handles, shares, strict=True)}
        results: list[RunResult] = []
        total = len(tasks) * cfg.samples_per_task - already
        bar = progress_bar(progress)
        with bar:
            bar_id = bar.add_task(f"{cfg.graph} · {cfg.suite} · {cfg.model} · ray x{drivers}", total=total, rate="-")

            def update() -> None:
                stored, ok = ray.get(tally.get.remote())
                bar.update(bar_id, completed=stored, rate=success_text(ok, stored))

            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                update()
                for ref in done:
                    handle, share, tries = pending.pop(ref)
                    try:
                        results.append(ray.get(ref))
                    except RayTaskError as e:
                        # the driver raised (the store failed): give the error itself, not Ray's wrapper
                        cause = getattr(e, "cause", None)
                        if isinstance(cause, AutodidactError):
                            raise cause from None
                        raise
                    except RayActorError as e:
                        if tries >= ray_cfg.retries:
                            raise
                        log.warning("a rollout driver was lost (%s); running its share again", type(e).__name__)
                        pending[handle.run.remote(share)] = (handle, share, tries + 1)
            update()
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
    merged = RunResult(run_id=cfg.run_id, skipped=already, seconds=time.perf_counter() - start)
    for r in results:
        merged.trajectories.extend(r.trajectories)
        merged.episodes.extend(r.episodes)
        merged.skills_learned.extend(r.skills_learned)
    return merged
