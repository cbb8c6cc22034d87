"""The reviewer role: scores an attempt from the environment's feedback and says what to fix.

Output :class:`Review` (``score`` in 0..1, ``critique``). The parser reads a JSON object, or
``Score:`` / ``Critique:`` lines; a score may be written ``7``, ``7/10``, ``0.7`` or ``70%``
(a whole number or one above 1 is read out of 10, above 10 out of 100; a
fraction like ``0.7`` as it is). No score is a parse error;
text without a ``Critique:`` label is taken as the critique.

Example:
    >>> Reviewer().parse("Score: 3/10\\nCritique: off by one in the loop bound.").output.score
    0.3
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents.roles.base import Parsed, Role, json_object, labelled, validated
from autodidact.types import SamplingParams

_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)\s*(%|/\s*(\d+(?:\.\d+)?))?")


class Review(BaseModel):
    model_config = ConfigDict(frozen=True)

    score: float = Field(ge=0.0, le=1.0, description="how likely the attempt is right, 0..1")
    critique: str = ""


def read_score(text: str) -> float | None:
    """A score in 0..1 from ``7``, ``7/10``, ``0.7`` or ``70%``; None when there is no number."""
    match = _NUMBER.search(text)
    if not match:
        return None
    value = float(match.group(1))
    if match.group(2) == "%":
        value /= 100
    elif match.group(3):
        value /= float(match.group(3)) or 1.0
    elif value > 10:
        value /= 100
    elif value > 1 or "." not in match.group(1):  # the prompts ask for 0..10: a whole number is out of 10
        value /= 10
    return min(1.0, max(0.0, value))


class Reviewer(Role[Review]):
    name = "reviewer"
    prompt = "reviewer.txt"
    output = Review
    default_sampling = SamplingParams(temperature=0.0, max_tokens=160)

    def parse(self, text: str) -> Parsed[Review]:
        data: dict[str, Any] | None = json_object(text)
        if data is not None and "score" in data:
            score = read_score(str(data["score"]))
            return validated(Review, {"score": score, "critique": str(data.get("critique", ""))})
        raw = labelled(text, "score")
        score = read_score(raw) if raw else None
        if score is None:
            return Parsed(None, "no score found: expected a line 'Score: <0-10>'")
        critique = labelled(text, "critique")
        if critique is None:  # whatever is not the score line
            critique = re.sub(r"(?im)^[ \t*#>-]*score[ \t*]*:.*$", "", text).strip()
        return validated(Review, {"score": score, "critique": critique})
