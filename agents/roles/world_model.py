"""The world model role: predicts the next observation after an action (a web page, test output).

Output :class:`Prediction` (``observation``: the predicted page text, in the environment's
own format). The parser keeps the answer's text, minus a leading ``Next page:`` label and
code fences; an empty answer is a parse error. The lookahead graph scores these predicted
pages to choose among candidate actions without acting on the real page.

Example:
    >>> WorldModel().parse('Next page:\\n[e4] button "Done"').output.observation
    '[e4] button "Done"'
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from agents.roles.base import Parsed, Role
from autodidact.types import SamplingParams

_LABEL = re.compile(r"(?i)^\s*(next page|predicted page|page|next)\s*:\s*")


class Prediction(BaseModel):
    model_config = ConfigDict(frozen=True)

    observation: str


class WorldModel(Role[Prediction]):
    name = "world_model"
    prompt = "world_model.txt"
    output = Prediction
    default_sampling = SamplingParams(temperature=0.0, max_tokens=256, stop=("\n\n\n",))

    def parse(self, text: str) -> Parsed[Prediction]:
        body = re.sub(r"```[a-z]*\n?", "", text)
        body = _LABEL.sub("", body, count=1).strip()
        if not body:
            return Parsed(None, "empty prediction: expected the next page's elements, one per line")
        return Parsed(Prediction(observation=body))
