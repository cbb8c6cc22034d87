"""The code environment: the agent writes a function; hidden tests in the sandbox score it.

A task's payload (see :mod:`environments.tasks` for the file schema) holds ``entry_point``,
an optional ``prefix`` (the code the task shows, e.g. HumanEval's signature and docstring),
the hidden tests (``test``: HumanEval-style ``check(candidate)``; or ``plus``: evalplus
inputs scored against the reference's outputs) and optional ``visible_tests`` (assert
statements the agent may run). The program under test is ``prefix + code``: a full function
in the code replaces the prefix's stub, a bare body continues it — scored the way HumanEval's
and EvalPlus's authors score it (:mod:`environments.code.harness`).

An episode is multi-turn. Actions (``Action.kind``):

- ``run``: run ``prefix + code`` as a script and see its output (no tests, no reward);
- ``test``: run the visible tests against the code and see each outcome (no reward);
- ``submit`` (or ``code``): run the hidden tests. Reward = the fraction of hidden tests that
  pass; success = all pass.

What a submission shows the agent depends on ``feedback``:

- ``"visible"`` (the default): only what an agent could see for itself — the visible tests'
  outcomes on the submitted code (or, for a task without visible tests, the code's own run
  output). The hidden tests score the attempt but are never shown, and they do not decide
  whether the episode goes on: a submission is the final answer (the episode terminates) when
  its visible tests pass (or it runs cleanly) or when it was the last of ``max_attempts``;
  otherwise the agent sees the visible failures and may submit again. The final answer's
  hidden score is the episode's reward and its success.
- ``"hidden"``: the hidden tests' outcome is the feedback (how many passed, why the first
  failure failed) and a passing submission terminates the episode. This is an oracle no agent
  has at deployment: it inflates multi-attempt results (Reflexion's code setting gives the
  agent only tests it can see or write). Kept for comparison.

``max_attempts`` bounds submissions and ``max_steps`` all actions; running out of either
truncates the episode (in ``"visible"`` mode the last attempt ends it as the final answer).
Every step's ``info`` has ``kind`` and, for ``test`` and ``submit``, ``passed``/``total``/
``success``, ``outcomes`` (one bool per test, in order) and ``failures`` (label and error of
the first failing tests).

Example:
    >>> env = CodeEnvironment()
    >>> obs = await env.reset(load_suite("bundled")[0])  # doctest: +SKIP
    >>> (await env.step(Action(kind="submit", text="def last(xs):\\n    return xs[-1]"))).reward  # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from autodidact.errors import TaskDataError
from autodidact.types import Action, Observation, Task
from environments.base import StepResult
from environments.code.harness import TestReport, run_tests
from environments.sandbox.base import ExecRequest, ExecResult, Sandbox

FEEDBACK_CHARS = 1500
MAX_FAILURES_IN_INFO = 20
SUBMIT_KINDS = ("submit", "code")
KINDS = ("run", "test", *SUBMIT_KINDS)
Feedback = Literal["visible", "hidden"]
FEEDBACK: tuple[Feedback, ...] = ("visible", "hidden")


class CodeEnvironment:
    """Runs the agent's code, its visible tests and the hidden tests in a sandbox.

    Args:
        sandbox: where code runs (default: the process sandbox with its warm pool).
        max_attempts: submissions per episode.
        max_steps: actions of any kind per episode (default: ``max_attempts + 4``).
        timeout_s: wall-clock limit of one program run.
        memory_mb: address-space limit of one program run.
        feedback: what a submission shows: ``"visible"`` tests only, or the ``"hidden"`` tests'
            outcome (an oracle; see the module docstring).
    """

    id = "code"

    def __init__(
        self,
        sandbox: Sandbox | None = None,
        *,
        max_attempts: int = 1,
        max_steps: int | None = None,
        timeout_s: float = 10.0,
        memory_mb: int = 1024,
        feedback: Feedback = "visible",
    ) -> None:
        if feedback not in FEEDBACK:
            raise ValueError(f"feedback must be one of {', '.join(FEEDBACK)}; got {feedback!r}")
        if sandbox is None:
            from environments.sandbox.process import ProcessSandbox

            sandbox = ProcessSandbox()
        self.sandbox = sandbox
        self.max_attempts = max_attempts
        self.max_steps = max_steps if max_steps is not None else max_attempts + 4
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.feedback = feedback
        self._task: Task | None = None
        self._attempts = 0
        self._steps = 0

    async def reset(self, task: Task, *, seed: int | None = None) -> Observation:
        """Start an episode; the observation is the task's prompt."""
        p = task.payload
        missing = [k for k in ("entry_point",) if not p.get(k)]
        if not p.get("test") and not p.get("plus"):
            missing.append("test")
        if missing:
            raise TaskDataError(f"task {task.id!r} is not a code task: payload lacks {', '.join(missing)}")
        self._task, self._attempts, self._steps = task, 0, 0
        return Observation(
            text=task.prompt,
            data={"entry_point": p["entry_point"], "visible_tests": list(p.get("visible_tests") or [])},
        )

    async def step(self, action: Action) -> StepResult:
        """Run, test or submit ``action.text`` (see the module docstring)."""
        if self._task is None:
            raise RuntimeError("step() before reset()")
        self._steps += 1
        kind = action.kind
        if kind not in KINDS:
            obs = Observation(text=f"Unknown action {kind!r}: use one of {', '.join(KINDS)}.")
            return self._result(obs, 0.0, terminated=False, info={"kind": kind, "error": "unknown action"})
        if not action.text.strip():
            if kind in SUBMIT_KINDS:
                self._attempts += 1
            obs = Observation(text="No code was found in your answer. Reply with a ```python code block.")
            return self._result(obs, 0.0, terminated=False, info={"kind": kind, "error": "no code"})
        if kind == "run":
            run = await self._run(action.text)
            obs = Observation(text=_run_feedback(run), data={"exit_code": run.exit_code, "timed_out": run.timed_out})
            return self._result(obs, 0.0, terminated=False, info={"kind": "run", "exit_code": run.exit_code})
        if kind in SUBMIT_KINDS and self.feedback == "visible":
            return await self._submit_seeing_visible(action.text)
        which: Literal["hidden", "visible"] = "visible" if kind == "test" else "hidden"
        report = await run_tests(
            self._task, action.text, self.sandbox, which=which, timeout_s=self.timeout_s, memory_mb=self.memory_mb
        )
        info = _report_info(report) | {"kind": "test" if kind == "test" else "submit"}
        if kind == "test":
            obs = Observation(text=_test_feedback(report, visible=True), data=info)
            return self._result(obs, 0.0, terminated=False, info=info)
        self._attempts += 1
        obs = Observation(text=_test_feedback(report, visible=False), data=info)
        return self._result(obs, report.fraction, terminated=report.success, info=info)

    async def close(self) -> None:
        self._task = None

    async def _run(self, code: str) -> ExecResult:
        assert self._task is not None
        request = ExecRequest(
            code=f"{self._task.payload.get('prefix', '')}\n{code}", timeout_s=self.timeout_s, memory_mb=self.memory_mb
        )
        return await self.sandbox.run(request)

    async def _submit_seeing_visible(self, code: str) -> StepResult:
        """A submission scored by the hidden tests and answered with the visible ones (or the run)."""
        assert self._task is not None
        self._attempts += 1
        task, sandbox, timeout_s, memory_mb = self._task, self.sandbox, self.timeout_s, self.memory_mb
        hidden_run = run_tests(task, code, sandbox, which="hidden", timeout_s=timeout_s, memory_mb=memory_mb)
        if task.payload.get("visible_tests"):
            visible_run = run_tests(task, code, sandbox, which="visible", timeout_s=timeout_s, memory_mb=memory_mb)
            hidden, visible = await asyncio.gather(hidden_run, visible_run)
            seen_ok, seen = visible.success, _test_feedback(visible, visible=True)
            data: dict[str, Any] = {"visible": _report_info(visible)}
        else:
            hidden, run = await asyncio.gather(hidden_run, self._run(code))
            seen_ok = run.exit_code == 0 and not run.timed_out and not run.memory_exceeded
            seen = "This task has no visible tests; your code ran: " + _run_feedback(run)
            data = {"exit_code": run.exit_code, "timed_out": run.timed_out}
        final = seen_ok or self._attempts >= self.max_attempts
        if not final:
            seen += "\nThe submission is not final: you may submit again."
        info = _report_info(hidden) | {"kind": "submit", "visible_ok": seen_ok, "final": final}
        return self._result(Observation(text=seen, data=data), hidden.fraction, terminated=final, info=info)

    def _result(self, obs: Observation, reward: float, *, terminated: bool, info: dict[str, Any]) -> StepResult:
        out_of_budget = self._attempts >= self.max_attempts or self._steps >= self.max_steps
        return StepResult(obs, reward, terminated=terminated, truncated=not terminated and out_of_budget, info=info)


