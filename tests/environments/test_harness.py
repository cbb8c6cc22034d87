"""The per-test harness, one property at a time: how ``check`` splits into tests, per-test
outcomes, and what a submission cannot do to its own report (flood it, forge it, hang it).
Everything runs through the real process sandbox."""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from autodidact.errors import SandboxUnavailableError, TaskDataError
from autodidact.types import Task
from environments.code import harness
from environments.code.harness import TestReport, doctest_visible_tests, run_tests
from environments.sandbox.base import ExecRequest, ExecResult
from environments.sandbox.process import ProcessSandbox

CHECK = """
METADATA = {"author": "test"}

def helper(x):
    return x


def check(candidate):
    assert candidate(1, 2) == 3
    pairs = [(1, 1), (2, 3)]
    for a, b in pairs:
        assert candidate(a, b) == a + b
    assert True, "a debugging line, not a test"
    doubled = [candidate(x, x) for x in range(3)]
    assert all(candidate(d, 0) == helper(d) for d in doubled)
    assert candidate(-1, 1) == 0, "negatives"
"""
ADD = Task(
    id="t/add",
    suite="t",
    prompt="Add two numbers.",
    payload={
        "entry_point": "add",
        "prefix": 'def add(a, b):\n    """Add."""\n',
        "test": CHECK,
        "visible_tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"],
    },
)
LABELS = [
    "assert candidate(1, 2) == 3",
    "for a, b in pairs: assert candidate(a, b) == a + b",
    "assert all(candidate(d, 0) == helper(d) for d in doubled)",
    'assert candidate(-1, 1) == 0, "negatives"',
]


@pytest.fixture
async def sandbox() -> AsyncIterator[ProcessSandbox]:
    box = ProcessSandbox(unsafe=shutil.which("bwrap") is None)
    yield box
    close = getattr(box, "close", None)
    if close is not None:
        await close()


async def test_each_top_level_assert_statement_of_check_is_one_test(sandbox: ProcessSandbox) -> None:
    report = await run_tests(ADD, "    return a + b\n", sandbox)
    assert report.labels == LABELS
    assert report.outcomes == [True] * 4 and report.errors == [None] * 4
    assert (report.passed, report.total, report.fraction, report.success) == (4, 4, 1.0, True)
    assert report.error is None


async def test_failures_do_not_stop_later_tests_and_say_why(sandbox: ProcessSandbox) -> None:
    code = "    if a < 0:\n        raise ValueError('negative')\n    return 0 if (a, b) == (1, 2) else a + b\n"
    report = await run_tests(ADD, code, sandbox)
    assert report.outcomes == [False, True, True, False]
    assert report.errors == ["AssertionError", None, None, "ValueError: negative"]
    assert report.fraction == 0.5 and not report.success
    wrong_message = await run_tests(ADD, "    return a + b + (a < 0)\n", sandbox)
    assert wrong_message.outcomes == [True, True, True, False]
    assert wrong_message.errors[3] == "AssertionError: negatives"


async def test_a_full_definition_replaces_the_prefix_stub(sandbox: ProcessSandbox) -> None:
    assert (await run_tests(ADD, "def add(a, b):\n    return b + a", sandbox)).success


async def test_syntax_error_fails_every_test_with_the_reason(sandbox: ProcessSandbox) -> None:
    report = await run_tests(ADD, "    return a +\n", sandbox)
    assert report.total == 4 and report.passed == 0 and not report.success
    assert report.error is not None and report.error.startswith("SyntaxError")
    assert report.errors == [report.error] * 4  # every test failed with it


async def test_missing_entry_point_and_top_level_crash(sandbox: ProcessSandbox) -> None:
    bare = ADD.model_copy(update={"payload": {**ADD.payload, "prefix": ""}})
    missing = await run_tests(bare, "def plus(a, b):\n    return a + b", sandbox)
    assert missing.passed == 0 and "does not define 'add'" in (missing.error or "")
    crash = await run_tests(ADD, "import no_such_module_here\ndef add(a, b):\n    return a + b", sandbox)
    assert crash.passed == 0 and (crash.error or "").startswith("ModuleNotFoundError")


