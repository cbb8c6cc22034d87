"""HumanEval+ and MBPP+ (EvalPlus) as task suites, scored the way ``evalplus.evaluate`` scores them.

Each task's hidden tests are EvalPlus's base and plus inputs; the expected outputs come from
running the canonical solution in the sandbox (see :mod:`environments.code.harness`, which
owns the comparison rules). What this module owns is reading the release files and saying,
per task, what EvalPlus's evaluator decides by task name: which special oracle compares the
outputs, how MBPP's JSON inputs become tuples, sets or complex numbers, and which MBPP tasks
are only checked for "not None".

The files are EvalPlus's release files ``HumanEvalPlus.jsonl.gz`` (v0.1.10, 164 tasks) and
``MbppPlus.jsonl.gz`` (v0.2.0, 378 tasks), Apache-2.0 (``data/LICENSE.evalplus``). The package
ships both in ``environments/code/data/`` and checks their SHA-256 (:data:`SHA256`) on every
load, so a damaged or replaced copy is refused. ``$AUTODIDACT_DATASETS/<file>`` (or a suite's
``path`` argument) overrides the shipped copy and is used as given, unchecked: EvalPlus publishes
other versions of both files, and pointing at one is a choice.

Payload of each task: ``entry_point``; ``prefix`` (HumanEval+: the prompt the answer continues;
MBPP+: empty); ``solution`` (the canonical answer as an agent would submit it); ``plus`` (the
harness's EvalPlus data); ``visible_tests`` (HumanEval+: the docstring's examples; MBPP+: the
example assert of the prompt); HumanEval+ also keeps ``test``, HumanEval's original check.

Example:
    >>> tasks = humaneval_plus_suite()  # doctest: +SKIP
    >>> tasks[0].id, tasks[0].payload["entry_point"]
    ('humaneval_plus/HumanEval_0', 'has_close_elements')
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from autodidact.errors import TaskDataError
from autodidact.types import Task
from environments.code.harness import doctest_visible_tests
from environments.tasks import read_jsonl, stable_split

HUMANEVAL_PLUS_FILE = "HumanEvalPlus.jsonl.gz"
MBPP_PLUS_FILE = "MbppPlus.jsonl.gz"
RELEASES = "https://github.com/evalplus/{name}_release/releases"
DATA_DIR = Path(__file__).resolve().parent / "data"  # the shipped release files and their licence
# The shipped files' SHA-256 (HumanEvalPlus v0.1.10, MbppPlus v0.2.0, as EvalPlus released them).
SHA256 = {
    HUMANEVAL_PLUS_FILE: "272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101",
    MBPP_PLUS_FILE: "af43697e8791c4c149bdfd6b489d8b5412507551ac20e28a439f650b8225db63",
}

# What EvalPlus 0.3.1's evaluator decides by entry point (evalplus/eval/__init__.py, _special_oracle.py).
HUMANEVAL_ORACLES = {"find_zero": "find_zero"}  # any root within atol, not the reference's root
MBPP_ORACLES = {
    "are_equivalent": "always",  # Mbpp/164: any output passes
    "sum_div": "or_zero",  # Mbpp/295: the reference's output or 0
    "surface_Area": "surface_area",  # Mbpp/581: or a slant-height reading of "height"
    "digit_distance_nums": "digit_distance",  # Mbpp/558: or the zero-padded reading
    **{
        name: "set_eq"  # the outputs are compared as sets
        for name in (
            "similar_elements",
            "find_char_long",
            "common_in_nested_lists",
            "extract_singly",
            "larg_nnum",
            "intersection_array",
            "find_dissimilar",
            "Diff",
        )
    },
    **{name: "not_none" for name in ("check_str", "text_match_three", "text_starta_endb")},
}

# How MBPP+ task N's JSON inputs are turned into Python values (evalplus/data/mbpp.py).
_MBPP_CONVERSIONS = {
    "tuple_args": (
        2,
        116,
        132,
        143,
        222,
        261,
        273,
        394,
        399,
        421,
        424,
        429,
        470,
        560,
        579,
        596,
        616,
        630,
        726,
        740,
        744,
        809,
    ),
    "tuple_items": (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780),
    "first_tuple_items": (75, 413, 444, 753),
    "second_tuple": (106, 750),
    "first_sets": (115,),
    "float_complex": (124,),
    "first_tuple": (250, 405, 446, 617, 720, 763, 808, 307),
    "tuple_of_tuples": (259, 401, 445),
    "first_nested_tuple": (278,),
    "first_dict_tuple_values": (722,),
    "first_complex": (252,),
    "deep_tuple": (580, 615, 791),
}
MBPP_CONVERSIONS = {number: rule for rule, numbers in _MBPP_CONVERSIONS.items() for number in numbers}


def dataset_path(filename: str, path: str | None = None) -> Path:
    """Where a release file is read from: ``path``, else ``$AUTODIDACT_DATASETS/<file>``, else the shipped copy.

    Example:
        >>> dataset_path(MBPP_PLUS_FILE).relative_to(DATA_DIR.parents[2]).as_posix()  # doctest: +SKIP
        'environments/code/data/MbppPlus.jsonl.gz'
    """
    if path:
        return Path(path)
    if os.environ.get("AUTODIDACT_DATASETS"):
        return Path(os.environ["AUTODIDACT_DATASETS"]) / filename
    return DATA_DIR / filename


def _rows(filename: str, path: str | None) -> tuple[Path, list[dict[str, Any]]]:
    p = dataset_path(filename, path)
    name = "humanevalplus" if filename.startswith("HumanEval") else "mbppplus"
    if not p.is_file():
        raise TaskDataError(
            f"EvalPlus data file {str(p)!r} does not exist: download {filename} from "
            f"{RELEASES.format(name=name)} and set AUTODIDACT_DATASETS to the folder holding it "
            "(or unset AUTODIDACT_DATASETS to use the copy shipped with autodidact)"
        )
    if p == DATA_DIR / filename:
        _verify(p, SHA256[filename], RELEASES.format(name=name))
    rows = read_jsonl(p)
    need = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input")
    for n, row in enumerate(rows, 1):
        missing = [k for k in need if k not in row] if isinstance(row, dict) else list(need)
        if missing:
            raise TaskDataError(f"{p}:{n}: not an EvalPlus row: missing {', '.join(missing)}")
    return p, rows


def _verify(path: Path, expected: str, releases: str) -> None:
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise TaskDataError(
            f"the shipped EvalPlus file {str(path)!r} is damaged or was replaced: its SHA-256 is {actual}, "
            f"the release's is {expected}. Reinstall autodidact (or restore the file from the repository); "
            f"to use another version on purpose, download it from {releases} and set AUTODIDACT_DATASETS "
            "to the folder holding it"
        )


def _plus(row: dict[str, Any], oracle: str, convert: str | None, not_none: bool) -> dict[str, Any]:
    return {
        "reference": row["prompt"] + row["canonical_solution"],  # what EvalPlus runs for the ground truth
        "base_input": json.dumps(row["base_input"]),
        "plus_input": json.dumps(row["plus_input"]),
        "atol": float(row.get("atol") or 0.0),
        "oracle": oracle,
        "convert": convert,
        "output_not_none": not_none,
    }


def _task_id(suite: str, evalplus_id: str) -> str:
    return f"{suite}/{evalplus_id.replace('/', '_')}"


def humaneval_plus_suite(path: str | None = None) -> list[Task]:
    """HumanEval+'s 164 tasks: complete the prompt's function; hidden tests are EvalPlus's inputs.

    Example:
        >>> humaneval_plus_suite()[32].payload["plus"]["oracle"]  # doctest: +SKIP
        'find_zero'
    """
    _, rows = _rows(HUMANEVAL_PLUS_FILE, path)
    tasks = []
    for row in rows:
        task_id = _task_id("humaneval_plus", row["task_id"])
        entry = row["entry_point"]
        payload: dict[str, Any] = {
            "entry_point": entry,
            "prefix": row["prompt"],
            "solution": row["canonical_solution"],
            "plus": _plus(row, HUMANEVAL_ORACLES.get(entry, "exact"), None, False),
            "visible_tests": doctest_visible_tests(row["prompt"], entry),
        }
        if row.get("test"):
            payload["test"] = row["test"]
        prompt = "Complete this Python function:\n```python\n" + row["prompt"] + "```"
        tasks.append(
            Task(id=task_id, suite="humaneval_plus", prompt=prompt, split=stable_split(task_id), payload=payload)
        )
    return tasks


def mbpp_plus_suite(path: str | None = None) -> list[Task]:
    """MBPP+'s 378 tasks: write the function the prompt describes; hidden tests are EvalPlus's inputs.

    Example:
        >>> mbpp_plus_suite()[0].payload["visible_tests"]  # doctest: +SKIP
        ['assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))']
    """
    _, rows = _rows(MBPP_PLUS_FILE, path)
    tasks = []
    for row in rows:
        task_id = _task_id("mbpp_plus", row["task_id"])
        entry = row["entry_point"]
        number = int(str(row["task_id"]).rsplit("/", 1)[-1])
        description, example = _mbpp_prompt(row)
        oracle = MBPP_ORACLES.get(entry, "exact")
        payload = {
            "entry_point": entry,
            "prefix": "",
            "solution": row["canonical_solution"],
            "plus": _plus(row, oracle, MBPP_CONVERSIONS.get(number), oracle == "not_none"),
            "visible_tests": [example] if example else [],
        }
        prompt = description
        if example:
            prompt += f"\nYour code should pass this test:\n```python\n{example}\n```"
        tasks.append(Task(id=task_id, suite="mbpp_plus", prompt=prompt, split=stable_split(task_id), payload=payload))
    return tasks


def _mbpp_prompt(row: dict[str, Any]) -> tuple[str, str | None]:
    """(the task's description, its first example assert) from an MBPP+ prompt (a docstring)."""
    text = row["prompt"].strip()
    for quote in ('"""', "'''"):
        text = text.removeprefix(quote).removesuffix(quote)
    lines = text.strip().splitlines()
    asserts = [line.strip() for line in lines if line.strip().startswith("assert ")]
    if not asserts:
        asserts = [a.strip() for a in str(row.get("assertion", "")).splitlines() if a.strip().startswith("assert ")]
    description = "\n".join(line for line in lines if not line.strip().startswith("assert ")).strip()
    return description, (asserts[0] if asserts else None)
