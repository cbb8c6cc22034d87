"""What mcts searches cost and found, counted per tree, each step once; paired across searches.

For each stored run of ``--graph mcts`` and each task: the **model calls** (expansions: one batch
of ``branching`` samples each, counted as the distinct nodes that have a taken child, the root
included), the **steps taken** (distinct nodes), the paths, the correct paths and whether the
task was solved. The first run is the reference: every other run is compared with it on the
tasks both searched, as a paired bootstrap over tasks (2,000 resamples, 95% intervals) of the
ratio of correct paths per model call and of the difference in tasks solved.

With ``--write-rest N SEED`` it writes instead the ``train`` tasks of the bundled suite that a
draw of ``N`` with ``SEED`` (``--limit N --set task_seed=SEED``) leaves out, as a ``.jsonl`` suite
(``--suite FILE``): tasks a process reward model fitted on the draw's trees never saw.

Run (the README's ReST-MCTS* measurement, in one ``AUTODIDACT_HOME``):

    .venv/bin/python benchmarks/search_budget.py --write-rest 40 7 rest.jsonl
    .venv/bin/python benchmarks/search_budget.py plain1 guided2
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from environments.tasks import load_suite
from memory.base import TrajectoryQuery, open_store


@dataclass
class Search:
    """One task's tree."""

    nodes: set[tuple[str, ...]] = field(default_factory=set)
    paths: int = 0
    correct: int = 0

    @property
    def calls(self) -> int:
        return len({n[:-1] for n in self.nodes})


def searches(run: str) -> dict[str, Search]:
    """Each task's tree in ``run``, keyed by the task's id without its suite."""
    with open_store() as store:
        found = store.query(TrajectoryQuery(run_id=run))
    out: dict[str, Search] = {}
    for t in found:
        s = out.setdefault(t.task.id.split("/", 1)[-1], Search())
        answers = tuple(st.completion or st.error or "" for st in t.steps)
        s.nodes.update(answers[:k] for k in range(1, len(answers) + 1))
        s.paths += 1
        s.correct += bool(t.success)
    return out


def compare(ref: dict[str, Search], other: dict[str, Search], tasks: Sequence[str]) -> tuple[float, float]:
    """(correct per call of ``other`` / of ``ref``, tasks solved difference in points) on ``tasks``."""

    def per_call(d: dict[str, Search]) -> float:
        return sum(d[t].correct for t in tasks) / max(1, sum(d[t].calls for t in tasks))

    solved = sum((other[t].correct > 0) - (ref[t].correct > 0) for t in tasks)
    base = per_call(ref)
    return (per_call(other) / base if base else math.nan), 100 * solved / len(tasks)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", help="mcts runs; the first is the reference")
    parser.add_argument("--write-rest", nargs=3, metavar=("N", "SEED", "FILE"))
    args = parser.parse_args(argv)
    if args.write_rest:
        n, seed, path = int(args.write_rest[0]), int(args.write_rest[1]), Path(args.write_rest[2])
        keys = ("entry_point", "test", "prefix", "solution", "skill", "visible_tests")
        rest = load_suite("bundled", split="train", seed=seed)[n:]
        rows = [
            {"id": t.id.split("/", 1)[1], "prompt": t.prompt, "split": "train"} | {k: t.payload[k] for k in keys}
            for t in rest
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{len(rows)} tasks left out of the draw written to {path}")
        return
    if not args.runs:
        parser.error("name at least one run")
    data = {r: searches(r) for r in args.runs}
    tasks = sorted(set.intersection(*(set(d) for d in data.values())))
    print(f"{len(tasks)} tasks searched by every run")
    print(f"{'run':14} {'calls':>6} {'steps':>6} {'paths':>6} {'correct':>8} {'per call':>9} {'solved':>7}")
    for r, d in data.items():
        calls, correct = sum(d[t].calls for t in tasks), sum(d[t].correct for t in tasks)
        steps, paths = sum(len(d[t].nodes) for t in tasks), sum(d[t].paths for t in tasks)
        solved = sum(d[t].correct > 0 for t in tasks)
        print(f"{r:14} {calls:6} {steps:6} {paths:6} {correct:8} {correct / max(1, calls):9.3f} {solved:7}")
    rng = random.Random(0)
    ref = data[args.runs[0]]
    for r in args.runs[1:]:
        ratio, solved = compare(ref, data[r], tasks)
        boots = [compare(ref, data[r], [rng.choice(tasks) for _ in tasks]) for _ in range(2000)]
        ratios = sorted(x for x, _ in boots if not math.isnan(x))
        points = sorted(y for _, y in boots)

        def ci(xs: list[float], fmt: str = ".2f") -> str:
            return f"[{xs[int(0.025 * (len(xs) - 1))]:{fmt}}, {xs[int(0.975 * (len(xs) - 1))]:{fmt}}]"

        print(
            f"{r} vs {args.runs[0]}: correct per call x{ratio:.2f} {ci(ratios)}; solved {solved:+.1f} points {ci(points, '+.1f')}"
        )


if __name__ == "__main__":
    main()