async def test_output_flood_is_capped_and_does_not_lose_the_report(sandbox: ProcessSandbox) -> None:
    flood = "    print('x' * 1_000_000)\n    import os, sys\n    os.write(1, b'y' * 500_000)\n    os.write(2, b'z' * 500_000)\n    return a + b\n"
    report = await run_tests(ADD, flood, sandbox)
    assert report.success and report.error is None
    assert 0 < len(report.output) <= harness.OUTPUT_CHARS
    assert report.output.startswith("x")


async def test_printed_fake_reports_do_not_count(sandbox: ProcessSandbox) -> None:
    forge = (
        "import json, os, sys\n"
        "for nonce in ['0' * 32, 'f' * 32]:\n"
        "    for i in range(4):\n"
        "        line = nonce + ' ' + json.dumps({'t': i, 'ok': True, 'err': None})\n"
        "        print(line)\n"
        "        os.write(1, (line + '\\n').encode())\n"
        "        os.write(2, (line + '\\n').encode())\n"
        "    print(nonce + ' ' + json.dumps({'end': True, 'output': ''}))\n"
        "def add(a, b):\n"
        "    return a * 1000 + 7\n"
    )
    report = await run_tests(ADD, forge, sandbox)
    assert report.outcomes == [False, False, False, False] and report.error is None


async def test_exit_in_a_test_fails_that_test_only(sandbox: ProcessSandbox) -> None:
    code = "    import sys\n    if a < 0:\n        sys.exit(0)\n    return a + b\n"
    report = await run_tests(ADD, code, sandbox)
    assert report.outcomes == [True, True, True, False] and report.errors[3] == "SystemExit: 0"
    hard = await run_tests(ADD, "import os\nos._exit(0)\n", sandbox)
    assert hard.passed == 0 and hard.error is not None


async def test_a_hung_test_times_out_and_later_tests_are_not_run(sandbox: ProcessSandbox) -> None:
    code = "    while a == 2:\n        pass\n    return a + b\n"
    start = time.perf_counter()
    report = await run_tests(ADD, code, sandbox, timeout_s=1.5)
    assert time.perf_counter() - start < 6
    assert report.outcomes == [True, False, False, False]
    assert (
        report.errors[1] == "timed out"
        and report.errors[2] == report.errors[3] == "not run (an earlier test timed out)"
    )
    assert report.error is None


async def test_a_hang_inside_native_code_is_cut_by_the_watchdog(sandbox: ProcessSandbox) -> None:
    code = "    if a == 2:\n        sum(range(10**14))\n    return a + b\n"  # C loop: no signal handler runs
    start = time.perf_counter()
    report = await run_tests(ADD, code, sandbox, timeout_s=1.0)
    assert time.perf_counter() - start < 8
    assert report.passed == 0 and "timed out" in (report.error or "")


async def test_visible_tests_and_a_task_without_them(sandbox: ProcessSandbox) -> None:
    report = await run_tests(ADD, "    return a + b\n", sandbox, which="visible")
    assert report.labels == ["assert add(1, 2) == 3", "assert add(2, 2) == 4"] and report.success
    half = await run_tests(ADD, "    return 3\n", sandbox, which="visible")
    assert half.outcomes == [True, False]
    bare = ADD.model_copy(update={"payload": {**ADD.payload, "visible_tests": []}})
    none = await run_tests(bare, "    return a + b\n", sandbox, which="visible")
    assert (none.total, none.fraction, none.success) == (0, 0.0, False)


async def test_visible_tests_may_use_math_without_importing_it(sandbox: ProcessSandbox) -> None:
    task = Task(
        id="t/area",
        suite="t",
        prompt="",
        payload={"entry_point": "area", "visible_tests": ["assert math.isclose(area(1), 3.14159, rel_tol=0.001)"]},
    )
    assert (await run_tests(task, "def area(r):\n    return 3.14159 * r * r", sandbox, which="visible")).success


async def test_test_code_without_check_is_top_level_asserts(sandbox: ProcessSandbox) -> None:
    task = Task(
        id="t/neg",
        suite="t",
        prompt="",
        payload={"entry_point": "neg", "test": "x = 3\nassert neg(x) == -3\nassert neg(0) == 0\n"},
    )
    report = await run_tests(task, "def neg(v):\n    return -v if v else 1", sandbox)
    assert report.labels == ["assert neg(x) == -3", "assert neg(0) == 0"] and report.outcomes == [True, False]


