"""The solver role: its prompts, and the parsers that turn its answer into an action.

There is one prompt per environment, kept as a file (``prompts/solver_<env>.txt``).

- ``code``: the parser is tolerant: it takes the first fenced code block (closed or not —
  generation may stop at the closing fence), else the whole answer when it looks like Python.
  Further attempts see the whole conversation (answer, feedback, answer…).
- ``web``: the parser reads one action call (:func:`environments.web.actions.parse_action`);
  an answer that does not parse is passed on as text, and the environment shows the error.
  Each turn sees the goal, its own previous actions and the current page only (pages are
  long; a small model's context is not).
- ``browsergym``: as ``web``, with BrowserGym's action calls (``click("13")``), read by
  :func:`environments.web.browsergym.parse_action`.

When nothing usable is found :class:`ParsedAction` carries the reason, which the trajectory
records.

Example:
    >>> parse_code_action("Sure:\\n```python\\ndef f():\\n    return 1\\n```").action.text
    'def f():\\n    return 1'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from agents.roles.base import PROMPTS, load_template
from autodidact.types import Action, Message, Observation

ROLE = "solver"
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHONISH = re.compile(r"^\s*(def |class |import |from |async def |@)", re.MULTILINE)
PAGE_ENVS = ("web", "browsergym")  # environments whose turns show the latest page, not the whole conversation


@cache
def _template(env_id: str) -> tuple[str, list[Message]]:
    """The prompt file for ``env_id``: its system text, and the example turns it may carry."""
    path = PROMPTS / f"solver_{env_id}.txt"
    sections = load_template(path if path.is_file() else PROMPTS / "solver_code.txt")
    system = "\n\n".join(text for role, text in sections if role == "system")
    return system, [Message(role=role, content=text) for role, text in sections if role != "system"]  # type: ignore[arg-type]


def system_prompt(env_id: str = "code") -> str:
    """The solver's system prompt for an environment (``code``, ``web`` or ``browsergym``)."""
    return _template(env_id)[0]


def initial_messages(observation: Observation, env_id: str = "code") -> list[Message]:
    """The conversation that opens an episode: the system prompt, the example turn (web), the task."""
    system, example = _template(env_id)
    return [Message(role="system", content=system), *example, Message(role="user", content=_ask(observation, env_id))]


def with_memory(messages: list[Message], lessons: Sequence[str] = (), skills: str = "") -> list[Message]:
    """``messages`` with ``lessons`` (reflections from earlier attempts) and ``skills`` (the
    retrieved skills' prompt section, :func:`skills.use.skills_prompt`) at the end of the system
    message, which every later turn keeps (a web turn replaces the page, not the system prompt)."""
    notes = []
    if skills:
        notes.append(skills)
    if lessons:
        listed = "\n".join(f"- {lesson}" for lesson in lessons)
        notes.append(f"Lessons from earlier attempts at this task and similar ones:\n{listed}")
    if not notes:
        return messages
    system = messages[0]
    content = "\n\n".join([system.content, *notes])
    return [Message(role=system.role, content=content), *messages[1:]]


def _ask(observation: Observation, env_id: str) -> str:
    return f"{observation.text}\n\nYour action:" if env_id in PAGE_ENVS else observation.text


def next_messages(
    messages: list[Message], completions: list[str], observation: Observation, env_id: str = "code"
) -> list[Message]:
    """The conversation for the next turn: ``completions`` are the episode's answers so far,
    the last of which led to ``observation``."""
    if env_id in PAGE_ENVS:  # the page changes, so the conversation is rebuilt: the latest page, the actions so far
        history = "\n".join(f"{i}. {c.strip()}" for i, c in enumerate(completions, 1))
        prompt = f"{observation.text}\n\nYour previous actions:\n{history}\n\nYour action:"
        return [*messages[:-1], Message(role="user", content=prompt)]
    return [
        *messages,
        Message(role="assistant", content=completions[-1]),
        Message(
            role="user", content=observation.text + "\nFix the function and reply with the whole corrected code block."
        ),
    ]


@dataclass(frozen=True)
class ParsedAction:
    """A parsed answer: the action, and why parsing fell short (None when it did not)."""

    action: Action
    error: str | None = None


def parse_action(text: str, env_id: str = "code") -> ParsedAction:
    """Parse a model answer into the action for ``env_id``'s environment."""
    if env_id == "web":
        from environments.web.actions import ActionError
        from environments.web.actions import parse_action as parse_web

        try:
            return ParsedAction(parse_web(text))
        except ActionError as e:
            return ParsedAction(Action(kind="text", text=text), error=str(e))
    if env_id == "browsergym":
        from environments.web.actions import ActionError
        from environments.web.browsergym import parse_action as parse_browsergym

        try:  # any BrowserGym action: the environment holds the agent to its own action set
            call = parse_browsergym(text, allowed=None)
        except ActionError as e:
            return ParsedAction(Action(kind="text", text=text), error=str(e))
        return ParsedAction(Action(kind=call.partition("(")[0], text=call))
    return parse_code_action(text)


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


def code_answer(code: str) -> str:
    """The answer the code prompt asks for, holding ``code``: one ```python block and nothing
    else. :func:`parse_code_action` reads ``code`` back from it."""
    return f"```python\n{code}\n```"
