"""The reflector role: one lesson from a failed episode, for reflection memory.

Output :class:`Lesson` (``text``). The parser takes the ``Reflection:`` (or ``Lesson:``) line,
else the first non-empty line; an empty answer is a parse error. The runner calls it after
an episode that failed without a lesson of its own (a reflexion episode's refiner writes
them) and keeps the lesson in :class:`~memory.reflections.ReflectionMemory`.

Example:
    >>> Reflector().parse("Reflection: check for the empty list first.\\nMore text.").output.text
    'check for the empty list first.'
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from agents.roles.base import Parsed, Role, labelled
from autodidact.types import SamplingParams

_MAX_CHARS = 400


class Lesson(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str


class Reflector(Role[Lesson]):
    name = "reflector"
    prompt = "reflector.txt"
    output = Lesson
    default_sampling = SamplingParams(temperature=0.0, max_tokens=64, stop=("\n\n",))

    def parse(self, text: str) -> Parsed[Lesson]:
        found = labelled(text, "reflection") or labelled(text, "lesson")
        if found is None:
            found = next((line.strip() for line in text.splitlines() if line.strip()), None)
        if not found:
            return Parsed(None, "empty answer: expected a line 'Reflection: <one sentence>'")
        return Parsed(Lesson(text=found.splitlines()[0].strip()[:_MAX_CHARS]))