def _report_info(report: TestReport) -> dict[str, Any]:
    failures = [
        {"label": label, "error": error}
        for ok, label, error in zip(report.outcomes, report.labels, report.errors, strict=True)
        if not ok
    ][:MAX_FAILURES_IN_INFO]
    return {
        "passed": report.passed,
        "total": report.total,
        "success": report.success,
        "outcomes": list(report.outcomes),
        "failures": failures,
        "error": report.error,
        "duration_s": report.duration_s,
    }


def _test_feedback(report: TestReport, *, visible: bool) -> str:
    what = "visible tests" if visible else "hidden tests"
    if report.total == 0:
        return f"This task has no {what}."
    if report.success:
        return f"All {report.total} {what} passed."
    lines = [f"{report.passed}/{report.total} {what} passed."]
    if report.error:
        lines.append(report.error)
    else:
        first = next(i for i, ok in enumerate(report.outcomes) if not ok)
        lines.append(f"First failure: {report.labels[first]}\n{report.errors[first] or ''}".rstrip())
    if report.output.strip():
        lines.append(f"Output:\n{report.output.strip()[-FEEDBACK_CHARS // 2 :]}")
    return "\n".join(lines)[-FEEDBACK_CHARS:]


def _run_feedback(result: ExecResult) -> str:
    if result.timed_out:
        return f"The program timed out after {result.duration_s:.1f} s (an infinite loop or a very slow solution?)."
    if result.memory_exceeded:
        return "The program ran out of memory."
    out = (result.stdout + result.stderr).strip()[-FEEDBACK_CHARS:] or "(no output)"
    return f"Exit code {result.exit_code}.\n{out}"
