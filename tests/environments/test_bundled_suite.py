"""The bundled starter suite is well-formed, its reference solutions pass, its tests bite, and its split is fair.

Reads ``environments/code/bundled.jsonl`` directly (not through the loader) and checks:
the row schema; that every reference solution passes its hidden and visible tests in the real
sandbox; that the hidden tests reject wrong answers (a function returning None, and the
reference with every ``return`` replaced by its first argument); and that the splits are what
:mod:`environments.code.splits` makes: ``train``/``val``/``test`` alike in length, skills and
the embedded model's measured success, ``hard`` longer and harder, and no ``val``, ``test`` or ``hard`` task a near-copy of a training task.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from autodidact.errors import SandboxUnavailableError
from environments.code.splits import (
    BASE_FILE,
    PROMPT_SIMILARITY_LIMIT,
    SOLUTION_SIMILARITY_LIMIT,
    base_rates,
    body_lines,
    length_band,
    prompt_key,
    resplit,
    scores,
    similarity,
    solution_key,
    solution_tokens,
    split_stats,
    success_band,
)
from environments.sandbox.base import ExecRequest
from environments.sandbox.process import ProcessSandbox
from environments.tasks import SPLITS

SUITE = Path(__file__).resolve().parents[2] / "environments" / "code" / "bundled.jsonl"
FIELDS = {"id", "skill", "split", "prompt", "entry_point", "solution", "test", "visible_tests"}
MAIN_SKILLS = {"strings", "lists", "dicts", "arithmetic", "parsing", "recursion"}
SKILLS = MAIN_SKILLS | {"sets", "logic", "sorting"}
MIN_TASKS = 160
MIN_PER_MAIN_SKILL = 20
CONCURRENCY = 4


def _rows() -> list[dict[str, Any]]:
    with SUITE.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


ROWS = _rows()
BY_ID = {r["id"]: r for r in ROWS}


def _check_def(row: dict[str, Any]) -> ast.FunctionDef:
    tree = ast.parse(row["test"])
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    assert len(defs) == 1, f"{row['id']}: test must define check(candidate) once"
    return defs[0]


# ---------------------------------------------------------------- schema


def test_rows_have_the_schema() -> None:
    assert len(ROWS) >= MIN_TASKS
    ids = [r["id"] for r in ROWS]
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    for row in ROWS:
        rid = row.get("id")
        assert set(row) == FIELDS, f"{rid}: fields {sorted(row)}"
        for field in FIELDS - {"visible_tests"}:
            assert isinstance(row[field], str) and row[field].strip(), f"{rid}: {field} must be a non-empty string"
        assert re.fullmatch(r"[a-z][a-z0-9_]*", rid), f"{rid}: id must be snake_case"
        assert "/" not in rid
        assert row["skill"] in SKILLS, f"{rid}: unknown skill {row['skill']}"
        assert row["split"] in SPLITS, f"{rid}: split {row['split']}"
        name = row["entry_point"]
        assert row["prompt"].startswith(f"Write a Python function `{name}("), f"{rid}: prompt must name `{name}(...)`"
        assert ">>>" not in row["prompt"] and "==" not in row["prompt"], f"{rid}: examples belong in visible_tests"

        solution = ast.parse(row["solution"])
        assert any(isinstance(n, ast.FunctionDef) and n.name == name for n in solution.body), (
            f"{rid}: solution does not define {name}"
        )

        check = _check_def(row)
        assert [a.arg for a in check.args.args] == ["candidate"], f"{rid}: check must take (candidate)"
        asserts = check.body
        assert all(isinstance(s, ast.Assert) for s in asserts), f"{rid}: check's body must be only asserts"
        assert len(asserts) >= 3, f"{rid}: only {len(asserts)} hidden asserts"
        assert all(s.lineno == s.end_lineno for s in asserts), f"{rid}: keep each assert on one line"

        visible = row["visible_tests"]
        assert isinstance(visible, list) and 1 <= len(visible) <= 2, f"{rid}: needs 1-2 visible tests"
        for v in visible:
            assert isinstance(v, str)
            body = ast.parse(v).body
            assert len(body) == 1 and isinstance(body[0], ast.Assert), f"{rid}: visible test {v!r} is not one assert"
            calls = {n.func.id for n in ast.walk(body[0]) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            assert name in calls, f"{rid}: visible test {v!r} does not call {name}"
        hidden = {ast.unparse(s).replace("candidate(", f"{name}(") for s in asserts}
        shown = {ast.unparse(ast.parse(v).body[0]) for v in visible}
        assert not shown <= hidden, f"{rid}: the visible tests only repeat hidden ones"


def test_skills_and_splits_are_balanced() -> None:
    per_skill = Counter(r["skill"] for r in ROWS)
    assert {s for s in MAIN_SKILLS if per_skill[s] < MIN_PER_MAIN_SKILL} == set(), per_skill
    for split in ("train", "test", "hard"):
        assert {r["skill"] for r in ROWS if r["split"] == split} == set(per_skill), f"a skill is missing from {split}"
    assert {r["skill"] for r in ROWS if r["split"] == "val"} >= MAIN_SKILLS
    n = Counter(r["split"] for r in ROWS)
    assert n["train"] >= 80 and n["val"] >= 30 and n["test"] >= 48 and n["hard"] == 48, n


def test_the_splits_are_the_ones_resplit_makes() -> None:
    """The stored assignment is reproducible: the seed and the rows give the file's splits."""
    assert resplit(ROWS, base_rates()) == {r["id"]: r["split"] for r in ROWS}


