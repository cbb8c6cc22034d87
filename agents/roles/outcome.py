"""The outcome role: says whether an episode accomplished its task, ``YES`` or ``NO``.

This is WebRL's outcome reward model as a role: :func:`transcript` writes what the agent did
(its actions, and what it saw between them — never the environment's verdict on the last one),
the prompt asks for one word, and :class:`training.webrl.OutcomeRewardModel` reads the
probability of success from the two logits of ``YES`` and ``NO`` at the answer's first token.
Trained by SFT on the ``orm`` data kind (each finished episode and its real outcome).
The parser reads the first ``yes`` / ``no`` (any case); anything else is a parse error.

Example:
    >>> OutcomeJudge().parse("YES").output.yes
    True
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from agents.roles.base import Parsed, Role
from autodidact.types import SamplingParams, Trajectory

TRANSCRIPT_CHARS = 3000  # the transcript's end is kept when it is longer
_WORD = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


class YesNo(BaseModel):
    model_config = ConfigDict(frozen=True)

    yes: bool


class OutcomeJudge(Role[YesNo]):
    name = "outcome"
    prompt = "outcome.txt"
    output = YesNo
    default_sampling = SamplingParams(temperature=0.0, max_tokens=2)

    def parse(self, text: str) -> Parsed[YesNo]:
        match = _WORD.search(text)
        if match is None:
            return Parsed(None, "no answer: expected YES or NO")
        return Parsed(YesNo(yes=match.group(1).lower() == "yes"))


def transcript(traj: Trajectory, roles: tuple[str, ...] | list[str] = ("solver",)) -> str:
    """What the agent did in ``traj``: each acting step's answer, and what the environment showed
    after it except after the last one (that is where the verdict — test results, a reward — is)."""
    acts = [  # not a candidate the graph did not act on
        s
        for s in traj.steps
        if s.role in roles and s.completion and not (s.action is not None and s.observation is None)
    ]
    parts = []
    for i, step in enumerate(acts):
        parts.append(f"Action {i + 1}:\n{(step.completion or '').strip()}")
        if i < len(acts) - 1 and step.observation is not None:
            parts.append(f"Then the environment showed:\n{step.observation.text.strip()}")
    text = "\n\n".join(parts) or "(nothing)"
    return text if len(text) <= TRANSCRIPT_CHARS else "…" + text[-TRANSCRIPT_CHARS:]