async def test_check_with_an_early_return_runs_as_one_test(sandbox: ProcessSandbox) -> None:
    test = "def check(candidate):\n    if candidate(0) == 0:\n        return\n    assert False\n"
    task = Task(id="t/ret", suite="t", prompt="", payload={"entry_point": "f", "test": test})
    report = await run_tests(task, "def f(x):\n    return x", sandbox)
    assert report.labels == ["check(candidate)"] and report.success
    assert not (await run_tests(task, "def f(x):\n    return 1", sandbox)).success


async def test_a_task_without_hidden_tests_is_a_data_error(sandbox: ProcessSandbox) -> None:
    with pytest.raises(TaskDataError, match="no hidden tests"):
        await run_tests(Task(id="t/x", suite="t", prompt="", payload={"entry_point": "f"}), "", sandbox)


class _NoJson:
    """A sandbox whose python lacks ``json`` (like a python3-minimal image)."""

    def __init__(self, inner: ProcessSandbox) -> None:
        self.inner = inner

    async def run(self, request: ExecRequest) -> ExecResult:
        future, rest = request.code.split("\n", 1)  # `from __future__ import ...` stays first
        code = f"{future}\nimport sys\nsys.modules['json'] = None\n{rest}"
        return await self.inner.run(request.model_copy(update={"code": code}))

    async def close(self) -> None:
        pass


async def test_a_runner_that_cannot_start_is_a_sandbox_fault_not_a_wrong_answer(sandbox: ProcessSandbox) -> None:
    with pytest.raises(SandboxUnavailableError, match=r"(?s)runner did not start.*ModuleNotFoundError.*json"):
        await run_tests(ADD, "    return a + b\n", _NoJson(sandbox))


def test_report_properties() -> None:
    empty = TestReport(outcomes=[], labels=[], errors=[])
    assert (empty.passed, empty.total, empty.fraction, empty.success) == (0, 0, 0.0, False)
    some = TestReport(outcomes=[True, False, True], labels=["a", "b", "c"], errors=[None, "x", None])
    assert (some.passed, some.total, some.fraction, some.success) == (2, 3, 2 / 3, False)


def test_doctest_examples_become_asserts() -> None:
    prompt = '''
def f(xs: list, k: int = 1) -> list:
    """Do something.
    >>> f([1, 2], 3)
    [1, 2, 3]
    >>> f(
    ... [], 0)
    []
    >>> round(f([0.5])[0], 2)
    0.5
    >>> print(f([1]))
    1
    >>> f(unknown)
    2
    >>> f([3])
    [3]
    For example:
    f([5]) ==> [5]
    * f([6]) ➞ [6]
    f([7]) should return [7].
    f([8]) returns [8] # note
    f([9], 2) == 3 + 4
    f("a") => true
    f([1,
       2]) == [1, 2]
    """
'''
    assert doctest_visible_tests(prompt, "f") == [
        "assert f([1, 2], 3) == [1, 2, 3]",
        "assert f(\n[], 0) == []",
        "assert round(f([0.5])[0], 2) == 0.5",
        "assert f([3]) == [3]",
        "assert f([5]) == [5]",
        "assert f([6]) == [6]",
        "assert f([7]) == [7]",
        "assert f([8]) == [8]",
        'assert f("a") == True',
        "assert f([1, 2]) == [1, 2]",
    ]


def test_doctest_extraction_skips_recurrences_and_fixes_one_tuples() -> None:
    prompt = '''
def tri(n):
    """tri(1) = 3
    tri(n) = tri(n - 1) + 1
    tri(2) = [1, 2]
    bf("a") ==> ("Venus")
    """
'''
    assert doctest_visible_tests(prompt, "tri") == []
    bf = 'def bf(p):\n    """bf("a") ==> ("Venus")\n    bf("b") ==> ("Mars", "Earth")\n    """\n'
    assert doctest_visible_tests(bf, "bf") == [
        "assert bf(\"a\") == ('Venus',)",
        "assert bf(\"b\") == ('Mars', 'Earth')",
    ]


# ------------------------------------ EvalPlus-kind tests ------------------------------------


def _plus_task(reference: str, entry: str, base: list[Any], plus: list[Any], **extra: Any) -> Task:
    import json

    data = {"reference": reference, "base_input": json.dumps(base), "plus_input": json.dumps(plus), "atol": 0.0}
    return Task(id=f"t/{entry}", suite="t", prompt="", payload={"entry_point": entry, "plus": {**data, **extra}})


