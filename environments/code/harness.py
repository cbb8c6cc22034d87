"""The per-test harness: score a submission against a task's tests in ONE sandbox run.

:func:`run_tests` builds a small Python program (the *runner*), runs it once in a
:class:`~environments.sandbox.base.Sandbox`, and turns what it reports into a
:class:`TestReport` with one outcome per test. The program under test is
``payload["prefix"] + "\\n" + code``: a bare body continues the prefix's signature (HumanEval),
a full definition replaces the prefix's stub.

Test kinds, chosen from the task's payload:

- ``test`` (HumanEval style): code defining ``check(candidate)``. The test module runs first
  (helpers, imports); then each top-level statement of ``check``'s body that contains an
  ``assert`` (anywhere inside it, e.g. a loop of asserts) is ONE test, and the other statements
  are setup, run in order. Every statement runs in one namespace (the submission's globals),
  with ``check``'s parameter bound to the entry point. A failing test does not stop the next.
  Statements that cannot run outside a function (``return``, ``yield``) make the whole
  ``check(candidate)`` call one test. A ``test`` without ``check`` is read as top-level asserts.
- ``visible_tests`` (``which="visible"``): assert statements calling the function by name, one
  test each (``math`` and ``sys`` are importable by name, as MBPP's examples assume). A task
  without them gives a report with ``total == 0``.
- ``plus`` (EvalPlus, preferred over ``test`` for ``which="hidden"``): one test per input, base
  inputs then plus inputs, each output compared with the reference solution's, with EvalPlus
  0.3.1's semantics (its ``evalplus.evaluate``): per-input time limits
  ``max(1 s, 4 × the reference's time)``, a time budget per phase (base, plus) of
  ``min(60 s, sum of the limits) + 2 s``, a fresh ``exec`` of the program per phase, float
  tolerances (``atol``, 1e-6 once a float output was expected, then NumPy ``allclose``
  semantics with ``rtol=1e-7``), the special oracles (``find_zero``, set equality, not-None,
  …), EvalPlus's disabling of destructive functions (``os.remove``, ``open``,
  ``subprocess.Popen``, …) before the submission runs, and its 4 GiB address-space limit
  (``memory_mb`` is raised to that). The expected outputs come from running the reference once
  in the sandbox; they are cached in memory and on disk under ``$AUTODIDACT_CACHE`` (default
  ``~/.cache/autodidact``) in ``evalplus/``, keyed by a hash of the task data. Nothing is
  unpickled on the host: the cache keeps the reference's pickled outputs as opaque text that
  only the sandboxed runner unpickles. Outputs too big to ship (some are hundreds of MB) are
  kept as digests and recomputed in the sandbox when a submission's output differs.

  One deliberate difference: EvalPlus 0.3.1 fails every submission to HumanEval/32
  (``find_zero``), because its oracle ``continue``s before recording the pass; here a root
  within ``atol`` passes, as in EvalPlus after the fix. Verdicts also differ where EvalPlus's
  own run is starved (its per-input limits are wall-clock, like these).

  ``payload["plus"]`` holds: ``reference`` (code defining the entry point), ``base_input`` and
  ``plus_input`` (JSON text: lists of argument lists), ``atol`` (float), ``oracle`` (one of
  :data:`ORACLES`), ``convert`` (``None`` or one of :data:`CONVERSIONS`: how JSON inputs become
  tuples, sets or complex numbers), ``output_not_none`` (compare only ``is not None``).

The report channel: a random nonce goes to the runner on stdin (with the program and the test
data, which keeps the command line small); the runner moves the real stdout to a private file
descriptor, points file descriptors 0, 1 and 2 away from it, captures ``sys.stdout`` and
``sys.stderr`` in a capped buffer, and writes one ``<nonce> <json>`` line per test as it goes,
then an end line. A submission that prints a lot, prints fake report lines or writes to fd 1
does not change the report. The runner reports "ready" before any submitted code runs; without
that line the sandbox itself failed (e.g. its python lacks the standard library's ``json``) and
:class:`~autodidact.errors.SandboxUnavailableError` is raised instead of scoring a wrong answer. A Python-level hang is cut by ``SIGALRM`` (the test fails as
"timed out" and later tests are "not run"); a hang inside C code is cut by a ``faulthandler``
watchdog and then the sandbox's wall limit.

Does NOT protect against (the tests run in the same process as the submission, as in HumanEval
and EvalPlus): a submission that reaches into the runner (``import __main__``, stack frames,
``gc``) to read the nonce and forge the report or replace the comparison; one that patches
builtins, ``signal`` or ``faulthandler``; an output whose ``__eq__`` always says yes (it
passes, as in EvalPlus); writes to the private report descriptor (the report may then be lost,
and every test fails). Containment of the process itself is the sandbox's job.

Example:
    >>> report = await run_tests(task, "    return sorted(xs)\\n", ProcessSandbox())  # doctest: +SKIP
    >>> report.passed, report.total, report.success
    (7, 7, True)
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import functools
import hashlib
import inspect
import io
import json
import math
import os
import secrets
import signal
import tempfile
import weakref
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from autodidact.errors import SandboxUnavailableError, TaskDataError
from autodidact.types import Record, Task
from environments.sandbox.base import ExecRequest, ExecResult, Sandbox

LABEL_CHARS = 100
ERROR_CHARS = 200
OUTPUT_CHARS = 2000
MIN_TIME_LIMIT_S = 1.0  # EvalPlus's DEFAULT_MIN_TIME_LIMIT
TIME_LIMIT_FACTOR = 4.0  # EvalPlus's DEFAULT_GT_TIME_LIMIT_FACTOR
PHASE_CAP_S = 60.0  # EvalPlus's EVALPLUS_TIMEOUT_PER_TASK default
PHASE_SLACK_S = 2.0  # EvalPlus joins its worker after min(cap, sum of limits) + 1 + 1 s
GROUND_TRUTH_TIMEOUT_S = 300.0
EVALPLUS_MEMORY_MB = 4096  # EvalPlus's address-space limit (EVALPLUS_MAX_MEMORY_BYTES default)
INLINE_OUTPUT_BYTES = 64 * 1024
INLINE_TOTAL_BYTES = 8 * 1024 * 1024
_GT_VERSION = 1  # bump when the ground-truth protocol changes: old cache entries are ignored

ORACLES = ("exact", "find_zero", "set_eq", "not_none", "always", "or_zero", "surface_area", "digit_distance")
CONVERSIONS = (
    "tuple_args",
    "tuple_items",
    "first_tuple_items",
    "second_tuple",
    "first_sets",
    "float_complex",
    "first_tuple",
    "tuple_of_tuples",
    "first_nested_tuple",
    "first_dict_tuple_values",
    "first_complex",
    "deep_tuple",
)


class TestReport(Record):
    """The outcome of every test of one submission, in order."""

    __test__ = False  # not a pytest test class

    outcomes: list[bool]
    labels: list[str]
    errors: list[str | None]
    output: str = ""
    error: str | None = None
    duration_s: float = 0.0

    @property
    def passed(self) -> int:
        """How many tests passed."""
        return sum(self.outcomes)

    @property
    def total(self) -> int:
        """How many tests there are."""
        return len(self.outcomes)

    @property
    def fraction(self) -> float:
        """``passed / total``; 0.0 when there are no tests."""
        return self.passed / self.total if self.total else 0.0

    @property
    def success(self) -> bool:
        """There are tests and every one passed."""
        return self.total > 0 and all(self.outcomes)


async def run_tests(
    task: Task,
    code: str,
    sandbox: Sandbox,
    *,
    which: Literal["hidden", "visible"] = "hidden",
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
) -> TestReport:
    """Run ``task``'s tests against ``code`` in ``sandbox`` (one run; see the module docstring).

    Args:
        task: a code task; its payload has ``entry_point`` and ``test``, ``plus`` and/or
            ``visible_tests``, and optionally ``prefix``.
        code: the submission (a body continuing the prefix, or full definitions).
        sandbox: where the runner runs.
        which: ``"hidden"`` (``plus`` if present, else ``test``) or ``"visible"``.
        timeout_s: wall-clock limit for ``test``/``visible`` runs. ``plus`` runs use EvalPlus's
            limits and get a wall limit of at least the sum of the two phases' budgets.
        memory_mb: address-space limit of the run.

    Raises:
        TaskDataError: the payload has no tests of the kind asked for (hidden), or the
            reference solution of a ``plus`` task could not compute the expected outputs.
        SandboxUnavailableError: the runner could not start in the sandbox.

    Example:
        >>> r = await run_tests(task, "def add(a, b):\\n    return a - b", sandbox)  # doctest: +SKIP
        >>> r.passed, r.total, r.errors[0]
        (1, 3, None)
    """
    p = task.payload
    program = f"{p.get('prefix', '')}\n{code}"
    entry_point = str(p.get("entry_point", ""))
    if which == "visible":
        tests = list(p.get("visible_tests") or [])
        if not tests:
            return TestReport(outcomes=[], labels=[], errors=[])
        items = [(t, True) for t in tests]
        spec: dict[str, Any] = {"mode": "asserts", "items": items, "bind": None, "preload": True}
        return await _run_asserts(program, entry_point, spec, [_label(t) for t in tests], sandbox, timeout_s, memory_mb)
    if p.get("plus"):
        return await _run_plus(task, program, entry_point, sandbox, timeout_s, memory_mb)
    if p.get("test"):
        items, labels, bind = _split_check(str(p["test"]))
        spec = {"mode": "asserts", "items": items, "bind": bind, "preload": False}
        return await _run_asserts(program, entry_point, spec, labels, sandbox, timeout_s, memory_mb)
    raise TaskDataError(f"task {task.id!r} has no hidden tests: its payload needs 'test' or 'plus'")


# ---------------------------------------------------------------------------------------------
# Host side: planning, running, parsing
# ---------------------------------------------------------------------------------------------


def _label(source: str) -> str:
    return _cut(" ".join(source.split()), LABEL_CHARS)


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _asserts_in(node: ast.AST) -> list[ast.Assert]:
    """The asserts a statement runs when executed: not those inside nested defs or lambdas."""
    found: list[ast.Assert] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Assert):
            found.append(n)
        for child in ast.iter_child_nodes(n):
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
                stack.append(child)
    return found


def _is_test(stmt: ast.stmt) -> bool:
    asserts = _asserts_in(stmt)
    # `assert True, "..."` (HumanEval's debugging lines) cannot fail: it is not a test.
    return any(not (isinstance(a.test, ast.Constant) and a.test.value) for a in asserts)


def _compiles(source: str) -> bool:
    try:
        compile(source, "<test>", "exec")
    except SyntaxError:
        return False
    return True


def _split_check(test: str) -> tuple[list[tuple[str, bool]], list[str], str | None]:
    """``test`` code → (statements with a test flag, test labels, name to bind the candidate to)."""
    try:
        tree = ast.parse(test)
    except SyntaxError as e:
        raise TaskDataError(f"the task's test code does not parse: {e.msg} (line {e.lineno})") from None
    checks = [s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == "check"]
    if not checks:  # plain top-level statements, asserts among them
        items = [(ast.unparse(s), _is_test(s)) for s in tree.body]
        labels = [
            _label(ast.get_source_segment(test, s) or src) for s, (src, t) in zip(tree.body, items, strict=True) if t
        ]
        return items, labels, None
    check = checks[-1]
    bind = check.args.args[0].arg if check.args.args else None
    body = check.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    stmts = [(s, ast.unparse(s)) for s in body]
    if not all(_compiles(src) for _, src in stmts):
        call = f"check({bind or ''})"
        return [(test, False), (call, True)], [call], bind
    items = [(test, False)] + [(src, _is_test(s)) for s, src in stmts]
    labels = [_label(ast.get_source_segment(test, s) or src) for s, src in stmts if _is_test(s)]
    return items, labels, bind


async def _run_asserts(
    program: str,
    entry_point: str,
    spec: dict[str, Any],
    labels: list[str],
    sandbox: Sandbox,
    timeout_s: float,
    memory_mb: int,
) -> TestReport:
    spec = {**spec, "program": program, "entry_point": entry_point, "timeout": timeout_s}
    wall = timeout_s + 2.0
    return await _execute(spec, labels, sandbox, wall, memory_mb)


async def _execute(
    spec: dict[str, Any], labels: list[str], sandbox: Sandbox, wall_s: float, memory_mb: int
) -> TestReport:
    nonce = secrets.token_hex(16)
    request = ExecRequest(
        code=_runner_source(),
        stdin=nonce + "\n" + json.dumps(spec),
        timeout_s=wall_s,
        cpu_s=math.ceil(wall_s) + 2,
        memory_mb=memory_mb,
        max_output_bytes=64_000 + 1_500 * len(labels),  # report lines are JSON: escapes can grow them
    )
    result = await sandbox.run(request)
    return _parse(result, nonce, labels)


def _messages(result: ExecResult, nonce: str) -> list[dict[str, Any]]:
    """The runner's report lines (``<nonce> <json>``), in order; anything else is ignored.

    Raises SandboxUnavailableError when the runner did not even start (before any submitted code
    ran): a fault of the sandbox, which must not be scored as a wrong answer.
    """
    marker = nonce + " "
    out = []
    for line in result.stdout.split("\n"):
        if line.startswith(marker):
            try:
                msg = json.loads(line[len(marker) :])
            except json.JSONDecodeError:
                continue
            if isinstance(msg, dict):
                out.append(msg)
    if not out or not out[0].get("ready"):
        raise SandboxUnavailableError(
            "the test runner did not start in the sandbox "
            f"({_why_no_report(result)}; it needs python3 with the standard library): {_cut(result.stderr.strip(), 500)}"
        )
    return out


def _parse(result: ExecResult, nonce: str, labels: list[str]) -> TestReport:
    n = len(labels)
    outcomes: list[bool] = [False] * n
    errors: list[str | None] = ["not run"] * n
    output = ""
    fatal: str | None = None
    ended = False
    for msg in _messages(result, nonce):
        if "t" in msg and isinstance(msg["t"], int) and 0 <= msg["t"] < n:
            ok = msg.get("ok") is True
            outcomes[msg["t"]] = ok
            errors[msg["t"]] = None if ok else _cut(str(msg.get("err") or "failed"), ERROR_CHARS)
        elif "fatal" in msg:
            fatal = _cut(str(msg["fatal"]), ERROR_CHARS * 2)
        elif msg.get("end"):
            ended = True
            output = str(msg.get("output", ""))
    error: str | None = None
    if fatal is not None:
        error = fatal
    elif not ended:
        error = _why_no_report(result)
    if error is not None:
        outcomes = [False] * n
        errors = [_cut(error, ERROR_CHARS)] * n
        if not ended:
            output = result.stderr.strip()
    return TestReport(
        outcomes=outcomes,
        labels=labels,
        errors=errors,
        output=_cut(output, OUTPUT_CHARS),
        error=error,
        duration_s=result.duration_s,
    )


def _why_no_report(result: ExecResult) -> str:
    if result.exit_code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "timed out: a test ran past its CPU time inside native code"
    if result.timed_out:
        return f"timed out: the program was stopped after {result.duration_s:.1f} s"
    if result.memory_exceeded:
        return "the program ran out of memory"
    code = result.exit_code
    if code is not None and (code < 0 or code > 128):
        return f"the program was killed by signal {-code if code < 0 else code - 128}"
    if code == 1 and "Timeout (" in result.stderr:
        return "timed out: a test ran past the time budget inside native code"
    if code == 0 and result.output_truncated:
        return "the test report was lost (output over the limit)"
    return f"the program stopped before reporting every test (exit code {code})"


# ------------------------------------- EvalPlus tasks ----------------------------------------


class _GroundTruth(Record):
    """The reference's outputs and per-input times, per phase.

    ``base``/``plus``: the outputs, pickled and base64'd inside the sandbox (opaque here). An
    output whose pickle is over :data:`INLINE_OUTPUT_BYTES` (or past :data:`INLINE_TOTAL_BYTES`
    in all) is kept as ``None`` there, and ``*_digests`` hold ``[index, sha256 of its pickle
    ("" if it cannot be pickled), whether it is a float or a list of floats]``: a submission's
    output with the same pickle passes at once, any other is compared with the reference's
    output recomputed in the sandbox (HumanEval+ and MBPP+ have outputs of hundreds of MB).
    """

    base: str
    plus: str
    base_time: list[float]
    plus_time: list[float]
    base_digests: list[tuple[int, str, bool]] = Field(default_factory=list)
    plus_digests: list[tuple[int, str, bool]] = Field(default_factory=list)


_memory_cache: dict[str, _GroundTruth] = {}
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


def cache_dir() -> Path:
    """Where expected outputs are cached: ``$AUTODIDACT_CACHE/evalplus`` or ``~/.cache/autodidact/evalplus``."""
    root = os.environ.get("AUTODIDACT_CACHE") or str(Path.home() / ".cache" / "autodidact")
    return Path(root) / "evalplus"


def _plus_data(task: Task) -> dict[str, Any]:
    plus = task.payload["plus"]
    need = ("reference", "base_input", "plus_input")
    missing = [k for k in need if not isinstance(plus.get(k), str)]
    if missing or not task.payload.get("entry_point"):
        raise TaskDataError(
            f"task {task.id!r}: payload 'plus' needs string fields {', '.join(need)} and the payload an entry_point"
        )
    oracle = plus.get("oracle", "exact")
    convert = plus.get("convert")
    if oracle not in ORACLES or (convert is not None and convert not in CONVERSIONS):
        raise TaskDataError(f"task {task.id!r}: unknown oracle {oracle!r} or input conversion {convert!r}")
    return {
        "reference": plus["reference"],
        "entry_point": task.payload["entry_point"],
        "base_input": plus["base_input"],
        "plus_input": plus["plus_input"],
        "atol": float(plus.get("atol") or 0.0),
        "oracle": oracle,
        "convert": convert,
        "output_not_none": bool(plus.get("output_not_none", False)),
    }


def _gt_key(data: dict[str, Any]) -> str:
    keyed = {k: data[k] for k in ("reference", "entry_point", "base_input", "plus_input", "convert", "output_not_none")}
    blob = json.dumps({"v": _GT_VERSION, **keyed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


async def _ground_truth(task: Task, sandbox: Sandbox) -> _GroundTruth:
    """The reference's outputs and per-input times for an EvalPlus task (computed once, cached)."""
    data = _plus_data(task)
    key = _gt_key(data)
    if key in _memory_cache:
        return _memory_cache[key]
    locks = _locks.setdefault(asyncio.get_running_loop(), {})
    async with locks.setdefault(key, asyncio.Lock()):
        if key in _memory_cache:
            return _memory_cache[key]
        gt = _read_cached(key)
        if gt is None:
            gt = await _compute_ground_truth(task.id, data, sandbox)
            _write_cached(key, gt)
        _memory_cache[key] = gt
        return gt


