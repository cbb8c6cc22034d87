"""How the bundled suite is split, and the near-copy measure that keeps the split honest.

The bundled suite (``bundled.jsonl``) has four splits:

- ``train``, ``val`` and ``test`` are drawn at random from one pool of tasks, stratified by
  how often the embedded model solves each task when sampled (:data:`BASE_FILE`, 8 samples at
  T = 0.8), by the reference solution's length and by skill, so the three have the same
  difficulty: a gain on ``test`` after training on ``train`` is in-distribution learning
  (what STaR, Agent-R and WebRL measure). ``val`` is what ``autodidact evolve``'s gate picks
  models on; ``test`` is what the headline reports, and no gate ever sees it.
- ``hard``: the suite's original held-out tasks, longer than the pool's (median 4 body lines
  against 1): far transfer, reported on its own.

Near-copies (two tasks whose prompts, or whose solutions with every name normalized, are too
alike; see :func:`near_copy`) are kept in one split: the pool is cut into groups of near-copies
first and whole groups are dealt out, so no ``val`` or ``test`` task has a twin in ``train``.
Near-copies chain (``last``, ``first``, ``second`` ... make one group of 31 one-line list
tasks), so the largest groups can only go to ``train``; stratifying by the model's success is
what keeps ``train`` from being easier than ``test`` on their account (by skill and length
alone, ``train`` sampled 28% right and ``test`` 12%).

:func:`resplit` computes the assignment from the rows, the base successes and a seed;
``python -m environments.code.splits`` writes it into ``bundled.jsonl`` (the file stores the
result, so loading a suite never recomputes it) and prints each split's statistics.

Example:
    >>> near_copy({"prompt": "Write a Python function `add(a, b)` that returns a + b.",
    ...            "entry_point": "add", "solution": "def add(a, b):\\n    return a + b\\n"},
    ...           {"prompt": "Write a Python function `mul(a, b)` that returns a * b.",
    ...            "entry_point": "mul", "solution": "def mul(a, b):\\n    return a * b\\n"})
    True
"""

from __future__ import annotations

import ast
import builtins
import difflib
import json
import random
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SUITE_FILE = Path(__file__).resolve().parent / "bundled.jsonl"
# the embedded model's sampled successes per task, and the command that measured them
BASE_FILE = Path(__file__).resolve().parent / "bundled_base.json"
POOL_SPLITS = ("train", "val", "test")
FRACTIONS = {"train": 0.5, "val": 0.2, "test": 0.3}
SEED = 20261206
# difflib ratios at or above which two tasks are near-copies: prompts compared as lower-case
# text without the opening "Write a Python function `name(...)` that"; solutions as token
# sequences of the body after renaming every variable, argument and function to v0, v1, ...
PROMPT_SIMILARITY_LIMIT = 0.8
SOLUTION_SIMILARITY_LIMIT = 0.8

_BUILTINS = set(dir(builtins))
_SIGNATURE = re.compile(r"^Write a Python function `[^`]*`\s*(that\s+)?")


def prompt_key(row: dict[str, Any]) -> str:
    """The prompt without its boilerplate opening (which names the function) and without the name elsewhere."""
    text = _SIGNATURE.sub("", row["prompt"])
    return re.sub(rf"\b{re.escape(row['entry_point'])}\b", "f", text).lower()


class _Normalize(ast.NodeTransformer):
    """Renames functions, arguments and variables to v0, v1, ... in order of appearance (builtins and imports kept)."""

    def __init__(self, keep: set[str]) -> None:
        self.keep = keep
        self.names: dict[str, str] = {}

    def _new(self, name: str) -> str:
        if name in self.keep:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.name = self._new(node.name)
        self.generic_visit(node)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self._new(node.arg)
        return node

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self._new(node.id)
        return node


def solution_key(row: dict[str, Any]) -> str:
    """The solution's code (imports dropped) with every non-builtin name normalized."""
    tree = ast.parse(row["solution"])
    imported = {
        (alias.asname or alias.name).split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for alias in n.names
    }
    tree = _Normalize(_BUILTINS | imported).visit(tree)
    code = [n for n in tree.body if not isinstance(n, ast.Import | ast.ImportFrom)]
    return "\n".join(ast.unparse(n) for n in code)


def solution_tokens(row: dict[str, Any]) -> list[str]:
    """The tokens of :func:`solution_key` without the entry function's ``def`` line, which would
    make any two one-line functions look alike."""
    body = [line for line in solution_key(row).splitlines() if not line.startswith("def v0(")]
    return re.findall(r"\w+|[^\w\s]", "\n".join(body))


