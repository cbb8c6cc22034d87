"""Code skills: functions from solved code tasks, verified in the sandbox, linked into later programs.

:func:`extract` takes a successful code episode's passing program (the task's prefix plus the
submission) and keeps the entry-point function with what it needs: the module's imports and
every top-level function, class or constant it reaches by name. Everything else (prints,
test calls, ``if __name__ == "__main__"``) is dropped. The skill's tests are derived from the
episode: the task's visible tests, the examples in its prompt, and the asserts of its hidden
``check`` (called on the function by name).

:func:`verify` runs the skill's source *alone* (no prefix, nothing else of the episode) in
the sandbox against its tests and against the source task's hidden tests; a skill with no
tests, or one that fails any, is not verified. Skill code never runs outside the sandbox.

:func:`link` puts the sources of the retrieved skills that a program calls (and does not
define itself) before it, so that the solver may call a skill by name. A skill that raises,
loops or floods its output only fails the program that called it, as any code would: the
sandbox bounds it and the episode goes on.

Example:
    >>> candidate = extract(trajectory)  # doctest: +SKIP
    >>> await verify(candidate, ProcessSandbox())  # doctest: +SKIP
    None
    >>> link("def f(xs):\\n    return last(xs)", [candidate])[1]  # doctest: +SKIP
    ['skill:code:last:v1']
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from autodidact.types import Task, Trajectory
from environments.code.harness import TestReport, doctest_visible_tests, run_tests
from environments.sandbox.base import Sandbox
from skills.library import Skill

MAX_TESTS = 30
DESCRIPTION_CHARS = 600
_DEFINES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def passing_program(t: Trajectory) -> str | None:
    """The program that passed ``t``'s hidden tests (prefix + submission), if it succeeded."""
    if not t.success:
        return None
    for s in reversed(t.steps):
        if s.action is not None and s.terminated and s.reward >= 1.0:
            return f"{t.task.payload.get('prefix', '')}\n{s.action.text}"
    return None


def definitions(program: str, name: str) -> str | None:
    """``name``'s function with the imports and top-level definitions it reaches, as source; None
    when ``program`` does not parse or defines no function ``name``."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return None
    top: dict[str, ast.stmt] = {}  # the last definition of each name wins, as when the module runs
    for node in tree.body:
        if isinstance(node, _DEFINES):
            top[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        top[n.id] = node
    if not isinstance(top.get(name), ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    needed, todo = {id(top[name])}, [top[name]]
    while todo:
        for n in ast.walk(todo.pop()):
            if isinstance(n, ast.Name) and n.id in top and id(top[n.id]) not in needed:
                needed.add(id(top[n.id]))
                todo.append(top[n.id])
    imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    kept = [n for n in tree.body if id(n) in needed]
    head = "\n".join(ast.unparse(n) for n in imports)
    body = "\n\n\n".join(ast.unparse(n) for n in kept)
    return f"{head}\n\n\n{body}\n" if head else f"{body}\n"


def derived_tests(task: Task) -> list[str]:
    """Assert statements calling the entry point by name: visible tests, prompt examples, hidden asserts."""
    p = task.payload
    entry = str(p["entry_point"])
    tests = [*(p.get("visible_tests") or []), *doctest_visible_tests(task.prompt, entry)]
    tests += _check_asserts(str(p.get("test") or ""), entry)
    return list(dict.fromkeys(t.strip() for t in tests if t.strip()))[:MAX_TESTS]


def _check_asserts(test: str, entry: str) -> list[str]:
    """The top-level asserts of a HumanEval ``check(candidate)``, calling ``entry`` instead."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return []
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None or not check.args.args:
        return []
    param = check.args.args[0].arg
    out = []
    for stmt in check.body:
        if not isinstance(stmt, ast.Assert):
            continue
        for n in ast.walk(stmt):
            if isinstance(n, ast.Name) and n.id == param:
                n.id = entry
        out.append(ast.unparse(stmt))
    return out


def extract(t: Trajectory) -> Skill | None:
    """A candidate skill from a successful code episode, or None (not solved, no function found)."""
    program = passing_program(t)
    entry = str(t.task.payload.get("entry_point") or "")
    if program is None or not entry.isidentifier():
        return None
    source = definitions(program, entry)
    if source is None:
        return None
    return Skill(
        name=entry,
        env="code",
        description=t.task.prompt.strip()[:DESCRIPTION_CHARS],
        source=source,
        tests=tuple(derived_tests(t.task)),
        task=t.task,
        trajectory_id=t.id,
        run_id=t.run_id,
        model=t.policy.model,
    )


async def verify(skill: Skill, sandbox: Sandbox, *, timeout_s: float = 10.0) -> str | None:
    """Why ``skill`` is not verified (None when it is): its source alone must pass its tests and
    the source task's hidden tests, in ``sandbox``."""
    if not skill.tests:
        return "no tests could be derived from the episode"
    own = Task(id=f"skill/{skill.name}", suite="skills", prompt="", payload={"entry_point": skill.name})
    own = own.model_copy(update={"payload": {**own.payload, "visible_tests": list(skill.tests)}})
    report = await run_tests(own, skill.source, sandbox, which="visible", timeout_s=timeout_s)
    if not report.success:
        return f"its own tests: {report.passed}/{report.total} passed ({report.error or _first_error(report)})"
    source_task = skill.task.model_copy(update={"payload": {**skill.task.payload, "prefix": ""}})
    report = await run_tests(source_task, skill.source, sandbox, which="hidden", timeout_s=timeout_s)
    if not report.success:
        return (
            f"the source task's tests: {report.passed}/{report.total} passed ({report.error or _first_error(report)})"
        )
    return None


def _first_error(report: TestReport) -> str:
    for ok, label, error in zip(report.outcomes, report.labels, report.errors, strict=True):
        if not ok:
            return f"{label}: {error}"
    return "no test ran"


def called_names(code: str) -> set[str] | None:
    """Names ``code`` reads but does not define at top level; None when it does not parse."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    defined = {n.name for n in tree.body if isinstance(n, _DEFINES)}
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return read - defined


def link(code: str, skills: Sequence[Skill]) -> tuple[str, list[str]]:
    """``code`` preceded by the sources of the ``skills`` it calls without defining; their ids.

    Code that does not parse on its own (a bare body continuing the task's prefix) is left as
    it is: a skill's source cannot go between a signature and its body."""
    names = called_names(code)
    if not names:
        return code, []
    used = [s for s in skills if s.env == "code" and s.name in names]
    if not used:
        return code, []
    sources = "\n\n".join(f"# skill {s.id}\n{s.source}" for s in used)
    return f"{sources}\n\n{code}", [s.id for s in used]