def _read_cached(key: str) -> _GroundTruth | None:
    path = cache_dir() / f"{key}.json"
    try:
        return _GroundTruth.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


def _write_cached(key: str, gt: _GroundTruth) -> None:
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(gt.model_dump_json())
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        pass  # a read-only cache only costs recomputation


async def _compute_ground_truth(task_id: str, data: dict[str, Any], sandbox: Sandbox) -> _GroundTruth:
    nonce = secrets.token_hex(16)
    spec = {"mode": "ground_truth", **data, "inline_one": INLINE_OUTPUT_BYTES, "inline_total": INLINE_TOTAL_BYTES}
    result = await sandbox.run(
        ExecRequest(
            code=_runner_source(),
            stdin=nonce + "\n" + json.dumps(spec),
            timeout_s=GROUND_TRUTH_TIMEOUT_S,
            cpu_s=int(GROUND_TRUTH_TIMEOUT_S),
            memory_mb=EVALPLUS_MEMORY_MB,
            max_output_bytes=2 * INLINE_TOTAL_BYTES + 4 * 1024 * 1024,
        )
    )
    for msg in _messages(result, nonce):
        if "gt" in msg:
            return _GroundTruth.model_validate(msg["gt"])
        if "fatal" in msg:
            raise TaskDataError(f"task {task_id!r}: the reference solution failed: {msg['fatal']}")
    raise TaskDataError(
        f"task {task_id!r}: the reference solution gave no expected outputs ({_why_no_report(result)}): "
        + _cut(result.stderr.strip(), 500)
    )


