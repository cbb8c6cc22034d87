"""Agent-R on the embedded model: search trees → revision data → SFT, against plain success SFT.

Run: ``.venv/bin/python benchmarks/agent_r.py [--model embedded] [--tasks 40] [--simulations 6]``.

1. **Collect**: the ``mcts`` graph on the first ``--tasks`` training tasks of the bundled code
   suite, two attempts an episode (a failed submission shows the hidden tests' feedback and the
   solver tries again), ``--simulations`` simulations of ``--branching`` samples at T=0.8.
2. **Train** two LoRA adapters from the same base, same settings (``--epochs``, batch 4):
   ``success`` rows only (every step of a successful path), and Agent-R ``revision`` rows (the
   model itself as the verifier) + ``success`` rows; printed with each: its data counts (trees,
   pairs, cuts the verifier made, rows).
3. **Evaluate** the base and both adapters on the 48 held-out tasks: react graph, two attempts,
   greedy. Printed: tasks solved, solved at the first attempt, solved at the second (recovered
   after failing), mean reward.

Everything lands in a temporary ``$AUTODIDACT_HOME`` (``--home DIR`` reuses one: its trees and
checkpoints are not made again). On 2 cores with the embedded model: collection ~25 minutes
(40 tasks), success SFT ~3 minutes an epoch, Agent-R SFT ~25 minutes an epoch (its rows are
whole multi-turn conversations), each held-out evaluation ~6 minutes. The numbers are for this
model and this data size only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from agents.llm.base import resolve_model
from agents.rollout import RunConfig, run_rollout
from autodidact.types import SamplingParams, Trajectory
from memory.base import TrajectoryQuery, open_store
from training.checkpoints import find_checkpoint
from training.policy import run_job
from training.sft import SFTTrainConfig, prepare_sft


def attempts_to_solve(t: Trajectory) -> int | None:
    """1 or 2: the attempt that solved the task; None: unsolved."""
    tried = [s for s in t.steps if s.role == "solver" and s.observation is not None]
    for i, s in enumerate(tried, 1):
        if s.terminated and s.reward >= 1.0:
            return i
    return None


async def evaluate(spec: str, run_id: str, store_path: str) -> dict[str, str]:
    model = resolve_model(spec).build()
    try:
        with open_store(store_path) as store:
            cfg = RunConfig(
                suite="bundled",
                split="test",
                model=spec,
                run_id=run_id,
                max_steps=2,
                sampling=SamplingParams(temperature=0.0, max_tokens=256),
            )
            start = time.perf_counter()
            result = await run_rollout(cfg, model, store, progress=False)
            seconds = time.perf_counter() - start
    finally:
        await model.aclose()
    eps = result.episodes
    solved = [attempts_to_solve(t) for t in eps]
    return {
        "policy": spec,
        "solved": f"{sum(a is not None for a in solved)}/{len(eps)}",
        "1st attempt": str(solved.count(1)),
        "2nd attempt": str(solved.count(2)),
        "mean reward": f"{sum(t.reward for t in eps) / len(eps):.3f}",
        "seconds": f"{seconds:.0f}",
    }


def show(rows: list[dict[str, str]]) -> None:
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(r[k].ljust(widths[k]) for k in keys), flush=True)


async def collect(args: argparse.Namespace, db: str) -> None:
    """Search trees on the training tasks (skipped when the store already has them)."""
    with open_store(db) as store:
        if store.get_run("trees") is None:
            model = resolve_model(args.model).build()
            try:
                cfg = RunConfig(
                    suite="bundled",
                    split="train",
                    limit=args.tasks,
                    model=args.model,
                    run_id="trees",
                    graph="mcts",
                    max_steps=2,
                    graph_options={"simulations": args.simulations, "branching": args.branching},
                )
                await run_rollout(cfg, model, store, progress=False)
            finally:
                await model.aclose()
        paths = store.query(TrajectoryQuery(run_id="trees"))
    solved = {t.task.id for t in paths if t.success}
    print(f"collect: {len(paths)} paths over {len({t.task.id for t in paths})} tasks, {len(solved)} solved", flush=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--tasks", type=int, default=40, help="training tasks searched")
    ap.add_argument("--simulations", type=int, default=6)
    ap.add_argument("--branching", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--home", help="reuse this $AUTODIDACT_HOME: its trees and checkpoints are not made again")
    args = ap.parse_args()

    home = Path(args.home or tempfile.mkdtemp(prefix="agent-r-"))
    os.environ["AUTODIDACT_HOME"] = str(home)
    db = str(home / "agent_r.db")
    print(f"home {home}", flush=True)
    start = time.perf_counter()
    await collect(args, db)

    trained = []
    for name, data in (("success-sft", ["success"]), ("agent-r-sft", ["revision", "success"])):
        name = f"{name}-e{args.epochs:g}"
        ckpt = find_checkpoint(name)
        if ckpt is None:
            cfg = SFTTrainConfig(
                run="trees",
                model=args.model,
                data=data,
                checkpoint_name=name,
                num_train_epochs=args.epochs,
                per_device_train_batch_size=4,
                disable_tqdm=True,
            )
            with open_store(db) as store:
                ckpt = await asyncio.to_thread(lambda cfg=cfg, store=store: run_job(prepare_sft(cfg, store)))
        m = ckpt.metrics
        print(
            f"{name}: {m.examples} rows, {m.steps} steps, loss {m.loss_before:.3f} -> {m.loss_after:.3f}, "
            f"{m.seconds:.0f} s; data {ckpt.datasets[0].counts}",
            flush=True,
        )
        trained.append(name)

    rows = []
    for spec in (args.model, *trained):
        rows.append(await evaluate(spec, f"eval-{spec}", db))
        print(f"evaluated {spec}", flush=True)
    print("\nheld-out (48 tasks, two attempts, greedy):")
    show(rows)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