def test_base_successes_cover_every_task_and_say_how_they_were_measured() -> None:
    data = json.loads(BASE_FILE.read_text(encoding="utf-8"))
    assert set(data["successes"]) == set(BY_ID)
    assert all(0 <= k <= data["samples"] for k in data["successes"].values())
    assert "autodidact run" in data["command"] and f"--samples {data['samples']}" in data["command"]
    with pytest.raises(ValueError, match="no base success for"):
        resplit(ROWS, {})


def test_train_val_and_test_are_drawn_alike_and_hard_is_harder() -> None:
    stats = split_stats(ROWS)
    pool = [r for r in ROWS if r["split"] != "hard"]
    share = {b: sum(length_band(body_lines(r)) == b for r in pool) / len(pool) for b in ("1", "2-3", "4+")}
    for split in ("train", "val", "test"):
        mine = stats[split]
        assert abs(mine["mean_lines"] - stats["train"]["mean_lines"]) <= 0.25, (split, mine)
        for band, frac in share.items():  # each length band within 8 points of the pool's share
            assert abs(mine["bands"].get(band, 0) / mine["tasks"] - frac) <= 0.08, (split, band, mine["bands"])
    assert stats["hard"]["median_lines"] >= 3 > stats["test"]["median_lines"]
    assert stats["hard"]["mean_lines"] >= 2 * stats["test"]["mean_lines"]


def test_train_val_and_test_are_alike_in_what_the_base_model_solves() -> None:
    """Each split's mean sampled success and its success bands are within a few points of the
    pool's (agreement on fresh samples, with intervals, is measured in the README); ``hard``
    is far harder."""
    base = base_rates()
    stats = split_stats(ROWS, base)
    pool = [r for r in ROWS if r["split"] != "hard"]
    mean = sum(base[r["id"]] for r in pool) / len(pool)
    share = Counter(success_band(base[r["id"]]) for r in pool)
    for split in ("train", "val", "test"):
        assert abs(stats[split]["base_success"] - mean) <= 0.05, (split, stats[split]["base_success"], mean)
        mine = Counter(success_band(base[r["id"]]) for r in ROWS if r["split"] == split)
        for band, n in share.items():
            assert abs(mine[band] / stats[split]["tasks"] - n / len(pool)) <= 0.05, (split, band, mine)
    assert stats["hard"]["base_success"] <= mean / 4


# ---------------------------------------------------------------- sandbox runs


async def _run_all(programs: dict[str, str]) -> dict[str, Any]:
    """Run each task's program in the sandbox, a few at a time; results by task id."""
    try:
        sandbox = ProcessSandbox()
    except SandboxUnavailableError as e:  # no bubblewrap and no opt-in to an unsafe sandbox
        pytest.skip(f"sandbox unavailable: {e}")
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(tid: str, code: str) -> tuple[str, Any]:
        async with gate:
            return tid, await sandbox.run(ExecRequest(code=code, timeout_s=20.0))

    return dict(await asyncio.gather(*(one(t, c) for t, c in programs.items())))


def _tail(text: str, n: int = 400) -> str:
    return text.strip()[-n:]


async def test_reference_solutions_pass_hidden_and_visible_tests() -> None:
    programs = {
        r["id"]: "\n\n".join([r["solution"], r["test"], f"check({r['entry_point']})", *r["visible_tests"]]) + "\n"
        for r in ROWS
    }
    results = await _run_all(programs)
    failed = {tid: _tail(res.stderr) or f"exit {res.exit_code}" for tid, res in results.items() if not res.ok}
    assert failed == {}, "reference solutions that fail their tests:\n" + "\n".join(
        f"{k}: {v}" for k, v in failed.items()
    )


