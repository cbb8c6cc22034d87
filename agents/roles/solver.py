"""The solver role for code tasks: its prompt, and the parser that turns its answer into an action.

The prompt is kept as a file (``prompts/solver_code.txt``). The parser is tolerant: it takes
the first fenced code block (closed or not — generation may stop at the closing fence),
else the whole answer when it looks like Python. When nothing usable is found the action is
empty and :class:`ParsedAction` carries the reason, which the trajectory records.

Example:
    >>> parse_code_action("Sure:\\n```python\\ndef f():\\n    return 1\\n```").action.text
    'def f():\\n    return 1'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from autodidact.types import Action, Message, Observation

ROLE = "solver"
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHONISH = re.compile(r"^\s*(def |class |import |from |async def |@)", re.MULTILINE)


@cache
def system_prompt() -> str:
    """The solver's system prompt for code tasks."""
    return (Path(__file__).parent / "prompts" / "solver_code.txt").read_text().strip()


def initial_messages(observation: Observation) -> list[Message]:
    """The conversation that opens an episode: the system prompt and the task."""
    return [Message(role="system", content=system_prompt()), Message(role="user", content=observation.text)]


def feedback_messages(completion: str, observation: Observation) -> list[Message]:
    """What a further attempt adds: the previous answer and the environment's feedback."""
    return [
        Message(role="assistant", content=completion),
        Message(
            role="user", content=observation.text + "\nFix the function and reply with the whole corrected code block."
        ),
    ]


@dataclass(frozen=True)
class ParsedAction:
    """A parsed answer: the action, and why parsing fell short (None when it did not)."""

    action: Action
    error: str | None = None


def parse_code_action(text: str) -> ParsedAction:
    """Extract the code from a model answer (see the module docstring)."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    python_blocks = [b for lang, b in blocks if lang in ("python", "py", "python3", "")]
    for body in python_blocks or [b for _, b in blocks]:
        if body.strip():
            return ParsedAction(Action(kind="code", text=body.strip("\n").rstrip()))
    if not blocks and _PYTHONISH.search(text):
        return ParsedAction(Action(kind="code", text=text.strip("\n").rstrip()))
    return ParsedAction(Action(kind="code", text=""), error="no code block found in the answer")
