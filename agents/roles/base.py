"""What every role is made of: a prompt file, a typed output, a tolerant parser, its sampling.

A role's prompt is a file in ``prompts/`` made of message sections::

    === system ===
    You review answers. ...
    === user ===
    Task: {task}
    ...

(``=== assistant ===`` sections add example turns.) ``{name}`` fields are filled from the
call's keyword arguments; a field the call does not give is a clear error, and braces that
name no field (``{"score": 0.8}``) are left as they are. A file without sections is one
system message.

:meth:`Role.call` sends the messages to the role's model with the role's sampling, parses the
answer into the role's pydantic output and returns a :class:`RoleCall`: the parsed output
(None when the answer did not parse) and a :class:`~autodidact.types.Step` that records the
call — messages, completion, token ids, logprobs, latency, the parsed output as a dict, and
the parse or model error.
A parser never raises on model text: it returns what it could read and says what it could
not. Adding a role is one module: subclass :class:`Role`, set ``name``, ``prompt`` and
``sampling``, write ``parse`` (see ``examples/custom_role.py``).

Example:
    >>> review = await Reviewer().call(model, task="...", attempt="...", feedback="...")  # doctest: +SKIP
    >>> review.output.score if review.output else review.step.error  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import re
import string
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from agents.llm.base import ChatModel
from autodidact.errors import ConfigError
from autodidact.types import Completion, Message, SamplingParams, Step

Out = TypeVar("Out", bound=BaseModel)
PROMPTS = Path(__file__).parent / "prompts"
_SECTION = re.compile(r"^=== (system|user|assistant) ===[ \t]*$", re.MULTILINE)


@cache
def load_template(path: Path) -> tuple[tuple[str, str], ...]:
    """A prompt file as ``(role, text)`` sections (a file without sections: one system message)."""
    text = path.read_text()
    marks = list(_SECTION.finditer(text))
    if not marks:
        return (("system", text.strip()),)
    if text[: marks[0].start()].strip():
        raise ConfigError(f"{path}: text before the first '=== system|user|assistant ===' line")
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return tuple((m.group(1), text[m.end() : end].strip()) for m, end in zip(marks, ends, strict=True))


def fill(template: str, fields: dict[str, Any], *, where: str) -> str:
    """``template`` with its ``{name}`` fields filled; other braces are kept as written."""
    out: list[str] = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        if not name.isidentifier():  # JSON in an example, not a field
            out.append("{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
            continue
        if name not in fields:
            raise ConfigError(f"{where} uses {{{name}}}, which the call did not give (gave: {', '.join(fields)})")
        out.append(str(fields[name]))
    return "".join(out)


@dataclass(frozen=True)
class Parsed(Generic[Out]):
    """What a parser read: the output (None when nothing usable), and what it could not read."""

    output: Out | None
    error: str | None = None


@dataclass(frozen=True)
class RoleCall(Generic[Out]):
    """One call of a role: the trajectory step that records it and the parsed output."""

    step: Step
    output: Out | None


class Role(Generic[Out]):
    """A role (see the module docstring). Subclasses set the class variables and ``parse``."""

    name: ClassVar[str]
    prompt: ClassVar[str]  # a file name in prompts/, or an absolute path
    output: ClassVar[type[BaseModel]]
    default_sampling: ClassVar[SamplingParams] = SamplingParams(temperature=0.0, max_tokens=256)

    def __init__(self, *, sampling: SamplingParams | None = None) -> None:
        self.sampling = sampling or self.default_sampling

    def messages(self, **fields: Any) -> list[Message]:
        """The conversation for one call, from the prompt file and ``fields``."""
        path = Path(self.prompt) if Path(self.prompt).is_absolute() else PROMPTS / self.prompt
        where = f"prompt {path.name}"
        return [Message(role=r, content=fill(t, fields, where=where)) for r, t in load_template(path)]  # type: ignore[arg-type]

    def parse(self, text: str) -> Parsed[Out]:
        raise NotImplementedError

    async def call(
        self,
        model: ChatModel,
        *,
        index: int = 0,
        sampling: SamplingParams | None = None,
        timeout_s: float | None = None,
        **fields: Any,
    ) -> RoleCall[Out]:
        """Ask ``model`` once (with ``sampling``, default the role's); the step records the
        call, whatever happened — a call longer than ``timeout_s`` is a recorded model error."""
        messages = self.messages(**fields)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                [completion] = await model.generate([messages], sampling or self.sampling)
        except TimeoutError:
            completion = Completion(text="", finish_reason="error", error=f"no answer within {timeout_s:g} s")
        step = Step(
            index=index,
            role=self.name,
            messages=tuple(messages),
            completion=completion.text,
            token_ids=completion.token_ids,
            logprobs=completion.logprobs,
            latency_s=time.perf_counter() - start,
        )
        if completion.finish_reason == "error":
            return RoleCall(step.model_copy(update={"error": f"model: {completion.error}"}), None)
        parsed = self.parse(completion.text)
        error = f"parse: {parsed.error}" if parsed.error else None
        output = parsed.output.model_dump(mode="json") if parsed.output is not None else None
        return RoleCall(step.model_copy(update={"error": error, "output": output}), parsed.output)


# -- tolerant reading helpers ------------------------------------------------------------------


def json_object(text: str) -> dict[str, Any] | None:
    """The last ``{...}`` in ``text`` that parses as a JSON object, if any."""
    for match in reversed(list(re.finditer(r"\{[^{}]*\}", text, re.DOTALL))):
        try:
            value = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def labelled(text: str, label: str) -> str | None:
    """The value after ``Label:`` on a line (any case, markdown bold allowed), up to the next label."""
    pattern = rf"(?im)^[ \t*#>-]*{re.escape(label)}[ \t*]*:[ \t*]*(.*(?:\n(?![ \t*#>-]*\w[\w ]{{0,20}}:).*)*)"
    match = re.search(pattern, text)
    if match is None:
        return None
    return match.group(1).strip() or None


def validated(output: type[Out], data: dict[str, Any]) -> Parsed[Out]:
    """``data`` as ``output``, or why it is not one."""
    try:
        return Parsed(output.model_validate(data))  # type: ignore[arg-type]
    except ValidationError as e:
        first = e.errors()[0]
        return Parsed(None, f"{'.'.join(map(str, first['loc'])) or 'output'}: {first['msg']}")
