"""``autodidact evolve``: rounds of collect → build datasets → train → evaluate → promote.

A round, with the *incumbent* policy (round 1: ``model``):

1. **collect** — run the incumbent (and its role adapters) on the training split
   (``collect``, a :class:`~agents.rollout.RunConfig` on top of the run defaults); with
   ``curriculum.enabled``, also on new tasks it wrote from the ones it failed
   (:mod:`training.curriculum`).
2. **train** — one checkpoint per method, in this order, each on the round's episodes and each
   starting from the one before: ``sft`` and ``revision`` together as one SFT on the mixed
   ``success`` / ``revision`` data (Agent-R mixes them), then ``webrl`` (earlier rounds' runs as
   its replay), then ``dpo``. Each role in ``roles`` gets its own adapter, trained by SFT on its
   kinds from the base. A method with nothing to train on is skipped and says why. A new
   ``world_model`` adapter is measured against the incumbent's world model by next-observation
   accuracy on held-out transitions (:mod:`training.world_model`).
3. **evaluate** — the candidate (the last checkpoint trained) on the held-out split
   (``evaluate``; greedy by default).
4. **gate** — the candidate is promoted only if its held-out success is not below the
   incumbent's (``gate_tolerance``, default 0); both numbers are kept. A promoted candidate
   (with the round's role adapters) is the next round's incumbent; a refused one is kept as a
   checkpoint and nothing else changes.

Round 0 is the incumbent's own held-out evaluation, the bar for round 1.

Resumable after a kill at any point: every stage has a fixed name (run ids
``<name>-r<k>-collect``, checkpoint names ``<name>-r<k>-<method>``), and ``state.json`` (under
``$AUTODIDACT_HOME/evolve/<name>/``, replaced atomically) records each finished stage. Run the
same command again: finished stages are skipped; a run continues where it stopped (stored
episodes are skipped, never run twice; see :func:`agents.rollout.run_rollout`); training
starts again from the trainer's last saved state (``save_strategy: steps`` by default) or,
before the first save, from scratch. A checkpoint registered before the kill is reused.

After every round the report (:mod:`training.report`) is rewritten: ``report.html`` and PNG
plots beside ``state.json``.

Example:
    autodidact evolve --config examples/evolve_demo.yaml
    autodidact evolve --config my.yaml --set rounds=5 --set methods=[sft]   # plain STaR
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from autodidact.config import home, merged
from autodidact.errors import ConfigError, NothingToTrainError
from autodidact.types import Trajectory, new_id

if TYPE_CHECKING:
    from agents.llm.vllm_server import PolicyServer

METHODS = ("sft", "revision", "webrl", "dpo")
STATE_FILE = "state.json"


COLLECT: dict[str, Any] = {
    "split": "train",
    "limit": 40,
    "samples_per_task": 4,
    "concurrency": 16,
    "sampling": {"temperature": 0.8, "max_tokens": 128},
}
EVALUATE: dict[str, Any] = {"split": "test", "concurrency": 16, "sampling": {"max_tokens": 128}}


class CurriculumConfig(BaseModel):
    """New training tasks written by the policy from the ones it failed (:mod:`training.curriculum`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="write, check and collect new tasks each round")
    per_round: int = Field(16, ge=1, description="failed tasks to write new ones from, at most")
    samples: int = Field(2, ge=1, description="tasks written from each failed one")
    value_band: tuple[float, float] = Field(
        (0.05, 0.75), description="keep a task when the critic's success estimate is in this band"
    )