async def _run_plus(
    task: Task, program: str, entry_point: str, sandbox: Sandbox, timeout_s: float, memory_mb: int
) -> TestReport:
    data = _plus_data(task)
    gt = await _ground_truth(task, sandbox)
    phases = []
    labels: list[str] = []
    wall = 3.0
    for name in ("base", "plus"):
        times: list[float] = getattr(gt, f"{name}_time")
        digests: list[tuple[int, str, bool]] = getattr(gt, f"{name}_digests")
        limits = [max(MIN_TIME_LIMIT_S, TIME_LIMIT_FACTOR * t) for t in times]
        budget = min(PHASE_CAP_S, sum(limits)) + PHASE_SLACK_S
        wall += budget + 1.0 + 2.0 * sum(times[i] for i, _, _ in digests)  # recomputing big outputs
        phases.append(
            {
                "input": data[f"{name}_input"],
                "expected": getattr(gt, name),
                "digests": digests,
                "limits": limits,
                "budget": budget,
            }
        )
        labels += [f"{name}[{i}]" for i in range(len(times))]
    spec = {
        "mode": "plus",
        "program": program,
        "entry_point": entry_point,
        "reference": data["reference"],
        "output_not_none": data["output_not_none"],
        "phases": phases,
        "atol": data["atol"],
        "oracle": data["oracle"],
        "convert": data["convert"],
    }
    return await _execute(spec, labels, sandbox, max(timeout_s, wall), max(memory_mb, EVALPLUS_MEMORY_MB))


