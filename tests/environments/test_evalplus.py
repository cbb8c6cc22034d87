"""HumanEval+ and MBPP+ load from EvalPlus's release files, shipped in the package and checked
by SHA-256, and score like ``evalplus.evaluate``: canonical solutions pass, mutated ones fail,
and the special oracles (find_zero, set equality, not-None, …) and MBPP's tuple inputs are
honoured. Runs through the real process sandbox."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import environments
from autodidact.errors import TaskDataError
from autodidact.types import Task
from environments.code import evalplus
from environments.code.evalplus import (
    HUMANEVAL_PLUS_FILE,
    MBPP_PLUS_FILE,
    dataset_path,
    humaneval_plus_suite,
    mbpp_plus_suite,
)
from environments.code.harness import TestReport, run_tests
from environments.sandbox.process import ProcessSandbox
from environments.tasks import load_suite


@pytest.fixture(autouse=True)
def _shipped_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests read the copies shipped in the package unless they set AUTODIDACT_DATASETS themselves."""
    monkeypatch.delenv("AUTODIDACT_DATASETS", raising=False)


@pytest.fixture(scope="module")
def he() -> dict[str, Task]:
    return {t.id: t for t in humaneval_plus_suite(str(evalplus.DATA_DIR / HUMANEVAL_PLUS_FILE))}


@pytest.fixture(scope="module")
def mbpp() -> dict[str, Task]:
    return {t.id: t for t in mbpp_plus_suite(str(evalplus.DATA_DIR / MBPP_PLUS_FILE))}


@pytest.fixture
async def sandbox() -> AsyncIterator[ProcessSandbox]:
    box = ProcessSandbox(unsafe=shutil.which("bwrap") is None)
    yield box
    await box.close()


def test_suites_load_with_stable_safe_ids_and_prompts(he: dict[str, Task], mbpp: dict[str, Task]) -> None:
    assert len(he) == 164 and len(mbpp) == 378
    assert list(he)[:2] == ["humaneval_plus/HumanEval_0", "humaneval_plus/HumanEval_1"]
    assert "mbpp_plus/Mbpp_2" in mbpp
    assert all(re.fullmatch(r"[a-z_]+/[A-Za-z]+_\d+", i) for i in [*he, *mbpp])
    assert {t.suite for t in he.values()} == {"humaneval_plus"} and {t.suite for t in mbpp.values()} == {"mbpp_plus"}
    for suite in (he, mbpp):
        held_out = sum(t.split == "test" for t in suite.values())
        assert 0.1 < held_out / len(suite) < 0.3
    first = he["humaneval_plus/HumanEval_0"]
    assert first.prompt.startswith("Complete this Python function:\n```python\nfrom typing import List")
    assert first.prompt.endswith("```") and first.payload["prefix"] in first.prompt
    assert first.payload["visible_tests"][0] == "assert has_close_elements([1.0, 2.0, 3.0], 0.5) == False"
    assert "def check(candidate)" in first.payload["test"]
    two = mbpp["mbpp_plus/Mbpp_2"]
    assert two.prompt.startswith("Write a function to find the shared elements from the given two lists.")
    assert two.payload["visible_tests"] == ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))"]
    assert two.payload["visible_tests"][0] in two.prompt and two.payload["prefix"] == ""
    assert two.payload["plus"]["oracle"] == "set_eq" and two.payload["plus"]["convert"] == "tuple_args"
    assert he["humaneval_plus/HumanEval_32"].payload["plus"]["oracle"] == "find_zero"
    assert load_suite("mbpp_plus", limit=1)[0].id == "mbpp_plus/Mbpp_2"  # registered


def test_a_missing_dataset_says_where_it_looked_and_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TaskDataError, match=r"nowhere\.jsonl\.gz.*does not exist.*evalplus/humanevalplus_release"):
        humaneval_plus_suite(str(tmp_path / "nowhere.jsonl.gz"))
    real = dataset_path(MBPP_PLUS_FILE).resolve()
    monkeypatch.setenv("AUTODIDACT_DATASETS", str(tmp_path))
    with pytest.raises(TaskDataError, match=rf"{re.escape(str(tmp_path))}/MbppPlus\.jsonl\.gz.*AUTODIDACT_DATASETS"):
        mbpp_plus_suite()
    (tmp_path / MBPP_PLUS_FILE).symlink_to(real)  # $AUTODIDACT_DATASETS is where the files are looked for
    assert len(mbpp_plus_suite()) == 378


