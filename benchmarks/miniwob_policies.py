"""The scripted MiniWoB++ policies over 20 seeds per task: the full check behind the README's table.

Every policy in :data:`~environments.web.miniwob_policies.MINIWOB` reads only the observation and
acts through the typed actions; each must solve its task on at least 95% of the seeds. This runs
them all (``--seeds`` per task, ``--concurrency`` episodes at once), prints each task's successes
and failures, then the README's table by kind, and exits 1 if a task falls below 95%.
``tests/environments/test_web_policies.py`` runs the same check on fewer seeds in CI.

Run: ``.venv/bin/python benchmarks/miniwob_policies.py [--seeds 20] [--concurrency 4] [--tasks a,b]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time

from environments.evaluate import evaluate
from environments.tasks import load_suite
from environments.web.miniwob_policies import BY_KIND, MINIWOB
from environments.web.policies import ReferencePolicy


async def main(seeds: int, concurrency: int, names: list[str]) -> int:
    tasks = [t for t in load_suite("miniwob") if t.payload["name"] in names]
    seeded = [t.model_copy(update={"payload": {**t.payload, "seed": s}}) for s in range(seeds) for t in tasks]
    start = time.perf_counter()
    outcomes = await evaluate("web", seeded, ReferencePolicy(), concurrency=concurrency, max_steps=20, progress=False)
    took = time.perf_counter() - start
    wins: collections.Counter[str] = collections.Counter()
    for task, outcome in zip(seeded, outcomes, strict=True):
        name = str(task.payload["name"])
        wins[name] += outcome.success
        if not outcome.success:
            print(f"  {name} seed {task.payload['seed']}: {(outcome.detail or '')[:300]!r}")
    for name in names:
        print(f"{name:32s} {wins[name]}/{seeds}")
    print(f"\n{len(seeded)} episodes in {took:.0f} s ({len(seeded) / took:.2f}/s, {concurrency} at once)\n")
    print(f"| kind | tasks covered | success over {seeds} seeds |\n|---|---|---|")
    for kind, group in BY_KIND.items():
        shown = [n for n in group if n in names]
        if shown:
            ok = sum(wins[n] for n in shown)
            lows = [f"{n} {wins[n]}/{seeds}" for n in shown if wins[n] < seeds]
            rate = f"{ok}/{len(shown) * seeds}" + (f" ({', '.join(lows)})" if lows else "")
            print(f"| {kind} | {', '.join(shown)} | {rate} |")
    low = [n for n in names if wins[n] < 0.95 * seeds]
    if low:
        print(f"\nbelow 95%: {', '.join(low)}")
    return 1 if low else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tasks", default="", help="comma-separated MiniWoB++ names (default: every policy's)")
    args = parser.parse_args()
    chosen = [n for n in args.tasks.split(",") if n] or list(MINIWOB)
    sys.exit(asyncio.run(main(args.seeds, args.concurrency, chosen)))