# ---------------------------------- docstring examples ---------------------------------------

_SEPARATORS = ("# returns", "# =>", "should return", "returns", "return", "==>", "=>", "==", "->", "➞", "=")
_BULLETS = (">>>", "*", "-", "for ")


def doctest_visible_tests(prompt: str, entry_point: str) -> list[str]:
    """Examples in ``entry_point``'s docstring as assert statements.

    Reads doctest examples (``>>> f(x)`` and the expected output on the next lines) and
    one-line examples such as ``f(x) ==> y``, ``f(x) == y``, ``f(x) ➞ y``, ``f(x) returns y``
    or ``f(x) should return y``. Examples whose call has non-literal arguments or whose
    expected value is not a Python literal are skipped; so are ``f(x) = y`` lines in a
    docstring that also defines ``f`` that way (``f(n) = f(n - 1) + …``: a recurrence, not examples).

    Example:
        >>> doctest_visible_tests('def inc(x):\\n    \"\"\">>> inc(1)\\n    2\\n    \"\"\"\\n', "inc")
        ['assert inc(1) == 2']
    """
    lines = _docstring(prompt, entry_point).splitlines()
    found: list[str | tuple[str, str, str]] = []  # doctest asserts, or inline (call, separator, rest)
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if line.startswith(">>>"):
            source = line[3:].strip()
            while i < len(lines) and lines[i].strip().startswith("..."):
                source += "\n" + lines[i].strip()[3:].lstrip()
                i += 1
            want, end = [], i
            while end < len(lines) and lines[end].strip() and not lines[end].strip().startswith(">>>"):
                want.append(lines[end].strip())
                end += 1
            test = _doctest_assert(source, " ".join(want), entry_point)
            if test is not None:
                i = end
            elif want:  # the output is one line and prose follows it: scan the prose too
                test = _doctest_assert(source, want[0], entry_point)
                i += 1
            if test is not None:
                found.append(test)
            continue
        for bullet in _BULLETS[1:]:
            if line.startswith(bullet):
                line = line[len(bullet) :].lstrip()
        if not line.startswith(entry_point + "("):
            continue
        while _open_brackets(line) > 0 and i < len(lines) and len(line) < 2000:
            line += " " + lines[i].strip()
            i += 1
        parts = _inline_parts(line)
        if parts is not None:
            found.append(parts)
    recurrence = any(not isinstance(f, str) and f[1] == "=" and not _literal_call(f[0]) for f in found)
    tests: list[str] = []
    for f in found:
        if not isinstance(f, str):
            call, sep, rest = f
            value = _leading_literal(rest) if _literal_call(call) and not (recurrence and sep == "=") else None
            if value is None:
                continue
            f = f"assert {call} == {value[0]!r}"
        if f not in tests:
            tests.append(f)
    return tests