def test_a_fresh_clone_loads_the_shipped_files_without_any_shared_folder(tmp_path: Path) -> None:
    """The packages copied alone into an empty directory (no ``../shared`` beside them, another
    HOME and cwd, no $AUTODIDACT_DATASETS) load both suites from the package's own data."""
    clone = tmp_path / "clone"
    source = Path(environments.__file__).resolve().parents[1]
    for package in ("autodidact", "environments"):
        shutil.copytree(source / package, clone / package, ignore=shutil.ignore_patterns("__pycache__"))
    script = (
        "import environments.code.evalplus as e\n"
        "print(e.__file__)\n"
        "print(e.dataset_path(e.HUMANEVAL_PLUS_FILE), e.dataset_path(e.MBPP_PLUS_FILE))\n"
        "print(len(e.humaneval_plus_suite()), len(e.mbpp_plus_suite()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "AUTODIDACT_DATASETS"}
    env |= {"PYTHONPATH": str(clone), "HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    module, paths, counts = out.stdout.splitlines()
    assert module == str(clone / "environments" / "code" / "evalplus.py")  # the copy, not the installed tree
    data = clone / "environments" / "code" / "data"
    assert paths == f"{data / HUMANEVAL_PLUS_FILE} {data / MBPP_PLUS_FILE}" and counts == "164 378"
    assert not (clone.parent / "shared").exists()


def test_a_damaged_shipped_file_is_refused_with_both_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    shutil.copytree(evalplus.DATA_DIR, data)
    damaged = bytearray((data / MBPP_PLUS_FILE).read_bytes())
    damaged[len(damaged) // 2] ^= 0x01  # one bit, mid-file
    (data / MBPP_PLUS_FILE).write_bytes(bytes(damaged))
    monkeypatch.setattr(evalplus, "DATA_DIR", data)  # where the package's copies are
    actual = hashlib.sha256(damaged).hexdigest()
    expected = evalplus.SHA256[MBPP_PLUS_FILE]
    with pytest.raises(TaskDataError) as e:
        mbpp_plus_suite()
    message = str(e.value)
    assert str(data / MBPP_PLUS_FILE) in message and actual in message and expected in message
    assert "damaged or was replaced" in message and "Reinstall autodidact" in message
    assert len(humaneval_plus_suite()) == 164  # the intact file still loads
    # Named by $AUTODIDACT_DATASETS the same bytes are used as given: reading them is what fails (bad JSON
    # or a gzip error, by where the bit fell), still a TaskDataError naming the file.
    override = tmp_path / "override"
    override.mkdir()
    shutil.copy(data / MBPP_PLUS_FILE, override)
    monkeypatch.setenv("AUTODIDACT_DATASETS", str(override))
    with pytest.raises(TaskDataError, match=rf"^{re.escape(str(override / MBPP_PLUS_FILE))}:"):
        mbpp_plus_suite()
    (override / MBPP_PLUS_FILE).write_bytes(bytes(damaged[: len(damaged) // 2]))  # cut short
    with pytest.raises(TaskDataError, match=rf"^{re.escape(str(override / MBPP_PLUS_FILE))}: cannot be read"):
        mbpp_plus_suite()


def test_an_override_is_used_as_given_without_a_hash_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EvalPlus publishes other versions of the files: one named by $AUTODIDACT_DATASETS is read, not refused."""
    with gzip.open(evalplus.DATA_DIR / MBPP_PLUS_FILE, "rt") as f:
        first = [next(f) for _ in range(3)]
    with gzip.open(tmp_path / MBPP_PLUS_FILE, "wt") as f:
        f.writelines(first)
    monkeypatch.setenv("AUTODIDACT_DATASETS", str(tmp_path))
    assert [t.id for t in mbpp_plus_suite()] == ["mbpp_plus/Mbpp_2", "mbpp_plus/Mbpp_3", "mbpp_plus/Mbpp_4"]


async def _score(task: Task, code: str, sandbox: ProcessSandbox) -> TestReport:
    return await run_tests(task, code, sandbox)


async def test_canonical_passes_and_mutants_fail(
    he: dict[str, Task], mbpp: dict[str, Task], sandbox: ProcessSandbox
) -> None:
    has_close = he["humaneval_plus/HumanEval_0"]
    body = has_close.payload["solution"]
    cases = [
        (has_close, body, True),
        (has_close, body.replace("return True", "return False"), False),  # return value replaced
        (has_close, body.replace("< threshold", "<= threshold"), False),  # off by one (boundary)
        (has_close, body.replace("range(len(sorted_numbers) - 1)", "range(len(sorted_numbers) - 2)"), False),
        (mbpp["mbpp_plus/Mbpp_3"], mbpp["mbpp_plus/Mbpp_3"].payload["solution"], True),
        (mbpp["mbpp_plus/Mbpp_3"], mbpp["mbpp_plus/Mbpp_3"].payload["solution"].replace("True", "None", 1), False),
    ]
    reports = await asyncio.gather(*(_score(t, code, sandbox) for t, code, _ in cases))
    assert [r.success for r in reports] == [want for _, _, want in cases]
    plus = has_close.payload["plus"]
    assert reports[1].total == len(json.loads(plus["base_input"])) + len(json.loads(plus["plus_input"])) == 1006
    assert reports[1].labels[6:8] == ["base[6]", "plus[0]"]
    assert 0 < reports[1].fraction < 1  # a wrong answer still passes some inputs


FIND_ZERO_NEWTON = """
def find_zero(xs: list):
    x = 0.0
    for _ in range(1000):
        f = sum(c * x ** i for i, c in enumerate(xs))
        d = sum(i * c * x ** (i - 1) for i, c in enumerate(xs) if i)
        x = x + 0.5 if d == 0 else x - f / d
    return x
"""

SURFACE_FROM_HEIGHT = """
import math
def surface_Area(b, h):
    return round(b**2 + 4 * (b * math.sqrt((b / 2) ** 2 + h**2)) / 2)
"""
DIGITS_ZERO_PADDED = """
def digit_distance_nums(a, b):
    w = max(len(str(a)), len(str(b)))
    return sum(abs(int(x) - int(y)) for x, y in zip(str(a).zfill(w), str(b).zfill(w)))
"""


async def test_special_oracles_and_tuple_inputs(
    he: dict[str, Task], mbpp: dict[str, Task], sandbox: ProcessSandbox
) -> None:
    find_zero, similar = he["humaneval_plus/HumanEval_32"], mbpp["mbpp_plus/Mbpp_2"]
    not_none = next(t for t in mbpp.values() if t.payload["entry_point"] == "text_match_three")
    surface, digits = mbpp["mbpp_plus/Mbpp_581"], mbpp["mbpp_plus/Mbpp_558"]
    cases = [
        (find_zero, FIND_ZERO_NEWTON, True),  # another root than the reference's is right
        (find_zero, "    return round(-xs[0] / xs[1], 1) if len(xs) == 2 else 0.0\n", False),
        (similar, "def similar_elements(a, b):\n    return sorted(set(a) & set(b), reverse=True)", True),  # as sets
        (similar, "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b))[1:])", False),
        (similar, "def similar_elements(a, b):\n    assert type(a) is tuple\n    return tuple(set(a) & set(b))", True),
        (not_none, "import re\ndef text_match_three(t):\n    return 'yes' if re.search('ab{3}', t) else None", True),
        (not_none, "def text_match_three(t):\n    return 'yes'", False),
        # Mbpp/581 also accepts reading the second argument as the pyramid's height
        (surface, SURFACE_FROM_HEIGHT, True),
        (surface, "def surface_Area(b, s):\n    return 2 * b * s + b * b + 1", False),
        # Mbpp/558 also accepts zero-padding the shorter number
        (digits, DIGITS_ZERO_PADDED, True),
        (digits, "def digit_distance_nums(a, b):\n    return abs(a - b)", False),
    ]
    reports = await asyncio.gather(*(_score(t, code, sandbox) for t, code, _ in cases))
    assert [r.success for r in reports] == [want for _, _, want in cases], [r.errors[:3] for r in reports]


@pytest.mark.slow
async def test_every_canonical_solution_passes(
    he: dict[str, Task], mbpp: dict[str, Task], sandbox: ProcessSandbox
) -> None:
    """All 542 at once (the sandbox's pool runs as many as there are cores). It checks correctness
    only: its time (35 s to 4 min on 2 cores, with or without the expected outputs cached under
    $AUTODIDACT_CACHE) depends on the machine and its load."""
    tasks = [*he.values(), *mbpp.values()]
    reports = await asyncio.gather(*(_score(t, t.payload["solution"], sandbox) for t in tasks))
    failed = [(t.id, r.error, r.errors[:2]) for t, r in zip(tasks, reports, strict=True) if not r.success]
    assert len(failed) <= 0.01 * len(tasks), failed