class EvolveConfig(BaseModel):
    """What ``autodidact evolve`` does: the policy, the tasks, the methods and the rounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="the evolve run's name: its dir, run ids and checkpoint names")
    rounds: int = Field(3, ge=1)
    model: str = Field("embedded", description="the policy to start from (any --model spec)")
    env: str = "code"
    suite: str = "bundled"
    collect: dict[str, Any] = Field(
        default_factory=lambda: merged(COLLECT, {}),
        description="RunConfig fields for collection (the train split); given ones are merged over the defaults",
    )
    evaluate: dict[str, Any] = Field(
        default_factory=lambda: merged(EVALUATE, {}),
        description="RunConfig fields for the held-out evaluation (greedy unless set); merged over the defaults",
    )
    fresh_tasks: bool = Field(
        False,
        description="round k collects collect.limit training tasks drawn at random with seed k, not the first ones",
    )
    methods: list[str] = Field(default_factory=lambda: ["sft", "revision"], description=f"from {', '.join(METHODS)}")
    roles: dict[str, list[str]] = Field(
        default_factory=dict, description="a role's own adapter and its data kinds, e.g. {reviewer: [reviewer]}"
    )
    train: dict[str, Any] = Field(
        default_factory=dict, description="trainer settings for every method (TrainingArguments, LoRA, ...)"
    )
    engine: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="what runs the rollouts: transformers in process, or one managed vLLM server for the "
        "whole run with each round's LoRA adapter loaded into it by name",
    )
    vllm: dict[str, Any] = Field(
        default_factory=dict,
        description="VLLMServerConfig fields for engine: vllm (kv_cache_gb, max_model_len, enforce_eager, ...)",
    )
    gate_tolerance: float = Field(0.0, ge=0.0, le=1.0, description="promote unless held-out success drops by more")
    curriculum: CurriculumConfig = CurriculumConfig()

    @field_validator("collect", "evaluate", mode="before")
    @classmethod
    def _over_defaults(cls, v: Any, info: ValidationInfo) -> Any:
        # so that `--set collect.concurrency=64` changes that one field, not the whole stage
        return merged(COLLECT if info.field_name == "collect" else EVALUATE, v) if isinstance(v, dict) else v

    @field_validator("vllm")
    @classmethod
    def _vllm_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        from agents.llm.base import VLLMServerConfig

        fixed = {"type", "model", "enable_lora", "adapter"}
        unknown = sorted(k for k in v if k not in VLLMServerConfig.model_fields or k in fixed)
        if unknown:
            allowed = ", ".join(k for k in VLLMServerConfig.model_fields if k not in fixed)
            raise ValueError(f"vllm: unknown or fixed keys {unknown}; allowed: {allowed}")
        VLLMServerConfig.model_validate(v)  # the values, checked now rather than rounds later
        return v

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in METHODS]
        if unknown or not v:
            raise ValueError(f"methods must list some of {', '.join(METHODS)}; got {v!r}")
        return v

    def run_config(self, stage: dict[str, Any], **fields: Any) -> Any:
        """A :class:`~agents.rollout.RunConfig` for a stage (collect or evaluate)."""
        from agents.rollout import RunConfig
        from autodidact.config import validate

        return validate(RunConfig, {"env": self.env, "suite": self.suite, **stage, **fields}, source="evolve")


# --- the numbers the gate and the report use ----------------------------------------------------


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a success rate.

    Example:
        >>> [round(x, 3) for x in wilson(9, 20)]
        [0.258, 0.658]
    """
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def run_numbers(episodes: list[Trajectory]) -> dict[str, Any]:
    """Success, its interval, the mean reward and per-suite success of a run's main episodes."""
    n = len(episodes)
    ok = sum(t.success for t in episodes)
    suites: dict[str, list[int]] = {}
    for t in episodes:
        suites.setdefault(t.task.suite, [0, 0])
        suites[t.task.suite][0] += int(t.success)
        suites[t.task.suite][1] += 1
    roles: dict[str, list[int]] = {}
    for t in episodes:
        for s in t.steps:
            roles.setdefault(s.role, [0, 0])
            roles[s.role][0] += int(s.error is None)
            roles[s.role][1] += 1
    return {
        "episodes": n,
        "successes": ok,
        "success": ok / n if n else 0.0,
        "ci95": list(wilson(ok, n)),
        "mean_reward": sum(t.reward for t in episodes) / n if n else 0.0,
        "errored": sum(t.error is not None for t in episodes),
        "suites": {k: {"successes": v[0], "episodes": v[1]} for k, v in sorted(suites.items())},
        "roles": {k: {"calls": v[1], "ok": v[0]} for k, v in sorted(roles.items())},
    }