def _docstring(prompt: str, entry_point: str) -> str:
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return prompt
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry_point:
            return ast.get_docstring(node, clean=False) or ""
    return prompt


def _open_brackets(text: str) -> int:
    depth = 0
    quote: str | None = None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
    return depth


def _literal(text: str) -> tuple[bool, Any]:
    text = text.strip()
    if text in ("true", "false"):
        return True, text == "true"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None
    if text.startswith("(") and not isinstance(value, tuple):
        value = (value,)  # docstrings write a 1-tuple as ("x")
    return True, value


def _calls(expr: ast.AST, entry_point: str) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == entry_point for n in ast.walk(expr)
    )


def _doctest_assert(source: str, want: str, entry_point: str) -> str | None:
    try:
        expr = ast.parse(source, mode="eval").body
    except SyntaxError:
        return None
    names = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
    allowed = {entry_point} | {n for n in dir(builtins) if n != "print"}  # print's output is not a value
    if not _calls(expr, entry_point) or not names <= allowed:
        return None
    ok, value = _literal(want)
    return f"assert {source} == {value!r}" if ok else None


def _inline_parts(line: str) -> tuple[str, str, str] | None:
    """``f(args) SEP rest`` → (the call's source, the separator, the rest); None if not that shape."""
    call_end = _call_end(line)
    if call_end is None:
        return None
    call, rest = line[:call_end], line[call_end:].strip()
    for sep in _SEPARATORS:
        if rest.startswith(sep):
            return call, sep, rest[len(sep) :].strip()
    return None


def _literal_call(call: str) -> bool:
    """Whether every argument of the call (source) is a Python literal."""
    expr = ast.parse(call, mode="eval").body
    if not isinstance(expr, ast.Call):
        return False
    try:
        for arg in [*expr.args, *(k.value for k in expr.keywords)]:
            ast.literal_eval(arg)
    except (ValueError, SyntaxError, TypeError):
        return False
    return True


def _call_end(line: str) -> int | None:
    """Where the call at the start of ``line`` ends (the smallest prefix that parses as a call)."""
    depth = 0
    for pos, ch in enumerate(line):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                try:
                    expr = ast.parse(line[: pos + 1], mode="eval").body
                except SyntaxError:
                    continue
                return pos + 1 if isinstance(expr, ast.Call) else None
    return None


def _leading_literal(text: str) -> tuple[Any] | None:
    """The longest literal at the start of ``text`` followed only by commentary, as a 1-tuple."""
    for end in range(len(text), 0, -1):
        head, tail = text[:end], text[end:]
        if not head.strip() or head[-1].isspace():
            continue
        tail = tail.strip()
        if tail and not (tail in (".", ",") or tail[0] in "#(" or tail[:2] in (". ", ", ")):
            continue
        ok, value = _literal(head)
        if ok:
            return (value,)
    return None


# ---------------------------------------------------------------------------------------------
# Sandbox side. Everything below runs inside the sandbox: its source is shipped by
# _runner_source(). It uses the standard library only and must run on the sandbox's python3.
# ---------------------------------------------------------------------------------------------


class _Timeout(BaseException):
    """Raised by SIGALRM in the running test (a BaseException: `except Exception` cannot hide it)."""


