"""A new role in one file: a "planner" that writes a short numbered plan before the solver acts.

A role is a prompt file (here ``planner.txt`` next to this script), a pydantic output, a
tolerant parser and its own sampling; :meth:`~agents.roles.base.Role.call` returns the parsed
output and the trajectory step that records the call (messages, completion, token ids,
logprobs, latency, and any parse error). Register it to make it available by id:

    register("role", "planner", "examples.custom_role:Planner")

Run it with the embedded model (loads in ~5 s):

    .venv/bin/python examples/custom_role.py
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from agents.llm.base import ChatModel, resolve_model
from agents.roles.base import Parsed, Role
from autodidact.types import SamplingParams


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    steps: tuple[str, ...] = Field(min_length=1)


class Planner(Role[Plan]):
    name = "planner"
    prompt = str(Path(__file__).with_name("planner.txt"))  # an absolute path, or a name in agents/roles/prompts/
    output = Plan
    default_sampling = SamplingParams(temperature=0.0, max_tokens=96)
    numbered: ClassVar[re.Pattern[str]] = re.compile(r"^\s*(?:\d+[.)]|[-*])\s*(.+)$", re.MULTILINE)

    def parse(self, text: str) -> Parsed[Plan]:
        steps = tuple(s.strip() for s in self.numbered.findall(text) if s.strip())
        if not steps:  # tolerant: unnumbered lines are steps too
            steps = tuple(line.strip() for line in text.splitlines() if line.strip())
        if not steps:
            return Parsed(None, "empty plan: expected numbered steps, one per line")
        return Parsed(Plan(steps=steps))


async def main(model: ChatModel | None = None) -> Plan | None:
    model = model or resolve_model("embedded").build()
    call = await Planner().call(model, task="Write a function that reverses a string.", max_steps=3)
    print("completion:", call.step.completion)
    print("plan:", call.output.steps if call.output else None, "| error:", call.step.error)
    return call.output


if __name__ == "__main__":
    asyncio.run(main())