def similarity(a: str | list[str], b: str | list[str]) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def scores(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """(prompt similarity, solution similarity) of two tasks."""
    return similarity(prompt_key(a), prompt_key(b)), similarity(solution_tokens(a), solution_tokens(b))


def near_copy(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two tasks are near-copies (either score at or above its limit)."""
    p, s = scores(a, b)
    return p >= PROMPT_SIMILARITY_LIMIT or s >= SOLUTION_SIMILARITY_LIMIT


def body_lines(row: dict[str, Any]) -> int:
    """Lines of the reference solution after its ``def`` line (blank lines aside)."""
    return sum(1 for line in row["solution"].splitlines()[1:] if line.strip())


def length_band(lines: float) -> str:
    """The length stratum: one body line, two or three, four or more."""
    return "1" if lines <= 1 else "2-3" if lines <= 3 else "4+"


def near_copy_groups(rows: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Indices of ``rows`` grouped so that near-copies (and their near-copies) share a group."""
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    prompts = [prompt_key(r) for r in rows]
    tokens = [solution_tokens(r) for r in rows]
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if find(i) == find(j):
                continue
            if (
                similarity(prompts[i], prompts[j]) >= PROMPT_SIMILARITY_LIMIT
                or similarity(tokens[i], tokens[j]) >= SOLUTION_SIMILARITY_LIMIT
            ):
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(rows)):
        groups[find(i)].append(i)
    return sorted(groups.values())


def base_rates(path: Path = BASE_FILE) -> dict[str, float]:
    """Task id → the share of the embedded model's samples that solved it (:data:`BASE_FILE`)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {tid: k / data["samples"] for tid, k in data["successes"].items()}


def success_band(rate: float) -> str:
    """The difficulty stratum: never solved, solved by up to a quarter of samples, or more."""
    return "0" if rate == 0 else "low" if rate <= 0.25 else "high"


def resplit(rows: Sequence[dict[str, Any]], base: dict[str, float], seed: int = SEED) -> dict[str, str]:
    """Task id → split: ``hard`` stays ``hard``; the other tasks are dealt into train/val/test.

    Each pool task has a cell (its :func:`success_band` under ``base`` and its
    :func:`length_band`) and a skill; each split should hold its share (:data:`FRACTIONS`) of
    every cell and every skill. Groups of near-copies are dealt whole, largest first (equal
    sizes in an order shuffled with ``seed``), each to the split where it adds least to the
    squared shortfall or excess against those shares (chi-square terms, cells and skills
    alike), so a group too big for ``val`` or ``test`` lands in ``train`` and the tasks after
    it even the cells out.
    """
    out = {r["id"]: "hard" for r in rows if r["split"] == "hard"}
    pool = [r for r in rows if r["split"] != "hard"]
    missing = sorted(r["id"] for r in pool if r["id"] not in base)
    if missing:
        raise ValueError(
            f"no base success for {missing[:5]} ({len(missing)} tasks): measure them into {BASE_FILE.name}"
        )
    keys = [(("cell", success_band(base[r["id"]]), length_band(body_lines(r))), ("skill", r["skill"])) for r in pool]
    sizes = Counter(k for ks in keys for k in ks)
    have = {s: Counter[tuple[str, ...]]() for s in POOL_SPLITS}

    def cost(split: str, group: list[int]) -> float:
        """How much putting ``group`` in ``split`` adds to the split's chi-square against its shares."""
        adds = Counter(k for i in group for k in keys[i])
        total = 0.0
        for k, g in adds.items():
            want = FRACTIONS[split] * sizes[k]
            total += g * (2 * (have[split][k] - want) + g) / want
        return total

    rng = random.Random(seed)
    groups = near_copy_groups(pool)
    rng.shuffle(groups)
    groups.sort(key=len, reverse=True)  # stable: equal sizes keep the shuffled order
    for group in groups:
        ties = {s: rng.random() for s in POOL_SPLITS}  # equal costs: chosen at random
        split = min(POOL_SPLITS, key=lambda s: (round(cost(s, group), 9), ties[s]))
        have[split].update(k for i in group for k in keys[i])
        for i in group:
            out[pool[i]["id"]] = split
    return out


def split_stats(rows: Sequence[dict[str, Any]], base: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Per split: tasks, mean and median body lines, the length bands, the skills and (with
    ``base``) the embedded model's mean sampled success."""
    out = {}
    for split in (*POOL_SPLITS, "hard"):
        mine = [r for r in rows if r["split"] == split]
        lines = [body_lines(r) for r in mine]
        out[split] = {
            "tasks": len(mine),
            "mean_lines": round(statistics.mean(lines), 2) if lines else 0.0,
            "median_lines": statistics.median(lines) if lines else 0,
            "bands": dict(sorted(Counter(length_band(n) for n in lines).items())),
            "skills": dict(sorted(Counter(r["skill"] for r in mine).items())),
        }
        if base is not None and mine:
            out[split]["base_success"] = round(statistics.mean(base[r["id"]] for r in mine), 3)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite ``bundled.jsonl`` with :func:`resplit`'s assignment (or, with ``--check``, only
    say whether it holds it) and print the statistics."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m environments.code.splits", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file differs")
    args = parser.parse_args(argv)
    lines = [line for line in SUITE_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [json.loads(line) for line in lines]
    base = base_rates()
    assignment = resplit(rows, base)
    out = []
    for line, r in zip(lines, rows, strict=True):  # only the split field changes, the rest byte for byte
        old = f'"split": {json.dumps(r["split"])}'
        assert line.count(old) == 1, f"{r['id']}: cannot find its split field"
        out.append(line.replace(old, f'"split": {json.dumps(assignment[r["id"]])}'))
        r["split"] = assignment[r["id"]]
    for split, stats in split_stats(rows, base).items():
        print(split, json.dumps(stats))
    if args.check:
        same = out == lines
        print(f"{SUITE_FILE.name}: {'holds this split' if same else 'differs: run without --check to rewrite it'}")
        return 0 if same else 1
    SUITE_FILE.write_text("".join(line + "\n" for line in out), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
