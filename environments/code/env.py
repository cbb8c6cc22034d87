"""The code environment: the agent submits a program, hidden tests decide the reward.

Each task's payload holds ``entry_point``, ``test`` (code defining ``check(candidate)``, as in
HumanEval) and an optional ``prefix`` (the code the task shows, e.g. HumanEval's signature and
docstring). The program run is ``prefix + answer + test + check(entry_point)``, so a full
function in the answer replaces the prefix's stub, and a bare body continues it — scored the
way HumanEval's authors score it. Programs run in a :class:`~environments.sandbox.base.Sandbox`
(the process sandbox by default). Reward is 1.0 when every test passes, else 0.0.

An episode allows ``max_attempts`` submissions: a pass terminates it; a failure returns the
test output as feedback; the last failed attempt truncates it (the budget ran out).
"""

from __future__ import annotations

from autodidact.errors import TaskDataError
from autodidact.types import Action, Observation, Task
from environments.base import StepResult
from environments.sandbox.base import ExecRequest, ExecResult, Sandbox

FEEDBACK_CHARS = 1500


def build_program(task: Task, code: str) -> str:
    """The program that tests ``code`` against ``task``'s hidden tests."""
    p = task.payload
    return f"{p.get('prefix', '')}\n{code}\n\n{p['test']}\n\ncheck({p['entry_point']})\n"


class CodeEnvironment:
    """Runs submitted code against hidden tests in a sandbox."""

    id = "code"

    def __init__(
        self, sandbox: Sandbox | None = None, *, max_attempts: int = 1, timeout_s: float = 10.0, memory_mb: int = 1024
    ) -> None:
        if sandbox is None:
            from environments.sandbox.process import ProcessSandbox

            sandbox = ProcessSandbox()
        self.sandbox = sandbox
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._task: Task | None = None
        self._attempts = 0

    async def reset(self, task: Task, *, seed: int | None = None) -> Observation:
        """Start an episode; the observation is the task's prompt."""
        missing = [k for k in ("entry_point", "test") if not task.payload.get(k)]
        if missing:
            raise TaskDataError(f"task {task.id!r} is not a code task: payload lacks {', '.join(missing)}")
        self._task, self._attempts = task, 0
        return Observation(text=task.prompt, data={"entry_point": task.payload["entry_point"]})

    async def step(self, action: Action) -> StepResult:
        """Run the submitted code against the hidden tests."""
        if self._task is None:
            raise RuntimeError("step() before reset()")
        self._attempts += 1
        out_of_attempts = self._attempts >= self.max_attempts
        if action.kind != "code" or not action.text.strip():
            obs = Observation(text="No code was found in your answer. Reply with a ```python code block.")
            return StepResult(obs, 0.0, terminated=False, truncated=out_of_attempts, info={"passed": False})
        result = await self.sandbox.run(
            ExecRequest(code=build_program(self._task, action.text), timeout_s=self.timeout_s, memory_mb=self.memory_mb)
        )
        passed = result.ok
        obs = Observation(
            text=_feedback(result),
            data={
                "passed": passed,
                "exit_code": result.exit_code,
                "timed_out": result.timed_out,
                "duration_s": result.duration_s,
            },
        )
        return StepResult(
            obs,
            1.0 if passed else 0.0,
            terminated=passed,
            truncated=not passed and out_of_attempts,
            info={"passed": passed},
        )

    async def close(self) -> None:
        self._task = None


def _feedback(result: ExecResult) -> str:
    if result.ok:
        return "All tests passed."
    if result.timed_out:
        return f"The tests timed out after {result.duration_s:.1f} s (an infinite loop or a very slow solution?)."
    if result.memory_exceeded:
        return "The program ran out of memory."
    tail = (result.stderr or result.stdout).strip()[-FEEDBACK_CHARS:]
    return f"The tests failed (exit code {result.exit_code}):\n{tail}"