class _ReturnFirstArgument(ast.NodeTransformer):
    """Replaces every ``return`` of one function (not of functions nested in it) by ``return <first arg>``."""

    def __init__(self, arg: str) -> None:
        self.arg = arg

    def visit_Return(self, node: ast.Return) -> ast.Return:
        return ast.copy_location(ast.Return(value=ast.Name(id=self.arg, ctx=ast.Load())), node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        return node  # a nested helper keeps its returns

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Lambda(self, node: ast.Lambda) -> ast.Lambda:
        return node


def _mutants(row: dict[str, Any]) -> dict[str, str]:
    """Wrong answers the hidden tests must reject, by name."""
    name = row["entry_point"]
    tree = ast.parse(row["solution"])
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    first = (fn.args.posonlyargs + fn.args.args)[0].arg
    mutated = _ReturnFirstArgument(first)
    fn.body = [mutated.visit(stmt) for stmt in fn.body]
    return {
        "returns None": f"def {name}(*args, **kwargs):\n    return None\n",
        "returns its first argument": ast.unparse(ast.fix_missing_locations(tree)) + "\n",
    }


async def test_hidden_tests_reject_wrong_solutions() -> None:
    programs = {}
    for r in ROWS:
        lines = [
            r["test"],
            f"_MUTANTS = {_mutants(r)!r}",
            "for _label, _code in _MUTANTS.items():",
            "    _ns = {}",
            "    try:",
            "        exec(_code, _ns)",
            f"        check(_ns[{r['entry_point']!r}])",
            "    except BaseException:",
            "        continue",
            "    print('SURVIVED:', _label)",
            "print('DONE')",
        ]
        programs[r["id"]] = "\n".join(lines) + "\n"
    results = await _run_all(programs)
    weak = {}
    for tid, res in results.items():
        if not res.ok or "DONE" not in res.stdout:
            weak[tid] = f"the mutant run failed: {_tail(res.stderr) or res.exit_code}"
        elif "SURVIVED" in res.stdout:
            weak[tid] = "; ".join(line for line in res.stdout.splitlines() if line.startswith("SURVIVED"))
    assert weak == {}, "hidden tests that pass a wrong solution:\n" + "\n".join(f"{k}: {v}" for k, v in weak.items())


# ---------------------------------------------------------------- no near-copies across the split


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("add", "multiply"),
        ("to_upper", "to_lower"),
        ("last", "last_char"),
        ("reverse_string", "reverse_list"),
        ("evens", "odds"),
        ("take", "drop"),
        ("fibonacci", "climb_stairs"),
        ("binary_to_int", "hex_to_int"),
        ("char_frequency", "totals_by_key"),
        ("common_elements", "common_keys"),
        ("list_max", "list_min"),
        ("starts_with", "ends_with"),
        ("key_of_max", "most_common"),
    ],
)
def test_near_copy_detector_catches_known_near_copies(a: str, b: str) -> None:
    """Pairs of tasks that are near-copies of each other must trip the thresholds used below.
    (``double``/``square`` do not: ``return v1 * 2`` against ``return v1 * v1`` scores 0.75.)"""
    prompt, solution = scores(BY_ID[a], BY_ID[b])
    assert prompt >= PROMPT_SIMILARITY_LIMIT or solution >= SOLUTION_SIMILARITY_LIMIT, (a, b, prompt, solution)


def test_held_out_tasks_are_not_near_copies_of_training_tasks() -> None:
    train = [r for r in ROWS if r["split"] == "train"]
    test = [r for r in ROWS if r["split"] in ("val", "test", "hard")]
    train_prompts = [(r["id"], prompt_key(r)) for r in train]
    train_solutions = [(r["id"], solution_tokens(r)) for r in train]
    problems = []
    for row in test:
        prompt, solution = prompt_key(row), solution_tokens(row)
        p_score, p_id = max((similarity(prompt, p), tid) for tid, p in train_prompts)
        s_score, s_id = max((similarity(solution, s), tid) for tid, s in train_solutions)
        if p_score >= PROMPT_SIMILARITY_LIMIT:
            problems.append(
                f"{row['id']} ~ {p_id}: prompts {p_score:.2f} alike\n  {prompt}\n  {prompt_key(BY_ID[p_id])}"
            )
        if s_score >= SOLUTION_SIMILARITY_LIMIT:
            problems.append(
                f"{row['id']} ~ {s_id}: solutions {s_score:.2f} alike\n"
                f"{solution_key(row)}\n---\n{solution_key(BY_ID[s_id])}"
            )
    assert problems == [], "held-out tasks too close to training tasks:\n" + "\n".join(problems)