class _Counting:
    """A sandbox that counts its runs (to see the ground truth computed once)."""

    def __init__(self, inner: ProcessSandbox) -> None:
        self.inner, self.runs = inner, 0

    async def run(self, request: ExecRequest) -> ExecResult:
        self.runs += 1
        return await self.inner.run(request)

    async def close(self) -> None:
        pass


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTODIDACT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(harness, "_memory_cache", {})
    return tmp_path / "cache" / "evalplus"


async def test_plus_tests_one_per_input_with_expected_outputs_from_the_reference(
    sandbox: ProcessSandbox, cache: Path
) -> None:
    task = _plus_task("def sq(x):\n    return x * x\n", "sq", [[1], [2]], [[3], [-4], [10]])
    counting = _Counting(sandbox)
    good = await run_tests(task, "def sq(x):\n    return x ** 2", counting)
    assert good.labels == ["base[0]", "base[1]", "plus[0]", "plus[1]", "plus[2]"] and good.success
    assert counting.runs == 2 and len(list(cache.glob("*.json"))) == 1  # ground truth, then the tests
    bad = await run_tests(task, "def sq(x):\n    return abs(x) * x", counting)
    assert bad.outcomes == [True, True, True, False, True] and counting.runs == 3
    assert bad.errors[3] == "AssertionError: wrong output (got -16)"
    harness._memory_cache.clear()  # a new process: the disk cache answers
    assert (await run_tests(task, "def sq(x):\n    return x * x", counting)).success and counting.runs == 4


async def test_plus_floats_use_evalplus_tolerances(sandbox: ProcessSandbox, cache: Path) -> None:
    task = _plus_task("def half(x):\n    return x / 2\n", "half", [[1], [3]], [[5.0]])
    assert (await run_tests(task, "def half(x):\n    return x * 0.5 + 1e-9", sandbox)).success
    assert not (await run_tests(task, "def half(x):\n    return x * 0.5 + 1e-5", sandbox)).success
    ints = _plus_task("def dbl(x):\n    return x * 2\n", "dbl", [[1]], [[2]])
    assert (await run_tests(ints, "def dbl(x):\n    return x * 2.0", sandbox)).success  # 2.0 == 2 first
    assert not (
        await run_tests(ints, "def dbl(x):\n    return x * 2.0000001", sandbox)
    ).success  # no tolerance for ints


async def test_plus_per_input_time_limit(sandbox: ProcessSandbox, cache: Path) -> None:
    task = _plus_task("def f(x):\n    return x\n", "f", [[0], [1], [2]], [[3]])
    report = await run_tests(
        task, "import time\ndef f(x):\n    if x == 1:\n        time.sleep(30)\n    return x", sandbox
    )
    assert report.outcomes == [True, False, False, True]
    assert report.errors[1] == "timed out" and report.errors[2].startswith("not run")
    assert report.duration_s < 10


async def test_plus_hang_inside_native_code_ends_the_run_quickly(sandbox: ProcessSandbox, cache: Path) -> None:
    task = _plus_task("def f(x):\n    return x\n", "f", [[0], [1], [2]], [[3]])
    start = time.perf_counter()
    report = await run_tests(task, "def f(x):\n    if x == 1:\n        sum(range(10**14))\n    return x", sandbox)
    assert time.perf_counter() - start < 10  # not the phase's whole budget
    assert report.passed == 0 and "timed out" in (report.error or "")


async def test_plus_big_outputs_are_compared_by_digest_or_recomputed(sandbox: ProcessSandbox, cache: Path) -> None:
    reference = "def big(n):\n    return [[i] for i in range(n)]\n"
    task = _plus_task(reference, "big", [[3]], [[50_000], [60_000]])
    assert (await run_tests(task, reference, sandbox)).success  # the same pickle
    other = "def big(n):\n    return [[True] if i == 1 else [i] for i in range(n)]\n"
    assert (await run_tests(task, other, sandbox)).success  # another pickle, an equal value: recomputed
    off = "def big(n):\n    return [[i] for i in range(1, n + 1)]\n"
    assert (await run_tests(task, off, sandbox)).outcomes == [False, False, False]


async def test_plus_submission_cannot_remove_files_or_open_them(sandbox: ProcessSandbox, cache: Path) -> None:
    task = _plus_task("def f(x):\n    return x\n", "f", [[1]], [[2]])
    report = await run_tests(task, "def f(x):\n    open('/tmp/x', 'w')\n    return x", sandbox)
    assert not report.success and "TypeError" in (report.errors[0] or "")


