"""Two ``autodidact evolve`` runs (arms) of one store, paired task by task on each suite.

For each suite both arms measured: the round-0 policy (the first arm's), the first arm's
round-``--round`` policy and the second arm's, scored per task (the share of a task's episodes
that succeeded: 0/1 for greedy), with the paired bootstrap (:func:`training.stats.paired_bootstrap`,
95% intervals) of second arm against first and of each against round 0. Use it for ablations:
the same config with one option changed, each run under its own ``name``.

Run (the README's Agent-R trees measurement, in one ``AUTODIDACT_HOME``):

    .venv/bin/python benchmarks/evolve_arms.py ars art
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from memory.base import TrajectoryQuery, open_store
from training.stats import paired_bootstrap


def scores(run: str) -> dict[str, float]:
    """Each task's share of successful episodes in ``run`` (main trajectories only)."""
    got: dict[str, list[bool]] = defaultdict(list)
    with open_store() as store:
        for t in store.query(TrajectoryQuery(run_id=run)):
            if t.parent_id is None:
                got[t.task.id].append(t.success)
    return {task: sum(v) / len(v) for task, v in got.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="the reference arm's evolve name")
    parser.add_argument("second", help="the arm compared with it")
    parser.add_argument("--round", type=int, default=1, help="the round whose policies are compared")
    parser.add_argument("--suites", nargs="+", default=["val", "test"])
    args = parser.parse_args()
    a, b, k = args.first, args.second, args.round
    for suite in args.suites:
        base, one, two = (scores(f"{arm}-r{r}-eval-{suite}") for arm, r in ((a, 0), (a, k), (b, k)))
        tasks = sorted(set(base) & set(one) & set(two))
        if not tasks:
            print(f"{suite}: no task measured by both arms")
            continue
        total = {name: sum(d[t] for t in tasks) for name, d in (("round 0", base), (a, one), (b, two))}
        print(f"{suite}: {len(tasks)} tasks; " + ", ".join(f"{n} {v:g}" for n, v in total.items()))
        for name, high, low in ((f"{b} - {a}", two, one), (f"{a} - round 0", one, base), (f"{b} - round 0", two, base)):
            print(f"  {name}: {paired_bootstrap([high[t] for t in tasks], [low[t] for t in tasks])}")


if __name__ == "__main__":
    main()