class _Capture(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: keeps the first ``cap`` characters, drops the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.size = 0

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if self.size < self.cap:
            self.parts.append(s[: self.cap - self.size])
        self.size += len(s)
        return len(s)

    def writable(self) -> bool:
        return True

    def text(self) -> str:
        return "".join(self.parts)


class _NoInput(io.TextIOBase):
    """Stands in for sys.stdin: reading fails, as under EvalPlus."""

    def read(self, *args: object) -> str:
        raise OSError("stdin is not available to the submission")

    def readline(self, *args: object) -> str:  # type: ignore[override]
        raise OSError("stdin is not available to the submission")

    def readable(self) -> bool:
        return False


class _Channel:
    """The runner's private way out: report lines to the saved stdout, captured output."""

    def __init__(self, nonce: str, cap: int) -> None:
        import sys

        self.nonce = nonce
        self.pending: list[str] = []
        self.flushed = 0.0
        self.report_fd = os.dup(1)
        self.watchdog_fd = os.dup(2)  # where a faulthandler timeout says why the process ended
        os.set_inheritable(self.report_fd, False)
        os.set_inheritable(self.watchdog_fd, False)
        try:
            self.sink: Any = tempfile.TemporaryFile()  # noqa: SIM115
        except OSError:
            self.sink = open(os.devnull, "w+b")  # noqa: SIM115
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(self.sink.fileno(), 1)
        os.dup2(self.sink.fileno(), 2)
        self.capture = _Capture(cap)
        sys.stdout = sys.stderr = self.capture  # type: ignore[assignment]
        sys.stdin = _NoInput()  # type: ignore[assignment]

    def emit(self, message: dict[str, Any]) -> None:
        """Report ``message``. Passed tests are batched (one write per ~20 ms or 512 lines: a
        write per test was a third of a run with ~1000 inputs); anything else goes out at once,
        after them. A process killed mid-batch loses at most those passes (they read "not run")."""
        import time

        for key in ("err", "fatal"):
            if isinstance(message.get(key), str):
                message[key] = message[key][:ERROR_CHARS]
        self.pending.append(self.nonce + " " + json.dumps(message) + "\n")
        now = time.monotonic()
        if message.get("ok") is True and len(self.pending) < 512 and now - self.flushed < 0.02:
            return
        data = "".join(self.pending).encode()
        self.pending.clear()
        self.flushed = now
        while data:
            data = data[os.write(self.report_fd, data) :]

    def output(self) -> str:
        import sys

        for stream in (sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:
                pass
        text = self.capture.text()
        try:
            os.lseek(self.sink.fileno(), 0, 0)
            raw = os.read(self.sink.fileno(), self.capture.cap)
            text += raw.decode(errors="replace")
        except OSError:
            pass
        return text[: self.capture.cap]


def _describe(e: BaseException) -> str:
    if isinstance(e, SyntaxError):
        return f"{type(e).__name__}: {e.msg} (line {e.lineno})"
    message = str(e)
    return f"{type(e).__name__}: {message}" if message else type(e).__name__


def _on_alarm(signum: int, frame: object) -> None:
    raise _Timeout()


def _timed(limit: float, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` with a SIGALRM after ``limit`` seconds (raises _Timeout)."""
    import signal

    signal.setitimer(signal.ITIMER_REAL, max(limit, 0.001))
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _attempt(limit: float, fn: Any, *args: Any) -> tuple[str, Any]:
    """("ok", value) or ("timeout", message) or ("error", message) — never raises."""
    try:
        return "ok", _timed(limit, fn, *args)
    except _Timeout:
        return "timeout", "timed out"
    except BaseException as e:
        return "error", _describe(e)


def _exec(source: str, namespace: dict[str, Any], filename: str) -> None:
    exec(compile(source, filename, "exec"), namespace)


def _run_asserts_in_sandbox(spec: dict[str, Any], ch: _Channel) -> None:
    import faulthandler
    import math as math_module
    import sys
    import time

    deadline = time.monotonic() + spec["timeout"]
    faulthandler.dump_traceback_later(spec["timeout"] + 1.0, exit=True, file=ch.watchdog_fd)
    ns: dict[str, Any] = {}
    status, value = _attempt(deadline - time.monotonic(), _exec, spec["program"], ns, "<submission>")
    if status != "ok":
        ch.emit({"fatal": value if status == "error" else "timed out while defining the submission"})
        return
    if spec["bind"] is not None:
        if spec["entry_point"] not in ns:
            ch.emit({"fatal": f"NameError: the submission does not define {spec['entry_point']!r}"})
            return
        ns[spec["bind"]] = ns[spec["entry_point"]]
    if spec["preload"]:
        ns.setdefault("math", math_module)
        ns.setdefault("sys", sys)
    index = 0
    stopped: str | None = None
    for source, is_test in spec["items"]:
        if stopped is None and time.monotonic() >= deadline:
            stopped = "not run (out of time)"
        if stopped is not None:
            status, value = "error", stopped
        else:
            status, value = _attempt(deadline - time.monotonic(), _exec, source, ns, "<test>")
            if status == "timeout":
                stopped = "not run (an earlier test timed out)"
        if is_test:
            ch.emit({"t": index, "ok": status == "ok", "err": None if status == "ok" else value})
            index += 1
    faulthandler.cancel_dump_traceback_later()


def _convert(rule: str | None, inputs: list[Any]) -> list[Any]:
    """JSON inputs → the argument lists EvalPlus passes (its mbpp_deserialize_inputs, by rule)."""

    def deep(v: Any) -> Any:
        return tuple(deep(x) for x in v) if isinstance(v, list) else v

    def first(args: list[Any], f: Any) -> list[Any]:
        return [f(args[0]), *args[1:]]

    if rule is None:
        return inputs
    out: list[Any] = []
    for args in inputs:
        if rule == "tuple_args":
            args = [tuple(a) for a in args]
        elif rule == "tuple_items":
            args = [[tuple(x) for x in a] for a in args]
        elif rule == "first_tuple_items":
            args = first(args, lambda a: [tuple(x) for x in a])
        elif rule == "second_tuple":
            args = [args[0], tuple(args[1]), *args[2:]]
        elif rule == "first_sets":
            args = first(args, lambda a: [set(x) if isinstance(x, list) and len(x) else {} for x in a])
        elif rule == "float_complex":
            args = [float(args[0]), complex(args[1]), *args[2:]]
        elif rule == "first_tuple":
            args = first(args, tuple)
        elif rule == "tuple_of_tuples":
            args = [tuple(tuple(x) for x in a) for a in args]
        elif rule == "first_nested_tuple":
            args = first(args, lambda a: tuple(tuple(x) if isinstance(x, list) else x for x in a))
        elif rule == "first_dict_tuple_values":
            args = first(args, lambda a: {k: tuple(v) for k, v in a.items()})
        elif rule == "first_complex":
            args = first(args, complex)
        elif rule == "deep_tuple":
            args = deep(args)
        else:
            raise ValueError(f"unknown input conversion {rule!r}")
        out.append(args)
    return out


def _is_floats(x: Any) -> bool:
    """A float, or a non-empty list/tuple of floats only (EvalPlus's is_floats)."""
    if isinstance(x, float):
        return True
    if isinstance(x, list | tuple) and x:
        return all(isinstance(i, float) for i in x)
    return False


def _as_array(v: Any) -> tuple[tuple[int, ...], list[Any]]:
    """A nested list/tuple of numbers as (shape, flat values), like numpy.asarray; else TypeError."""
    if isinstance(v, list | tuple):
        parts = [_as_array(x) for x in v]
        shapes = {s for s, _ in parts}
        if len(shapes) > 1:
            raise ValueError("inhomogeneous shape")
        inner = shapes.pop() if shapes else ()
        return (len(v), *inner), [x for _, flat in parts for x in flat]
    if isinstance(v, bool | int | float | complex):
        return (), [v]
    raise TypeError(f"not a number: {type(v).__name__}")


def _allclose(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """numpy.allclose(a, b, rtol, atol) for nested lists/tuples of numbers, in plain Python."""
    import cmath

    (sa, fa), (sb, fb) = _as_array(a), _as_array(b)
    ndim = max(len(sa), len(sb))
    sa, sb = (1,) * (ndim - len(sa)) + sa, (1,) * (ndim - len(sb)) + sb
    shape = []
    for da, db in zip(sa, sb, strict=True):
        if da != db and 1 not in (da, db):
            raise ValueError("shapes cannot be broadcast")
        shape.append(db if da == 1 else da)

    def flat_index(idx: list[int], s: tuple[int, ...]) -> int:
        pos = 0
        for i, n in zip(idx, s, strict=True):
            pos = pos * n + (i if n != 1 else 0)
        return pos

    total = 1
    for n in shape:
        total *= n
    for k in range(total):
        idx, rest = [], k
        for n in reversed(shape):
            idx.append(rest % n)
            rest //= n
        idx.reverse()
        got: Any = fa[flat_index(idx, sa)]
        want: Any = fb[flat_index(idx, sb)]
        want = complex(want) if isinstance(want, complex) else float(want)  # numpy casts b to float
        finite = cmath.isfinite(want) if isinstance(want, complex) else math.isfinite(want)
        if not ((abs(got - want) <= atol + rtol * abs(want) and finite) or got == want):
            return False
    return True


def _poly(xs: list[Any], x: Any) -> Any:
    return sum([c * math.pow(x, i) for i, c in enumerate(xs)])


def _pyramid_surface(base_edge: Any, height: Any) -> Any:
    slant = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 4 * (base_edge * slant) / 2)


def _digit_distance(a: Any, b: Any) -> Any:
    sa, sb = str(a), str(b)
    width = max(len(sa), len(sb))
    return sum(abs(int(x) - int(y)) for x, y in zip(sa.zfill(width), sb.zfill(width), strict=True))


def _check_output(oracle: str, out: Any, exp: Any, args: Any, atol: list[float]) -> bool:
    """EvalPlus's verdict on one output; ``atol`` is a one-item list EvalPlus's logic updates in place."""
    same = out == exp
    if oracle == "always":
        same = same or True  # still takes the truthiness of `out == exp`, as EvalPlus does
    elif oracle == "or_zero":
        same = same or out == 0
    elif oracle == "surface_area":
        same = same or abs(out - _pyramid_surface(*args)) <= atol[0]
    elif oracle == "digit_distance":
        same = same or out == _digit_distance(*args)
    elif oracle == "set_eq":
        same = set(out) == set(exp)
    elif oracle == "not_none":
        same = out == exp if isinstance(out, bool) else exp == (out is not None)
    elif oracle == "find_zero":
        return abs(_poly(*args, out)) <= atol[0]  # type: ignore[call-arg]
    if atol[0] == 0 and _is_floats(exp):
        atol[0] = 1e-6  # EvalPlus keeps this for the rest of the phase
    if not same and atol[0] != 0:
        if type(out) is not type(exp):
            return False
        if isinstance(exp, list | tuple) and len(out) != len(exp):
            return False
        return _allclose(out, exp, 1e-07, atol[0])
    return bool(same)


_DISABLED = {
    "os": (
        "kill system putenv remove removedirs rmdir fchdir setuid fork forkpty killpg rename renames "
        "truncate replace unlink fchmod fchown chmod chown chroot lchflags lchmod lchown getcwd chdir"
    ),
    "shutil": "rmtree move chown",
    "subprocess": "Popen",
}


def _disable_destructive() -> None:
    """What EvalPlus's reliability_guard turns off before running a submission (verdicts must agree)."""
    import builtins
    import importlib
    import sys

    os.environ["OMP_NUM_THREADS"] = "1"
    for module_name, names in _DISABLED.items():
        module = importlib.import_module(module_name)
        for name in names.split():
            setattr(module, name, None)
    builtins.exit = builtins.quit = builtins.open = builtins.help = None  # type: ignore[assignment]
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None  # type: ignore[assignment]


def _run_plus_in_sandbox(spec: dict[str, Any], ch: _Channel) -> None:
    import base64
    import copy
    import faulthandler
    import hashlib
    import pickle
    import resource  # imported before EvalPlus's guard hides it from the submission
    import time

    cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    phases = []
    for phase in spec["phases"]:
        inputs = _convert(spec["convert"], json.loads(phase["input"]))
        # The inputs as the reference saw them, for recomputing big outputs (a submission may mutate its own).
        pristine = _convert(spec["convert"], json.loads(phase["input"])) if phase["digests"] else []
        expected = pickle.loads(base64.b64decode(phase["expected"]))
        phases.append((phase, inputs, pristine, expected, {d[0]: d[1:] for d in phase["digests"]}))
    _disable_destructive()
    index = 0
    for number, (phase, inputs, pristine, expected, digests) in enumerate(phases):
        end = time.monotonic() + phase["budget"]
        faulthandler.dump_traceback_later(phase["budget"] + 1.0, exit=True, file=ch.watchdog_fd)
        ns: dict[str, Any] = {}
        status, value = _attempt(phase["budget"], _exec, spec["program"], ns, "<submission>")
        fn = ns.get(spec["entry_point"])
        if status == "ok" and fn is None:
            status, value = "error", f"NameError: the submission does not define {spec['entry_point']!r}"
        stopped: str | None = None
        if status != "ok":
            if number == 0:
                ch.emit({"fatal": value if status == "error" else "timed out while defining the submission"})
                return
            stopped = value
        reference: list[Any] = []  # the reference function, defined when first needed
        atol = [float(spec["atol"])]
        for i, args in enumerate(inputs):
            remaining = end - time.monotonic()
            if stopped is None and remaining <= 0:
                stopped = "not run (the phase's time budget is spent)"
            if stopped is not None:
                ch.emit({"t": index, "ok": False, "err": stopped})
                index += 1
                continue
            ok, err = False, None
            limit = min(phase["limits"][i], remaining)
            # A busy hang inside C code never sees SIGALRM: a CPU-time limit (SIGXCPU) ends the process
            # a second or two later (cheaper than re-arming the faulthandler watchdog per input).
            used = resource.getrusage(resource.RUSAGE_SELF)
            cpu_now = used.ru_utime + used.ru_stime
            soft = math.ceil(cpu_now + limit) + 1
            if cpu_hard != resource.RLIM_INFINITY:
                soft = min(soft, cpu_hard)
            resource.setrlimit(resource.RLIMIT_CPU, (soft, cpu_hard))
            try:
                out = _timed(limit, fn, *args)
                resource.setrlimit(resource.RLIMIT_CPU, (cpu_hard, cpu_hard))
                if i in digests:
                    digest, floats = digests[i]
                    try:
                        same = bool(digest) and hashlib.sha256(pickle.dumps(out, protocol=4)).hexdigest() == digest
                    except BaseException:
                        same = False
                    if same and spec["oracle"] == "exact":
                        ok = True  # the reference's very output: EvalPlus's `out == exp` holds
                        if atol[0] == 0 and floats:
                            atol[0] = 1e-6
                    else:
                        started = time.monotonic()
                        if not reference:
                            ref_ns: dict[str, Any] = {}
                            _exec(spec["reference"], ref_ns, "<reference>")
                            reference.append(ref_ns[spec["entry_point"]])
                        exp = reference[0](*copy.deepcopy(pristine[i]))
                        if spec["output_not_none"]:
                            exp = exp is not None
                        end += time.monotonic() - started  # recomputing is not the submission's time
                        faulthandler.dump_traceback_later(end - time.monotonic() + 1.0, exit=True, file=ch.watchdog_fd)
                        ok = _check_output(spec["oracle"], out, exp, args, atol)
                else:
                    ok = _check_output(spec["oracle"], out, expected[i], args, atol)
                if not ok:
                    err = "AssertionError: wrong output (got " + _short_repr(out) + ")"
            except _Timeout:
                err = "timed out"
                stopped = "not run (an earlier input timed out)"
            except BaseException as e:
                err = _describe(e)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_hard, cpu_hard))
            ch.emit({"t": index, "ok": ok, "err": err})
            index += 1
        faulthandler.cancel_dump_traceback_later()


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except BaseException:
        return "an unprintable value"
    return text if len(text) <= 80 else text[:79] + "…"


def _ground_truth_in_sandbox(spec: dict[str, Any], ch: _Channel) -> None:
    import base64
    import copy
    import hashlib
    import pickle
    import time

    result: dict[str, Any] = {}
    room = spec["inline_total"]
    for phase in ("base", "plus"):
        ns: dict[str, Any] = {}
        outputs: list[Any] = []
        times: list[float] = []
        digests: list[list[Any]] = []
        try:
            _exec(spec["reference"], ns, "<reference>")
            fn = ns[spec["entry_point"]]
            for args in _convert(spec["convert"], json.loads(spec[phase + "_input"])):
                args = copy.deepcopy(args)
                start = time.time()
                out = fn(*args)
                times.append(time.time() - start)
                if spec["output_not_none"]:
                    out = out is not None
                try:
                    data: bytes | None = pickle.dumps(out, protocol=4)
                except Exception:
                    data = None
                if data is not None and len(data) <= min(room, spec["inline_one"]):
                    room -= len(data)
                    outputs.append(out)
                else:
                    digest = hashlib.sha256(data).hexdigest() if data is not None else ""
                    digests.append([len(outputs), digest, _is_floats(out)])
                    outputs.append(None)
                del out, data
            result[phase] = base64.b64encode(pickle.dumps(outputs, protocol=4)).decode()
        except BaseException as e:
            where = f"on {phase} input {len(outputs)}" if "fn" in locals() else "defining it"
            ch.emit({"fatal": f"{_describe(e)} ({where})"})
            return
        result[phase + "_time"] = times
        result[phase + "_digests"] = digests
    ch.emit({"gt": result})


def _sandbox_main() -> None:
    import signal
    import sys

    if os.getpid() == 1:
        # The init of a pid namespace ignores SIGXCPU (the per-input CPU limit): run as its child.
        child = os.fork()
        if child:
            status = os.waitpid(child, 0)[1]
            os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    nonce, _, data = sys.stdin.buffer.read().decode().partition("\n")
    spec = json.loads(data)
    ch = _Channel(nonce, OUTPUT_CHARS)
    ch.emit({"ready": True})  # before any submitted code runs: the runner itself works here
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a flood to fd 1 fails its write instead of killing us
    try:
        mode = spec["mode"]
        if mode == "asserts":
            _run_asserts_in_sandbox(spec, ch)
        elif mode == "plus":
            _run_plus_in_sandbox(spec, ch)
        else:
            _ground_truth_in_sandbox(spec, ch)
        ch.emit({"end": True, "output": ch.output()})
    except BaseException as e:
        ch.emit({"fatal": "harness: " + _describe(e)})
    os._exit(0)


_SANDBOX_PARTS: tuple[Any, ...] = (
    _Timeout,
    _Capture,
    _NoInput,
    _Channel,
    _describe,
    _on_alarm,
    _timed,
    _attempt,
    _exec,
    _run_asserts_in_sandbox,
    _convert,
    _is_floats,
    _as_array,
    _allclose,
    _poly,
    _pyramid_surface,
    _digit_distance,
    _check_output,
    _disable_destructive,
    _run_plus_in_sandbox,
    _short_repr,
    _ground_truth_in_sandbox,
    _sandbox_main,
)


@functools.cache
def _runner_source() -> str:
    """The runner program: the sandbox-side definitions above, then a call to ``_sandbox_main``."""
    header = (
        "from __future__ import annotations\n"
        "import io, json, math, os, tempfile\n"
        "from typing import Any\n"
        f"OUTPUT_CHARS = {OUTPUT_CHARS}\n"
        f"ERROR_CHARS = {ERROR_CHARS}\n"
        f"_DISABLED = {_DISABLED!r}\n"
    )
    body = "\n\n".join(inspect.getsource(part) for part in _SANDBOX_PARTS)
    return f"{header}\n{body}\n\n_sandbox_main()\n"
