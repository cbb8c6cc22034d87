"""A scripted chat model and a code task, for pinning down graphs' control flow."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from autodidact.types import Completion, Message, SamplingParams
from environments.tasks import load_suite

GOOD = "```python\ndef last(xs):\n    return xs[-1]\n```"
WRONG = "```python\ndef last(xs):\n    return xs[0]\n```"


class ScriptedModel:
    """Answers from a script; an Exception in the script is raised, 'HANG' sleeps, 'ERROR' is a backend fault."""

    name = "scripted"

    def __init__(self, script: Sequence[str | BaseException]) -> None:
        self.script = list(script)
        self.seen: list[list[Message]] = []
        self.samplings: list[SamplingParams] = []

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        out = []
        for conv in conversations:
            self.seen.append(list(conv))
            self.samplings.append(sampling)
            item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            if isinstance(item, BaseException):
                raise item
            if item == "HANG":
                await asyncio.sleep(3600)
            if item == "ERROR":
                out.append(Completion(text="", finish_reason="error", error="server returned 500 after 5 attempts"))
            else:
                out.append(Completion(text=item, token_ids=(1, 2), logprobs=(-0.1, -0.2)))
        return out

    async def aclose(self) -> None:
        pass


TASK = load_suite("bundled")[0]  # last(xs)
