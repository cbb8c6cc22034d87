"""``autodidact evolve``: rounds of collect → build datasets → train → evaluate → promote.

A round, with the *incumbent* policy (round 1: ``model``):

1. **collect** — run the incumbent (and its role adapters) on training tasks (``collect``, a
   :class:`~agents.rollout.RunConfig` on top of the run defaults): ``collect.limit`` tasks drawn
   at random from the whole training split, another draw each round (``fresh_tasks``), each with
   up to two attempts and, between them, only the feedback an agent could see (the visible
   tests; :mod:`environments.code.env`). With ``bstar.enabled`` the round's sampling temperature
   and samples per task are chosen first by B-STaR's balance score on a small probe
   (:mod:`training.bstar`). With
   ``curriculum.enabled``, the incumbent also collects on new tasks it wrote from the ones it
   failed (:mod:`training.curriculum`).
2. **train** — one checkpoint per method, in this order, each starting from the one before:
   ``sft`` and ``revision`` together as one SFT on the mixed ``success`` / ``revision`` data
   (Agent-R mixes them), then ``webrl`` (earlier rounds' runs as its replay), then ``dpo``,
   then ``score`` (:mod:`training.score`: on this round's collection alone, which is what
   makes it on-policy; SCoRe's stage I in round 1, stage II after).
   ``train_from: incumbent`` (the default) continues the incumbent on this round's episodes;
   ``train_from: base`` starts again from ``model`` on every round's episodes so far (STaR and
   ReST-EM retrain from the base). Each role in ``roles`` gets its own adapter, trained by SFT
   on its kinds from the base. A method with nothing to train on is skipped and says why. A new
   ``world_model`` adapter is measured against the incumbent's world model by next-observation
   accuracy on held-out transitions (:mod:`training.world_model`) and replaces it only when
   neither its exact accuracy nor its line F1 is lower (its own gate).
3. **evaluate** — the candidate on every suite of ``suites`` (:mod:`training.evaluation`):
   greedy pass@1, sampled pass@1 and pass@k, mean reward and the two-attempt metrics; against
   the incumbent, the paired per-task difference with its 95% bootstrap interval and p-value.
4. **gate** — on ``gate.suite`` alone (``val``: a split the headline never reports): the
   candidate is promoted when the lower end of the paired interval of (candidate − incumbent)
   on ``gate.metric`` is above ``-gate.margin`` (non-inferiority); the gain is called
   significant when it is above zero (:func:`training.stats.gate`). A promoted candidate (with
   the round's role adapters) is the next round's incumbent; a refused one is kept as a
   checkpoint and nothing else changes.

Round 0 is the starting policy's evaluation on every suite, the bar for round 1. At the end,
:func:`overall` pairs the final incumbent's evaluation with round 0's on every suite.

Rollouts run on ``engine`` (``auto``: vLLM with runtime LoRA on a GPU, compiled vLLM on each
policy's merged weights on CPUs, transformers where vLLM is not installed); training always runs
in this process.

Resumable after a kill at any point: every stage has a fixed name (run ids
``<name>-r<k>-collect`` and ``<name>-r<k>-eval-<suite>[-sampled]``, checkpoint names
``<name>-r<k>-<method>``), and ``state.json`` (under
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
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from autodidact.config import home, merged
from autodidact.errors import ConfigError, NothingToTrainError
from autodidact.types import Trajectory, new_id
from training.evaluation import METRICS, Metric, SuiteEval, compare, headline, submissions, suite_numbers
from training.stats import gate, wilson

if TYPE_CHECKING:
    from agents.llm.vllm_server import MergedPolicyServer, PolicyServer

METHODS = ("sft", "revision", "webrl", "dpo", "score")
STATE_FILE = "state.json"


COLLECT: dict[str, Any] = {
    "split": "train",
    "limit": 40,
    "samples_per_task": 4,
    "max_steps": 2,
    "concurrency": 64,
    "sampling": {"temperature": 0.8, "max_tokens": 128},
}
EVALUATE: dict[str, Any] = {"max_steps": 2, "concurrency": 64, "sampling": {"max_tokens": 128}}
SUITES: list[dict[str, Any]] = [
    {"name": "val", "split": "val"},
    {"name": "test", "split": "test"},
    {"name": "hard", "split": "hard", "samples": 0},
    # far transfer, every round: 40 tasks each (the same 40 every round), greedy
    {"name": "humaneval", "suite": "humaneval", "split": "all", "limit": 40, "task_seed": 0, "samples": 0},
    {"name": "mbpp_plus", "suite": "mbpp_plus", "split": "all", "limit": 40, "task_seed": 0, "samples": 0},
]
# another environment (web) keeps its own steps and answer length (RunConfig's), and is measured
# on its own suite's val and test
CODE_ONLY = ("max_steps", "max_tokens")
OTHER_SUITES: list[dict[str, Any]] = [{"name": "val", "split": "val"}, {"name": "test", "split": "test"}]


def stage_defaults(stage: dict[str, Any], env: str) -> dict[str, Any]:
    """A stage's defaults for ``env``: the code ones as they are, without the code-only fields otherwise."""
    if env == "code":
        return stage
    kept = {k: v for k, v in stage.items() if k not in CODE_ONLY}
    return {**kept, "sampling": {k: v for k, v in stage["sampling"].items() if k not in CODE_ONLY}}


