"""The scripted MiniWoB++ policies solve their tasks from the observation alone.

Each policy in :data:`~environments.web.miniwob_policies.MINIWOB` reads only the observation
(the accessibility tree and the goal) and acts through the typed actions; each must solve its
task in at least 95% of its episodes. The full check is 20 seeds per task (1,480 episodes, about
25 CPU-minutes: more than CI's budget for the whole suite), run by
``benchmarks/miniwob_policies.py``, which also prints the README's table. Here every task runs
``AUTODIDACT_MINIWOB_SEEDS`` seeds (1 unless set: about a minute on 2 idle cores; 20 is the full
check), four episodes at once in one event loop.
"""

from __future__ import annotations

import collections
import os

from environments.evaluate import evaluate
from environments.tasks import load_suite
from environments.web.miniwob import task_names
from environments.web.miniwob_policies import BY_KIND, MINIWOB
from environments.web.policies import ReferencePolicy

SEEDS = int(os.environ.get("AUTODIDACT_MINIWOB_SEEDS", "1"))


def test_policies_cover_at_least_40_miniwob_tasks_of_every_kind() -> None:
    assert len(MINIWOB) >= 40
    assert set(MINIWOB) <= set(task_names())
    assert all(BY_KIND.values()) and sum(len(group) for group in BY_KIND.values()) == len(MINIWOB)


async def test_each_policy_solves_its_task_on_95_percent_of_seeds() -> None:
    tasks = [t for t in load_suite("miniwob") if t.payload["name"] in MINIWOB]
    seeded = [t.model_copy(update={"payload": {**t.payload, "seed": s}}) for s in range(SEEDS) for t in tasks]
    outcomes = await evaluate("web", seeded, ReferencePolicy(), concurrency=4, max_steps=20, progress=False)
    wins: collections.Counter[str] = collections.Counter()
    failures: dict[str, str] = {}
    for task, outcome in zip(seeded, outcomes, strict=True):
        name = str(task.payload["name"])
        wins[name] += outcome.success
        if not outcome.success:
            failures.setdefault(name, f"seed {task.payload['seed']}: {outcome.detail}")
    low = {name: f"{wins[name]}/{SEEDS}; {failures[name]}" for name in MINIWOB if wins[name] < 0.95 * SEEDS}
    assert not low, "\n".join(f"{name}: {why}" for name, why in low.items())
