"""The refiner role: rewrites an attempt from the feedback and the critique, and reflects.

Output :class:`Refinement` (``reflection``: a lesson for memory; ``answer``: the new attempt,
parsed afterwards by the solver's parser for the environment). The parser reads
``Reflection:`` and ``Answer:`` sections (or a JSON object). An answer without an
``Answer:`` label is the text after the reflection (or all of it); a missing reflection is
recorded as a parse error but the answer is kept — the new attempt is still worth running.

Example:
    >>> Refiner().parse("Reflection: check n == 0.\\nAnswer:\\nclick(e4)").output.answer
    'click(e4)'
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from agents.roles.base import Parsed, Role, json_object, labelled
from autodidact.types import SamplingParams

_ANSWER = re.compile(r"(?im)^[ \t*#>-]*answer[ \t*]*:[ \t*]*")
_REFLECTION_LINE = re.compile(r"(?im)^[ \t*#>-]*reflection[ \t*]*:.*$")


class Refinement(BaseModel):
    model_config = ConfigDict(frozen=True)

    reflection: str = ""
    answer: str


class Refiner(Role[Refinement]):
    name = "refiner"
    prompt = "refiner.txt"
    output = Refinement
    default_sampling = SamplingParams(temperature=0.0, max_tokens=384)

    def parse(self, text: str) -> Parsed[Refinement]:
        data = json_object(text)
        if data is not None and isinstance(data.get("answer"), str) and data["answer"].strip():
            return Parsed(Refinement(reflection=str(data.get("reflection", "")).strip(), answer=data["answer"].strip()))
        split = _ANSWER.search(text)
        before, answer = (text[: split.start()], text[split.end() :]) if split else (text, "")
        reflection_line = _REFLECTION_LINE.search(before)
        reflection = labelled(before, "reflection") or ""
        if not split:  # no label: the answer is what follows the reflection line, or everything
            answer = text[reflection_line.end() :] if reflection_line else text
        answer = answer.strip()
        if not answer:
            return Parsed(None, "no answer found: expected an 'Answer:' section with the new attempt")
        out = Refinement(reflection=reflection.split("\n")[0].strip(), answer=answer)
        return Parsed(out, None if out.reflection else "no 'Reflection:' line (the answer is kept)")