async def test_a_broken_reference_is_a_data_error(sandbox: ProcessSandbox, cache: Path) -> None:
    task = _plus_task("def f(x):\n    return 1 / x\n", "f", [[1]], [[0]])
    with pytest.raises(TaskDataError, match=r"reference solution failed: ZeroDivisionError.*plus input 0"):
        await run_tests(task, "def f(x):\n    return x", sandbox)


# ------------------------ the comparison, against NumPy and EvalPlus's rules ------------------------


def test_allclose_matches_numpy() -> None:
    np = pytest.importorskip("numpy")
    rng = random.Random(0)
    values = [0.0, 1.0, -1.0, 1e-7, 1e-6, 1.0000001, float("inf"), float("-inf"), float("nan"), 3, True, 2 + 1j]
    for _ in range(3000):
        shape = rng.choice([(), (2,), (3,), (2, 2), (1,), (2, 1)])

        def make(shape: tuple[int, ...]) -> Any:
            if not shape:
                base = rng.choice(values)
                return base + rng.choice([0.0, 1e-8, 1e-6, 1e-3]) if isinstance(base, float) else base
            return [make(shape[1:]) for _ in range(shape[0])]

        a, b = make(shape), make(rng.choice([shape, shape, (2,), ()]))
        atol = rng.choice([1e-6, 1e-4, 0.0])
        try:
            want = bool(np.allclose(a, b, rtol=1e-07, atol=atol))
        except (TypeError, ValueError):
            want = None
        try:
            got: bool | None = harness._allclose(a, b, 1e-07, atol)
        except (TypeError, ValueError):
            got = None
        assert got == want, (a, b, atol)


@pytest.mark.parametrize(
    ("oracle", "out", "exp", "args", "atol", "verdict"),
    [
        ("exact", [1, 2], [1, 2], (), 0.0, True),
        ("exact", (1, 2), [1, 2], (), 0.0, False),  # types differ and no tolerance applies
        ("exact", 0.1 + 0.2, 0.3, (), 0.0, True),  # a float output turns on atol 1e-6
        ("exact", [0.1 + 0.2, 1.0], [0.3, 1.0], (), 0.0, True),
        ("exact", (0.3,), [0.3], (), 1e-6, False),  # a tolerance still needs the same type
        ("exact", [0.3], [0.3, 0.0], (), 1e-6, False),
        ("exact", "ab", "ba", (), 1e-4, "error"),  # numpy cannot subtract strings
        ("set_eq", [3, 1], (1, 3), (), 0.0, True),
        ("set_eq", [[1]], [[1]], (), 0.0, "error"),  # EvalPlus's set() of lists raises
        ("not_none", "match", True, (), 0.0, True),
        ("not_none", None, True, (), 0.0, False),
        ("not_none", False, False, (), 0.0, True),
        ("always", None, 5, (), 0.0, True),
        ("or_zero", 0, 7, (), 0.0, True),
        ("or_zero", 1, 7, (), 0.0, False),
        ("find_zero", 1.0, 99.0, ([-1, 1],), 1e-4, True),
        ("find_zero", 1.1, 1.0, ([-1, 1],), 1e-4, False),
        ("surface_area", 35, 0, (3, 4), 0.0, True),
        ("surface_area", 33, 0, (3, 4), 0.0, False),
        ("digit_distance", 3, 0, (12, 345), 0.0, False),
        ("digit_distance", 9, 0, (12, 345), 0.0, True),
    ],
)
def test_output_oracles(oracle: str, out: Any, exp: Any, args: Any, atol: float, verdict: bool | str) -> None:
    try:
        got: bool | str = harness._check_output(oracle, out, exp, args, [atol])
    except Exception:
        got = "error"
    assert got == verdict


def test_float_tolerance_sticks_for_the_rest_of_the_phase() -> None:
    atol = [0.0]
    assert harness._check_output("exact", 1.0, 1.0, (), atol) and atol == [1e-6]
    assert harness._check_output("exact", [1.0000001, 2], [1.0, 2], (), atol)  # not floats only, still tolerant
    assert not harness._check_output("exact", [1.0000001, 2], [1.0, 2], (), [0.0])