# --- state ----------------------------------------------------------------------------------------


class Evolution:
    """One evolve run's directory and state; every method is a resumable stage."""

    def __init__(self, config: EvolveConfig, store: Any, *, progress: bool = True, log: Callable[[str], None] = print):
        name = config.name or f"evolve-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{new_id()[:4]}"
        self.config = config.model_copy(update={"name": name})
        self.name = name
        self.dir = evolve_dir(name)
        self.store = store
        self.progress = progress
        self.log = log
        self.state: dict[str, Any] = self._load()
        self._server: PolicyServer | None = None  # engine: vllm's server, started at the first rollout

    def _load(self) -> dict[str, Any]:
        path = self.dir / STATE_FILE
        mine = self.config.model_dump(mode="json")
        if not path.is_file():
            return {
                "name": self.name,
                "config": mine,
                "stages": {},
                "incumbent": {"model": self.config.model, "roles": {}},
            }
        state: dict[str, Any] = json.loads(path.read_text())
        if state.get("config") != mine:
            raise ConfigError(
                f"evolve run {self.name!r} exists at {self.dir} with another config; continue it with "
                f"`autodidact evolve --resume {self.name}`, or choose another name"
            )
        return state

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{STATE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(self.state, indent=1, default=str))
        os.replace(tmp, self.dir / STATE_FILE)

    def stage(self, key: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``work`` as stage ``key`` unless it finished before; record its result and time."""
        done = self.state["stages"].get(key)
        if done is not None:
            return dict(done)
        self.state["current"] = key
        self.save()
        self.log(f"[evolve {self.name}] {key} …")
        started = time.perf_counter()
        result = work()
        result["seconds"] = round(time.perf_counter() - started, 2)  # of the attempt that finished it
        self.state["stages"][key] = result
        self.state.pop("current", None)
        self.save()
        return result

    # --- the stages -----------------------------------------------------------------------------

    def rollout(
        self, run_id: str, stage: dict[str, Any], model: str, roles: dict[str, str], rnd: int
    ) -> dict[str, Any]:
        """Run (or continue) run ``run_id`` with ``model`` and role adapters; its numbers."""
        from agents.rollout import close_shared_workers, run_rollout

        found = self.store.get_run(run_id)
        resume = found is not None and found.run.id == run_id  # a run started before a kill: go on with it

        async def go() -> Any:
            async with self.policy(model, roles) as (chat, role_specs):
                bound = dict(stage.get("roles", {}))
                for role, spec in role_specs.items():
                    bound[role] = {**bound.get(role, {}), "model": spec}
                cfg = self.config.run_config(stage, model=model, run_id=run_id, round=rnd, roles=bound)
                try:
                    return await run_rollout(cfg, chat, self.store, progress=self.progress, resume=resume)
                finally:
                    await close_shared_workers()

        asyncio.run(go())
        return {"run": run_id, "model": model, **run_numbers(self.episodes(run_id))}

    @asynccontextmanager
    async def policy(self, spec: str, roles: dict[str, str] | None = None) -> AsyncIterator[tuple[Any, dict[str, str]]]:
        """The policy ``spec`` as a chat model for one stage's event loop, and the model specs its
        role adapters run with.

        ``engine: transformers``: the model is built here and closed after. ``engine: vllm``: one
        vLLM server serves the whole run; ``spec``'s adapter (and the roles') are loaded into it by
        name and any other adapter is unloaded, with no restart.
        """
        roles = dict(roles or {})
        if self.config.engine == "transformers":
            from agents.llm.base import resolve_model

            chat = resolve_model(spec).build()
            try:
                yield chat, roles
            finally:
                await chat.aclose()
            return
        server = self._server if self._server is not None else await asyncio.to_thread(self._start_server)
        try:
            chat = await server.policy(spec, keep=list(roles.values()))
            yield chat, {role: await server.url(s) for role, s in roles.items()}
        finally:
            await server.release()

    def _start_server(self) -> PolicyServer:
        from agents.llm.vllm_server import PolicyServer
        from training.checkpoints import find_checkpoint

        ckpt = find_checkpoint(self.config.model)
        base = ckpt.load_spec()[0] if ckpt is not None else self.config.model
        self.log(f"[evolve {self.name}] starting a vLLM server on {base} (LoRA adapters loaded per round)")
        server = self._server = PolicyServer.start(base, **self.config.vllm)
        return server

    def stop_server(self) -> None:
        """Stop the vLLM server of ``engine: vllm`` (if one was started)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def episodes(self, run_id: str) -> list[Trajectory]:
        from memory.base import TrajectoryQuery

        return [t for t in self.store.query(TrajectoryQuery(run_id=run_id)) if t.parent_id is None]

    def train(self, method: str, name: str, **fields: Any) -> dict[str, Any]:
        """Train checkpoint ``name`` (or reuse it if it was registered before a kill)."""
        from autodidact.config import validate
        from training.checkpoints import checkpoint_dir, find_checkpoint
        from training.policy import resume_point, trainer

        ckpt = find_checkpoint(name)
        if ckpt is None or ckpt.name != name:
            fn, config_cls = trainer(method)
            saved = resume_point(name) is not None
            if not saved:
                shutil.rmtree(checkpoint_dir(name), ignore_errors=True)  # a kill before the first whole save
            settings = {"save_strategy": "steps", "save_steps": 25, **self.config.train, **fields}
            cfg = validate(config_cls, {**settings, "checkpoint_name": name, "resume_from_checkpoint": saved or None})
            try:
                ckpt = fn(cfg, self.store)
            except NothingToTrainError as e:
                shutil.rmtree(checkpoint_dir(name), ignore_errors=True)
                self.log(f"[evolve {self.name}] {name}: skipped — {e}")
                return {"checkpoint": None, "skipped": str(e)}
        m = ckpt.metrics
        counts = ckpt.datasets[0].counts if ckpt.datasets else {}
        return {
            "checkpoint": ckpt.name,
            "method": ckpt.method,
            "parent": ckpt.parent,
            "examples": m.examples,
            "steps": m.steps,
            "loss_before": m.loss_before,
            "loss_after": m.loss_after,
            "counts": counts,
            "train_seconds": m.seconds,
        }

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Every round not finished yet; then the report. Returns the state."""
        c = self.config
        try:
            base = self.stage("r0/evaluate", lambda: self.rollout(f"{self.name}-r0-eval", c.evaluate, c.model, {}, 0))
            self.state.setdefault("bar", base["success"])
            for k in range(1, c.rounds + 1):
                self.round(k)
                self.report()
        finally:
            self.stop_server()
        self.state["finished"] = True
        self.save()
        self.report()
        return self.state

    def round(self, k: int) -> None:
        c = self.config
        incumbent = dict(self.state["incumbent"])
        model, roles = incumbent["model"], dict(incumbent["roles"])
        collect_id = f"{self.name}-r{k}-collect"
        collect = {**c.collect, "task_seed": k} if c.fresh_tasks else c.collect
        self.stage(f"r{k}/collect", lambda: self.rollout(collect_id, collect, model, roles, k))
        runs = [collect_id]
        if c.curriculum.enabled:
            from training.curriculum import evolve_curriculum

            made = self.stage(f"r{k}/curriculum", partial(evolve_curriculum, self, k, model, roles))
            if made.get("run"):
                runs.append(made["run"])

        candidate = model
        earlier = [f"{self.name}-r{j}-collect" for j in range(1, k)]
        sft_kinds = [m if m == "revision" else "success" for m in c.methods if m in ("sft", "revision")]
        plan: list[tuple[str, str, dict[str, Any]]] = []
        if sft_kinds:
            plan.append(("sft", "sft", {"data": sft_kinds}))
        if "webrl" in c.methods:
            plan.append(("webrl", "webrl", {"replay_run": earlier or None}))
        if "dpo" in c.methods:
            plan.append(("dpo", "dpo", {}))
        for method, tag, fields in plan:
            name = f"{self.name}-r{k}-{tag}"
            work = partial(self.train, method, name, run=runs, model=candidate, **fields)
            got = self.stage(f"r{k}/train/{tag}", work)
            if got.get("checkpoint"):
                candidate = got["checkpoint"]
        new_roles = dict(roles)
        for role, kinds in sorted(c.roles.items()):
            work = partial(self.train, "sft", f"{self.name}-r{k}-{role}", run=runs, model=c.model, data=kinds)
            got = self.stage(f"r{k}/train/role:{role}", work)
            if got.get("checkpoint"):
                new_roles[role] = got["checkpoint"]
        trained_world_model = new_roles.get("world_model")
        if trained_world_model is not None and trained_world_model != roles.get("world_model"):
            before_spec = str(roles.get("world_model") or model)
            self.stage(f"r{k}/world_model", partial(self.world_model, before_spec, trained_world_model))

        if candidate == model and new_roles == roles:
            self.stage(f"r{k}/gate", lambda: {"promoted": False, "reason": "nothing was trained this round"})
            return
        bar = self.state["bar"]
        result = self.stage(
            f"r{k}/evaluate", lambda: self.rollout(f"{self.name}-r{k}-eval", c.evaluate, candidate, new_roles, k)
        )

        def gate() -> dict[str, Any]:
            promoted = result["success"] >= bar - c.gate_tolerance
            verdict = "promoted" if promoted else "refused: held-out success would regress"
            self.log(
                f"[evolve {self.name}] round {k}: held-out success {bar:.3f} (incumbent {model}) → "
                f"{result['success']:.3f} (candidate {candidate}): {verdict}"
            )
            if promoted:
                self.state["incumbent"] = {"model": candidate, "roles": new_roles}
                self.state["bar"] = result["success"]
            return {
                "promoted": promoted,
                "incumbent": model,
                "candidate": candidate,
                "before": bar,
                "after": result["success"],
            }

        self.stage(f"r{k}/gate", gate)

    def world_model(self, before: str, after: str) -> dict[str, Any]:
        """Next-observation accuracy of the incumbent's world model and the new one, on the
        transitions of round 0's held-out run (tasks no round trains on)."""
        from training.world_model import evaluate_world_model

        runs = [f"{self.name}-r0-eval"]
        try:
            old = evaluate_world_model(before, self.store, runs, limit=32)
        except NothingToTrainError as e:
            return {"skipped": str(e)}
        new = evaluate_world_model(after, self.store, runs, limit=32)
        return {"model_before": before, "model_after": after, "before": old, "after": new}

    def report(self) -> Path:
        from training.report import write_report

        return write_report(self.state, self.dir)


def evolve_dir(name: str) -> Path:
    """Where evolve run ``name`` keeps its state and report."""
    from training.checkpoints import checkpoint_dir

    checkpoint_dir(name)  # the same naming rules: letters, digits, '.', '_', '-'
    return home() / "evolve" / name


def resume_config(name: str) -> EvolveConfig:
    """The config of the evolve run ``name``, to continue it."""
    path = evolve_dir(name) / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"no evolve run {name!r} (no {path}); start one with `autodidact evolve --config FILE`")
    return EvolveConfig.model_validate(json.loads(path.read_text())["config"])
