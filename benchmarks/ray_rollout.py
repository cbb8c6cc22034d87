"""Ray against the asyncio runner on one host: the same rollout, episodes per second.

Run: ``.venv/bin/python benchmarks/ray_rollout.py [--tasks 211] [--samples 4] [--concurrency 16] [--delay 0]``.

The workload is real except the model: bundled code tasks in the process sandbox, the react
graph with checkpoints, every episode stored in SQLite, and a model that answers each task's
reference solution after ``--delay`` seconds (0: at once, so the framework and the sandbox are
all the work; 0.2: a model server's pace). Side by side in one run, ``--repeat`` times in turn:

- ``asyncio``: :func:`agents.rollout.run_rollout` in this process, ``--concurrency`` episodes at once;
- ``ray xN``: :func:`agents.cluster.run_rollout_ray` on a local Ray (started once, its start
  printed apart) with N drivers sharing the same total concurrency, and with N drivers plus N
  environment workers. Ray's times include starting the actors (about a second each).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

from agents.cluster import RayConfig, run_rollout_ray
from agents.rollout import RunConfig, close_shared_workers, run_rollout
from autodidact.types import Completion, Message, SamplingParams
from environments.tasks import load_suite
from memory.base import open_store


class SolutionModel:
    """Answers each bundled task with its reference solution after ``delay`` seconds."""

    name = "solution"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.answers = {
            t.prompt: f"```python\n{t.payload['prefix']}{t.payload['solution']}\n```" for t in load_suite("bundled")
        }

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        if self.delay:
            await asyncio.sleep(self.delay)
        out = []
        for conv in conversations:
            text = next((a for p, a in self.answers.items() if p in conv[-1].content), "no answer")
            out.append(Completion(text=text))
        return out

    async def aclose(self) -> None:
        pass


class Factory:
    """A picklable maker of the model for Ray's drivers."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __call__(self) -> SolutionModel:
        return SolutionModel(self.delay)


async def asyncio_run(cfg: RunConfig, tasks: list, delay: float, db: str) -> float:  # type: ignore[type-arg]
    with open_store(db) as store:
        t = time.perf_counter()
        result = await run_rollout(cfg, SolutionModel(delay), store, tasks=tasks, progress=False)
        wall = time.perf_counter() - t
    await close_shared_workers()
    check(result.episodes)
    return wall


def check(episodes: list) -> None:  # type: ignore[type-arg]
    failed = [t.error or "wrong" for t in episodes if not t.success]
    if failed:
        raise SystemExit(f"{len(failed)} episodes failed, first: {failed[0]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=211, help="bundled tasks (211: all)")
    ap.add_argument("--samples", type=int, default=4, help="episodes per task")
    ap.add_argument("--concurrency", type=int, default=16, help="episodes in flight, in total")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds the model takes per answer")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="autodidact-bench-ray-")
    os.environ["AUTODIDACT_HOME"] = tmp
    cpus = os.cpu_count() or 1
    tasks = load_suite("bundled", split="all")[: args.tasks]
    episodes = len(tasks) * args.samples
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    t = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    print(f"{episodes} episodes (code, process sandbox, react, SQLite), model delay {args.delay:g} s, {cpus} CPUs")
    print(f"ray.init (local): {time.perf_counter() - t:.1f} s, not counted below")
    print(f"{'runner':<22}{'wall s':>9}{'episodes/s':>12}{'vs asyncio':>12}")
    try:
        for rep in range(args.repeat):
            base = 0.0
            for name, drivers, workers in [
                ("asyncio", 0, 0),
                ("ray x1", 1, 0),
                ("ray x2", 2, 0),
                ("ray x2 + 2 env", 2, 2),
            ]:
                db = os.path.join(tmp, f"{rep}-{drivers}-{workers}.db")
                if drivers == 0:
                    cfg = RunConfig(concurrency=args.concurrency, samples_per_task=args.samples)
                    wall = asyncio.run(asyncio_run(cfg, tasks, args.delay, db))
                else:
                    share = cpus / (drivers + workers)
                    ray_cfg = RayConfig(drivers=drivers, env_workers=workers, driver_cpus=share, env_worker_cpus=share)
                    cfg = RunConfig(concurrency=max(1, args.concurrency // drivers), samples_per_task=args.samples)
                    t = time.perf_counter()
                    result = run_rollout_ray(
                        cfg, db, ray_cfg, tasks=tasks, model_factory=Factory(args.delay), progress=False
                    )
                    wall = time.perf_counter() - t
                    check(result.episodes)
                rate = episodes / wall
                base = base or rate
                print(f"{name:<22}{wall:>9.1f}{rate:>12.2f}{rate / base:>12.2f}")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
