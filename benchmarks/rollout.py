"""Rollout runner scaling and overhead, against a model server that answers after a fixed delay.

Run: ``.venv/bin/python benchmarks/rollout.py [--delay 0.2] [--steps 4] [--episodes 128]``.

A separate process serves an OpenAI-compatible ``/v1/chat/completions`` (our own
``agents.llm.server`` app) whose model sleeps ``--delay`` seconds and answers a fixed line, so
the server's CPU is not counted as ours. The runner drives the solver graph over an
environment that answers instantly and ends every episode after ``--steps`` actions, through
the HTTP client, and stores every episode in SQLite — the whole framework path except the
model and a real environment. Printed, measured in this one run:

- episodes/s at concurrency 1, 8 and 64 through HTTP, with the episodes' graph checkpoints on
  (the default) and off, and the speed-up over concurrency 1 against the ideal N (target:
  >= 0.8 x N); then 64 at once with the same delay in process (no HTTP);
- framework overhead per step, with an in-process model that answers at once: the run's
  wall time per step (from runs of 2- and 10-step episodes, so that per-episode costs — the
  environment, the store's write — are apart), checkpoints on and off (target: <= 2 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from agents.llm.base import OpenAIConfig
from agents.rollout import RunConfig, run_rollout
from autodidact import registry
from autodidact.types import Completion, Message, Observation, SamplingParams, Task
from environments.base import StepResult
from memory.base import open_store

ANSWER = "```python\ndef f():\n    return 1\n```"


class DelayModel:
    """A ChatModel that answers ``ANSWER`` after ``delay`` seconds (0: at once)."""

    name = "delay"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        self.calls += len(conversations)
        if self.delay:
            await asyncio.sleep(self.delay)
        return [Completion(text=ANSWER, token_ids=(1, 2, 3), logprobs=(-0.1, -0.1, -0.1)) for _ in conversations]

    async def aclose(self) -> None:
        pass


class InstantEnvironment:
    """Answers every action at once; ends the episode after ``steps`` actions (reward 1)."""

    id = "instant"

    def __init__(self, steps: int = 4, **_: object) -> None:
        self.steps = steps
        self.taken = 0

    async def reset(self, task: Task, *, seed: int | None = None) -> Observation:
        self.taken = 0
        return Observation(text=f"Task {task.id}: answer {self.steps} times.")

    async def step(self, action: object) -> StepResult:
        self.taken += 1
        done = self.taken >= self.steps
        return StepResult(
            Observation(text=f"step {self.taken} seen"), 1.0 if done else 0.0, terminated=done, truncated=False
        )

    async def close(self) -> None:
        pass


def serve(port_file: str, delay: float) -> None:
    """The server process: our OpenAI-compatible app over a DelayModel."""
    from agents.llm.server import create_app, running_app

    with running_app(create_app(DelayModel(delay), "delay")) as root:
        Path(port_file).write_text(root)
        while True:
            time.sleep(3600)


async def measure(
    model: object,
    concurrency: int,
    episodes: int,
    steps: int,
    store_path: str,
    *,
    checkpoint: bool = True,
    env: str = "instant",
) -> tuple[float, float]:
    """(episodes/s, mean episode wall seconds) for one rollout."""
    tasks = [Task(id=f"bench/{i}", suite="bench", prompt="p") for i in range(episodes)]
    cfg = RunConfig(env=env, max_steps=steps, concurrency=concurrency, episode_timeout_s=600, checkpoint=checkpoint)
    with open_store(store_path) as store:
        t = time.perf_counter()
        result = await run_rollout(cfg, model, store, tasks=tasks, progress=False)  # type: ignore[arg-type]
        wall = time.perf_counter() - t
    errors = [tr.error for tr in result.trajectories if tr.error]
    if errors:
        raise SystemExit(f"{len(errors)} episodes failed, first: {errors[0]}")
    return episodes / wall, statistics.mean(tr.duration_s for tr in result.trajectories)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=0.2, help="seconds the model server takes per answer")
    ap.add_argument("--steps", type=int, default=4, help="actions per episode")
    ap.add_argument(
        "--episodes",
        type=int,
        default=128,
        help="episodes per concurrency level (at least 8 x N, so ramp-up and tail weigh little)",
    )
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.delay)
        return
    registry.register("environment", "instant", "__main__:InstantEnvironment", steps=args.steps)
    tmp = tempfile.mkdtemp(prefix="autodidact-bench-rollout-")
    os.environ["AUTODIDACT_HOME"] = tmp  # the episodes' graph checkpoints go here
    port_file = os.path.join(tmp, "root")
    server = subprocess.Popen([sys.executable, __file__, "--serve", port_file, "--delay", str(args.delay)])
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(port_file) or not Path(port_file).read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the delay server did not start")
            await asyncio.sleep(0.05)
        root = Path(port_file).read_text()
        client = OpenAIConfig(base_url=root + "/v1", model="delay", concurrency=64, timeout_s=60).build()
        await measure(client, 8, 16, args.steps, os.path.join(tmp, "warm.db"))  # warm up connections, imports
        print(f"model server: {args.delay * 1000:.0f} ms per answer; {args.steps} steps per episode")
        print(f"{'checkpoints':>12}{'concurrency':>12}{'episodes':>10}{'episodes/s':>12}{'speed-up':>10}{'ratio':>7}")
        for checkpoint in (True, False):
            base = 0.0
            for n in (1, 8, 64):
                episodes = max(8 * n, args.episodes) if n > 1 else max(8, args.episodes // 8)
                db = os.path.join(tmp, f"c{n}{checkpoint}.db")
                rate, _ = await measure(client, n, episodes, args.steps, db, checkpoint=checkpoint)
                base = base or rate
                on = "on" if checkpoint else "off"
                print(f"{on:>12}{n:>12}{episodes:>10}{rate:>12.2f}{rate / base:>10.2f}{rate / base / n:>7.2f}")
        await client.aclose()
        delay = DelayModel(args.delay)  # the same model in process: what HTTP costs at 64
        rate, _ = await measure(delay, 64, max(512, args.episodes), args.steps, os.path.join(tmp, "inproc.db"))
        print(f"in process, no HTTP, checkpoints on, concurrency 64: {rate:.2f} episodes/s")
        print("framework overhead per step (in-process instant model; 64 episodes of 2 and of 10 steps):")
        for checkpoint in (True, False):
            seconds = {}
            for steps in (2, 10):
                registry.register("environment", f"instant{steps}", "__main__:InstantEnvironment", steps=steps)
                db = os.path.join(tmp, f"i{steps}{checkpoint}.db")
                rate, _ = await measure(DelayModel(0.0), 1, 64, steps, db, checkpoint=checkpoint, env=f"instant{steps}")
                seconds[steps] = 1 / rate
            per_step = (seconds[10] - seconds[2]) / 8
            fixed = seconds[2] - 2 * per_step
            print(
                f"  checkpoints {'on ' if checkpoint else 'off'}: {per_step * 1000:.2f} ms per step "
                f"+ {fixed * 1000:.2f} ms per episode (environment, store write) (target <= 2 ms per step)"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