# what `evaluate` may not set: each suite says which tasks and how many samples
_PER_SUITE = ("suite", "split", "limit", "task_seed", "samples_per_task", "run_id", "round", "model")


class CurriculumConfig(BaseModel):
    """New training tasks written by the policy from the ones it failed (:mod:`training.curriculum`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="write, check and collect new tasks each round")
    per_round: int = Field(16, ge=1, description="failed tasks to write new ones from, at most")
    samples: int = Field(2, ge=1, description="tasks written from each failed one")
    value_band: tuple[float, float] = Field(
        (0.05, 0.75), description="keep a task when the critic's success estimate is in this band"
    )


class GateConfig(BaseModel):
    """Which suite and number pick the next incumbent, and how much worse a candidate may look."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str = Field("val", description="the name of the entry of `suites` the gate decides on")
    metric: Metric = Field("sampled", description="sampled pass@1 (needs the suite's samples > 0) or greedy")
    margin: float = Field(
        0.05, ge=0.0, le=1.0, description="promote when the paired 95% lower bound of the gain is above -margin"
    )


class BStarConfig(BaseModel):
    """B-STaR's choice of the round's sampling temperature and samples per task (:mod:`training.bstar`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="probe before each collection and sample at the best settings")
    temperatures: tuple[float, ...] = Field((0.4, 0.8, 1.2), min_length=1, description="the candidates")
    thresholds: tuple[float, ...] = Field(
        (1.0, 0.5), min_length=1, description="reward thresholds a sample is selected at (its share of tests passed)"
    )
    samples: tuple[int, ...] = Field(
        (2, 4, 8), min_length=1, description="candidate samples per task; the probe takes the largest"
    )
    tolerance: float = Field(
        0.05, ge=0.0, lt=1.0, description="the fewest samples whose balance is within this share of the best"
    )
    probe_tasks: int = Field(8, ge=1, description="training tasks in the probe, drawn at random each round")
    n_star: int = Field(4, ge=1, description="distinct correct answers a task needs for full exploration credit")

    @field_validator("samples")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if min(v) < 1:
            raise ValueError(f"samples are counts per task, at least 1: {v}")
        return tuple(sorted(set(v)))


class EvolveConfig(BaseModel):
    """What ``autodidact evolve`` does: the policy, the tasks, the methods and the rounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="the evolve run's name: its dir, run ids and checkpoint names")
    rounds: int = Field(3, ge=1)
    model: str = Field("embedded", description="the policy to start from (any --model spec)")
    env: str = "code"
    suite: str = Field("bundled", description="the suite collected on")
    collect: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,
        description="RunConfig fields for collection (the train split); given ones are merged over the defaults "
        "(another env than code: without max_steps and max_tokens, so the env's own apply)",
    )
    evaluate: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,
        description="RunConfig fields every evaluation run shares (attempts, concurrency, max_tokens); "
        "merged over the defaults; which tasks and samples is each suite's own",
    )
    suites: list[SuiteEval] = Field(
        default_factory=lambda: [SuiteEval.model_validate(s) for s in SUITES],
        description="what every round's candidate is measured on (name, suite, split, limit, samples, temperature); "
        "a suite's default suite is `suite`; another env than code: val and test of `suite`",
    )
    gate: GateConfig = GateConfig()
    fresh_tasks: bool = Field(
        True,
        description="round k collects collect.limit training tasks drawn at random with seed k (false: the first ones)",
    )
    train_from: Literal["incumbent", "base"] = Field(
        "incumbent",
        description="continue the incumbent on the round's data, or retrain from `model` on every round's data so far",
    )
    methods: list[str] = Field(default_factory=lambda: ["sft", "revision"], description=f"from {', '.join(METHODS)}")
    roles: dict[str, list[str]] = Field(
        default_factory=dict, description="a role's own adapter and its data kinds, e.g. {reviewer: [reviewer]}"
    )
    train: dict[str, Any] = Field(
        default_factory=dict, description="trainer settings for every method (TrainingArguments, LoRA, ...)"
    )
    engine: Literal["auto", "transformers", "vllm", "vllm-merged"] = Field(
        "auto",
        description="what runs the rollouts: transformers in process; vllm, one managed vLLM server for "
        "the whole run with each round's LoRA adapter loaded into it by name (for GPUs); vllm-merged, a "
        "compiled vLLM server without LoRA started again on each policy's merged weights (for CPUs); auto: "
        "vllm on a GPU, vllm-merged on CPUs (transformers with role adapters), transformers without vLLM",
    )
    vllm: dict[str, Any] = Field(
        default_factory=dict,
        description="VLLMServerConfig fields for the vllm engines (kv_cache_gb, max_model_len, enforce_eager, ...)",
    )
    bstar: BStarConfig = BStarConfig()
    curriculum: CurriculumConfig = CurriculumConfig()
    trees: dict[str, Any] | None = Field(
        None,
        description="Agent-R's search trees: RunConfig fields of a second collection each round with the mcts "
        "graph on the same tasks (e.g. {graph_options: {simulations: 8}}), whose trees the sft stage learns "
        "from too (revision pairs along a tree, its successes); None: pairs come from the collection's samples",
    )

    @model_validator(mode="before")
    @classmethod
    def _suites_of_the_env(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("env", "code") != "code" and "suites" not in data:
            return {**data, "suites": OTHER_SUITES}
        return data

    @field_validator("collect", "evaluate", mode="before")
    @classmethod
    def _over_defaults(cls, v: Any, info: ValidationInfo) -> Any:
        # so that `--set collect.concurrency=64` changes that one field, not the whole stage
        stage = COLLECT if info.field_name == "collect" else EVALUATE
        return merged(stage_defaults(stage, info.data.get("env", "code")), v) if isinstance(v, dict) else v

    @field_validator("evaluate")
    @classmethod
    def _shared_fields_only(cls, v: dict[str, Any]) -> dict[str, Any]:
        fixed = sorted(k for k in v if k in _PER_SUITE)
        if fixed:
            raise ValueError(
                f"evaluate: {fixed} are set per suite: list what to measure in `suites` "
                "(e.g. suites: [{name: test, split: test, limit: 20, samples: 4}])"
            )
        return v

    @field_validator("suites")
    @classmethod
    def _named_once(cls, v: list[SuiteEval]) -> list[SuiteEval]:
        names = [s.name for s in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if not v or twice:
            raise ValueError(f"suites: give at least one, each with its own name (twice: {twice})")
        return v

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

    @model_validator(mode="after")
    def _merged_engine_has_no_roles(self) -> EvolveConfig:
        if self.engine == "vllm-merged" and self.roles:
            raise ValueError(
                f"engine: vllm-merged serves one policy at a time, and roles {sorted(self.roles)} have adapters "
                "of their own: use engine: vllm (runtime LoRA) or transformers"
            )
        return self

    @model_validator(mode="after")
    def _gate_suite_is_measured(self) -> EvolveConfig:
        suite = next((s for s in self.suites if s.name == self.gate.suite), None)
        if suite is None:
            raise ValueError(f"gate.suite {self.gate.suite!r} is not one of suites: {[s.name for s in self.suites]}")
        if self.gate.metric == "sampled" and suite.samples == 0:
            raise ValueError(f"gate.metric sampled needs samples > 0 in suite {suite.name!r} (or gate.metric: greedy)")
        return self

    def run_config(self, stage: dict[str, Any], **fields: Any) -> Any:
        """A :class:`~agents.rollout.RunConfig` for a stage (collect or evaluate)."""
        from agents.rollout import RunConfig
        from autodidact.config import validate

        return validate(RunConfig, {"env": self.env, "suite": self.suite, **stage, **fields}, source="evolve")


# --- the numbers the gate and the report use ----------------------------------------------------


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
        self._server: PolicyServer | MergedPolicyServer | None = None  # the vllm engines' server
        self.engine: str = self.state.get("engine") or self._engine()  # auto is resolved once per run
        self.state["engine"] = self.engine

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
        name and any other adapter is unloaded, with no restart. ``engine: vllm-merged``: one
        compiled server at a time, started again on ``spec``'s merged weights when the policy changes.
        """
        roles = dict(roles or {})
        if self.engine == "transformers":
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

    def _engine(self) -> str:
        """``config.engine``, with ``auto`` resolved: vllm on a GPU, vllm-merged on CPUs (transformers
        when roles have adapters), transformers where vLLM is not installed."""
        if self.config.engine != "auto":
            return self.config.engine
        import torch

        from agents.llm.vllm_server import vllm_python
        from autodidact.errors import ModelLoadError

        try:
            vllm_python()
        except ModelLoadError:
            return "transformers"
        if torch.cuda.is_available():
            return "vllm"
        return "transformers" if self.config.roles else "vllm-merged"

    def _start_server(self) -> PolicyServer | MergedPolicyServer:
        from agents.llm.base import VLLMServerConfig
        from agents.llm.vllm_server import MergedPolicyServer, PolicyServer
        from training.checkpoints import find_checkpoint

        ckpt = find_checkpoint(self.config.model)
        base = ckpt.load_spec()[0] if ckpt is not None else self.config.model
        if self.engine == "vllm":
            self.log(f"[evolve {self.name}] starting a vLLM server on {base} (LoRA adapters loaded per round)")
            server: PolicyServer | MergedPolicyServer = PolicyServer.start(base, **self.config.vllm)
        else:
            self.log(f"[evolve {self.name}] vLLM without LoRA on {base}: each policy served from merged weights")
            fields = {"enforce_eager": False, **self.config.vllm}  # compiled: one start a policy pays for itself
            server = MergedPolicyServer(VLLMServerConfig(model=base, **fields))
        self._server = server
        return server

    def stop_server(self) -> None:
        """Stop the server of the vllm engines (if one was started)."""
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
            if self.engine == "vllm-merged":  # the cores and memory go to training; a new policy restarts it anyway
                self.stop_server()
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
            self.evaluate_all(0, c.model, {})
            for k in range(1, c.rounds + 1):
                self.round(k)
                self.report()
        finally:
            self.stop_server()
        self.state["finished"] = True
        self.save()
        self.report()
        return self.state

    def evaluate_all(self, k: int, model: str, roles: dict[str, str]) -> dict[str, dict[str, Any]]:
        """Round ``k``'s evaluation of ``model`` on every suite, the gate's first."""
        c = self.config
        ordered = sorted(c.suites, key=lambda s: s.name != c.gate.suite)
        return {s.name: self.stage(f"r{k}/eval/{s.name}", partial(self.measure, s, model, roles, k)) for s in ordered}

    def measure(self, suite: SuiteEval, model: str, roles: dict[str, str], k: int) -> dict[str, Any]:
        """``model`` on ``suite``: a greedy run and, with samples, a sampled one; their numbers."""
        shared = {**self.config.evaluate, **suite.run_fields()}
        sampling = dict(shared.get("sampling") or {})
        greedy_id = f"{self.name}-r{k}-eval-{suite.name}"
        self.rollout(greedy_id, {**shared, "sampling": {**sampling, "temperature": 0.0}}, model, roles, k)
        sampled: list[Trajectory] = []
        runs = [greedy_id]
        if suite.samples:
            sampled_id = f"{greedy_id}-sampled"
            stage = {
                **shared,
                "samples_per_task": suite.samples,
                "sampling": {**sampling, "temperature": suite.temperature},
            }
            self.rollout(sampled_id, stage, model, roles, k)
            sampled = self.episodes(sampled_id)
            runs.append(sampled_id)
        return {"model": model, "runs": runs, **suite_numbers(self.episodes(greedy_id), sampled)}

    def probe(self, k: int, model: str, roles: dict[str, str]) -> dict[str, Any]:
        """B-STaR's probe: the same few training tasks sampled at each candidate temperature
        (one attempt each); exploration, exploitation and the balance score per temperature and
        threshold, the chosen temperature, and the samples per task the balance asks for
        (:mod:`training.bstar`)."""
        from training.bstar import Sample, balance_score, choose, exploitation, exploration, samples_needed

        b = self.config.bstar
        probe: dict[float, list[list[Sample]]] = {}
        for t in b.temperatures:
            run_id = f"{self.name}-r{k}-probe-t{t:g}"
            stage = {
                **self.config.collect,
                "limit": b.probe_tasks,
                "task_seed": 1000 + k,  # other tasks than any round's collection draw (seed k)
                "samples_per_task": max(b.samples),
                "max_steps": 1,
                "sampling": {**self.config.collect.get("sampling", {}), "temperature": t},
            }
            self.rollout(run_id, stage, model, roles, k)
            per_task: dict[str, list[Sample]] = {}
            for ep in sorted(self.episodes(run_id), key=lambda e: e.started_at):  # "first k": by start
                submitted = submissions(ep)
                text = submitted[0].action.text if submitted and submitted[0].action is not None else ""
                per_task.setdefault(ep.task.id, []).append(Sample(text, ep.reward, ep.success))
            probe[t] = list(per_task.values())
        chosen = choose(probe, b.thresholds, b.n_star)
        n, by_n = samples_needed(probe[chosen.temperature], chosen.threshold, b.n_star, b.samples, b.tolerance)
        curves = [
            {
                "temperature": t,
                **exploration(tasks),
                "exploitation": {f"{th:g}": exploitation(tasks, th) for th in b.thresholds},
                "balance": {f"{th:g}": balance_score(tasks, th, b.n_star) for th in b.thresholds},
            }
            for t, tasks in probe.items()
        ]
        self.log(
            f"[evolve {self.name}] round {k}: B-STaR chose temperature {chosen.temperature:g} and {n} samples "
            f"per task (threshold {chosen.threshold:g}, balance {chosen.score:.3f})"
        )
        return {
            "temperature": chosen.temperature,
            "threshold": chosen.threshold,
            "score": chosen.score,
            "samples_per_task": n,
            "balance_by_samples": {str(m): v for m, v in by_n.items()},
            "curves": curves,
        }

    def round(self, k: int) -> None:
        c = self.config
        incumbent = dict(self.state["incumbent"])
        model, roles = incumbent["model"], dict(incumbent["roles"])
        collect_id = f"{self.name}-r{k}-collect"
        collect = {**c.collect, "task_seed": k} if c.fresh_tasks else dict(c.collect)
        if c.bstar.enabled:
            chosen = self.stage(f"r{k}/bstar", partial(self.probe, k, model, roles))
            collect["sampling"] = {**collect.get("sampling", {}), "temperature": chosen["temperature"]}
            collect["samples_per_task"] = chosen["samples_per_task"]
        self.stage(f"r{k}/collect", lambda: self.rollout(collect_id, collect, model, roles, k))
        runs = [collect_id]
        if c.trees is not None and "revision" in c.methods:
            trees_id = f"{self.name}-r{k}-trees"
            searched = {**collect, "samples_per_task": 1, "graph": "mcts", **c.trees}
            self.stage(f"r{k}/trees", lambda: self.rollout(trees_id, searched, model, roles, k))
            runs.append(trees_id)
        if c.curriculum.enabled:
            from training.curriculum import evolve_curriculum

            made = self.stage(f"r{k}/curriculum", partial(evolve_curriculum, self, k, model, roles))
            if made.get("run"):
                runs.append(made["run"])
        earlier = [f"{self.name}-r{j}-collect" for j in range(1, k)]
        if c.train_from == "base":  # every round's data so far, from the starting model
            earlier_made = [f"{self.name}-r{j}-curriculum" for j in range(1, k) if self._made(j)]
            runs, candidate = [*earlier, *earlier_made, *runs], c.model
        else:
            candidate = model

        sft_kinds = [m if m == "revision" else "success" for m in c.methods if m in ("sft", "revision")]
        plan: list[tuple[str, str, dict[str, Any]]] = []
        if sft_kinds:
            plan.append(("sft", "sft", {"data": sft_kinds}))
        if "webrl" in c.methods:
            plan.append(("webrl", "webrl", {"replay_run": earlier or None}))
        if "dpo" in c.methods:
            plan.append(("dpo", "dpo", {}))
        if "score" in c.methods:
            plan.append(("score", "score", {"run": [collect_id], "stage": 1 if k == 1 else 2}))
        for method, tag, fields in plan:
            name = f"{self.name}-r{k}-{tag}"
            work = partial(self.train, method, name, **{"run": runs, "model": candidate, **fields})
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
            judged = self.stage(f"r{k}/world_model", partial(self.world_model, before_spec, trained_world_model))
            if not judged.get("promoted"):  # the world model has its own gate: a worse one is not used
                if "world_model" in roles:
                    new_roles["world_model"] = roles["world_model"]
                else:
                    new_roles.pop("world_model")

        if candidate == model and new_roles == roles:
            self.stage(f"r{k}/gate", lambda: {"promoted": False, "reason": "nothing was trained this round"})
            return
        after = self.evaluate_all(k, candidate, new_roles)
        before = {s.name: self.state["stages"][f"r{incumbent.get('round', 0)}/eval/{s.name}"] for s in c.suites}
        self.stage(f"r{k}/gate", partial(self.decide, k, incumbent, candidate, new_roles, before, after))

    def _made(self, j: int) -> bool:
        return bool((self.state["stages"].get(f"r{j}/curriculum") or {}).get("run"))

    def decide(
        self,
        k: int,
        incumbent: dict[str, Any],
        candidate: str,
        roles: dict[str, str],
        before: dict[str, dict[str, Any]],
        after: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        """The gate of round ``k`` on the gate suite, and the paired comparison on every suite."""
        g = self.config.gate
        paired: dict[str, dict[str, Any]] = {}
        for name in after:
            for metric in METRICS:
                d = compare(after[name], before[name], metric)
                if d is not None:
                    paired.setdefault(name, {})[metric] = vars(d)
        diff = compare(after[g.suite], before[g.suite], g.metric)
        assert diff is not None, "the gate suite was measured on no common task"
        decision = gate(diff, g.margin)
        bar, now = headline(before[g.suite], g.metric), headline(after[g.suite], g.metric)
        self.log(
            f"[evolve {self.name}] round {k}: {g.suite} {g.metric} pass@1 {bar:.3f} (incumbent {incumbent['model']}) "
            f"→ {now:.3f} (candidate {candidate}): {decision.reason}"
        )
        if decision.promoted:
            self.state["incumbent"] = {"model": candidate, "roles": roles, "round": k}
        return {
            "promoted": decision.promoted,
            "significant": decision.significant,
            "reason": decision.reason,
            "incumbent": incumbent["model"],
            "candidate": candidate,
            "suite": g.suite,
            "metric": g.metric,
            "before": bar,
            "after": now,
            "paired": paired,
        }

    def world_model(self, before: str, after: str) -> dict[str, Any]:
        """The world model's own gate: next-observation accuracy of the incumbent's world model
        and the new one, on the transitions of round 0's greedy run on the gate suite (tasks no
        round trains on). The new one is promoted when neither its exact accuracy nor its line
        F1 is lower; one that cannot be measured (no transitions) is not."""
        from training.world_model import evaluate_world_model

        runs = [f"{self.name}-r0-eval-{self.config.gate.suite}"]
        try:
            old = evaluate_world_model(before, self.store, runs, limit=32)
        except NothingToTrainError as e:
            return {"skipped": str(e), "promoted": False, "reason": "no held-out transitions to measure it on"}
        new = evaluate_world_model(after, self.store, runs, limit=32)
        promoted = new["exact"] >= old["exact"] and new["line_f1"] >= old["line_f1"]
        reason = "not worse on exact accuracy and line F1" if promoted else "worse than the incumbent's: not used"
        return {
            "model_before": before,
            "model_after": after,
            "before": old,
            "after": new,
            "promoted": promoted,
            "reason": reason,
        }

    def report(self) -> Path:
        from training.report import write_report

        return write_report(self.state, self.dir)

    def summary(self) -> list[str]:
        """One line per round: the gate's numbers and verdict, and the other suites' paired gains;
        then the final incumbent against the start on every suite."""
        lines = []
        for k in range(1, self.config.rounds + 1):
            g = self.state["stages"].get(f"r{k}/gate", {})
            if "after" not in g:
                lines.append(f"round {k}: {g.get('reason', 'not run')}")
                continue
            verdict = "promoted" if g["promoted"] else "refused"
            others = "; ".join(
                f"{name} {metric} {v['mean']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]"
                for name, per in g.get("paired", {}).items()
                if name != g["suite"]
                for metric, v in per.items()
                if metric == ("sampled" if "sampled" in per else "greedy")
            )
            lines.append(
                f"round {k}: {g['suite']} {g['metric']} pass@1 {g['before']:.1%} → {g['after']:.1%} ({verdict}); "
                f"paired gain elsewhere: {others or '–'}"
            )
        k, per_suite = overall(self.state)
        gains = "; ".join(
            f"{name} {metric} {v['before']:.1%} → {v['after']:.1%}, {v['mean']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]"
            for name, per in per_suite.items()
            for metric, v in per.items()
        )
        lines.append(
            f"overall: the policy of round {k} against round 0: {gains}"
            if gains
            else "overall: no round was promoted; the policy is the starting one"
        )
        return lines


def overall(state: dict[str, Any]) -> tuple[int, dict[str, dict[str, Any]]]:
    """The round whose candidate is the incumbent now, and its evaluation against round 0's on
    every suite and metric: pass@1 before and after, and the paired difference (mean, 95% CI,
    p). Empty when no round was promoted. The gate suite's numbers here are biased upward (it
    chose the rounds); every other suite's are not."""
    k = int(state.get("incumbent", {}).get("round", 0))
    stages = state.get("stages", {})
    out: dict[str, dict[str, Any]] = {}
    if k == 0:
        return 0, out
    for key, start in stages.items():
        if not key.startswith("r0/eval/") or f"r{k}/eval/{key[8:]}" not in stages:
            continue
        end = stages[f"r{k}/eval/{key[8:]}"]
        for metric in METRICS:
            d = compare(end, start, metric)
            if d is not None:
                out.setdefault(key[8:], {})[metric] = {
                    "before": headline(start, metric),
                    "after": headline(end, metric),
                    **vars(d),
                }
    return k, out


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
