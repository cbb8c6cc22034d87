"""The verifier role: judges one step of a finished attempt ``good``, ``bad`` or ``uncertain``.

Agent-R's first-error search (:mod:`training.agent_r`) asks the current policy, acting as this
role, about each step of a failed path in turn, and cuts the path at the first ``bad`` one.
Output :class:`Verdict`. The parser reads a ``Verdict:`` line if there is one, else the first of
the words good / bad / uncertain (any case, also ``correct``, ``wrong``, ``mistake``,
``unsure``); an answer with none of them is a parse error, which the caller reads as
``uncertain``.

Example:
    >>> Verifier().parse("Bad - it returns the last element").output.label
    'bad'
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agents.roles.base import Parsed, Role, labelled
from autodidact.types import SamplingParams

Label = Literal["good", "bad", "uncertain"]
_WORDS: dict[str, Label] = {
    "good": "good",
    "correct": "good",
    "bad": "bad",
    "wrong": "bad",
    "mistake": "bad",
    "uncertain": "uncertain",
    "unsure": "uncertain",
}
_WORD = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.IGNORECASE)


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: Label


class Verifier(Role[Verdict]):
    name = "verifier"
    prompt = "verifier.txt"
    output = Verdict
    default_sampling = SamplingParams(temperature=0.0, max_tokens=16)

    def parse(self, text: str) -> Parsed[Verdict]:
        for part in (labelled(text, "verdict"), text):
            match = _WORD.search(part or "")
            if match:
                return Parsed(Verdict(label=_WORDS[match.group(1).lower()]))
        return Parsed(None, "no verdict: expected Good, Bad or Uncertain")
