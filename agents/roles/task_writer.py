"""Roles of the self-evolving curriculum: the task writer and the feasibility judge.

:class:`TaskWriter` writes a new code task from one the policy failed: a one-sentence
``Task:`` naming the function in backticks, a ``Solution:`` and assert ``Tests:``. Its output
:class:`WrittenTask` has the prompt, the entry point (from the solution's ``def``), the
solution and the asserts that call the entry point; a missing part is a parse error.
:class:`FeasibilityJudge` answers ``YES`` / ``NO``: is the task clear, small and are its
tests about what it asks (WebRL's filter of generated tasks). :mod:`training.curriculum` runs
both and checks every written task in the sandbox.

Example:
    >>> text = "Task: Write a Python function `inc(n)` that adds one to `n`.\\nSolution:\\n" \\
    ...        "```python\\ndef inc(n):\\n    return n + 1\\n```\\nTests:\\nassert inc(1) == 2"
    >>> TaskWriter().parse(text).output.entry_point
    'inc'
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from agents.roles.base import Parsed, Role, labelled
from agents.roles.outcome import OutcomeJudge
from autodidact.types import SamplingParams

_DEF = re.compile(r"^def ([A-Za-z_]\w*)\s*\(", re.MULTILINE)
_FENCE = re.compile(r"```(?:python)?\n(.*?)```", re.DOTALL)


class WrittenTask(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt: str
    entry_point: str
    solution: str
    tests: tuple[str, ...]


class TaskWriter(Role[WrittenTask]):
    name = "task_writer"
    prompt = "task_writer.txt"
    output = WrittenTask
    default_sampling = SamplingParams(temperature=0.8, max_tokens=256)

    def parse(self, text: str) -> Parsed[WrittenTask]:
        task = (labelled(text, "task") or "").split("\n")[0].strip()
        head, _, after = text.partition("Tests:")
        fenced = _FENCE.search(head)
        solution = fenced.group(1) if fenced else head.partition("Solution:")[2]
        found = _DEF.search(solution)
        if not task or found is None:
            return Parsed(None, "expected 'Task: ...' and a 'Solution:' with a def")
        entry = found.group(1)
        tests = tuple(
            line.strip() for line in after.splitlines() if line.strip().startswith("assert") and f"{entry}(" in line
        )
        if not tests:
            return Parsed(None, f"expected 'Tests:' with assert lines that call {entry}")
        return Parsed(WrittenTask(prompt=task, entry_point=entry, solution=solution.strip() + "\n", tests=tests))


class FeasibilityJudge(OutcomeJudge):
    name = "feasibility"
    prompt = "feasibility.txt"
