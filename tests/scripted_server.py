"""``autodidact serve``'s app over a scripted model, in a process of its own (for fault tests).

    python -m tests.scripted_server PORT LOG

Serves :func:`agents.llm.server.create_app` on ``127.0.0.1:PORT`` under the name ``scripted``.
Every answer is the right solution of the bundled ``last(xs)`` task (``tests.agents.scripted.GOOD``),
given after ``DELAY_S``, so that a test can kill the server while requests are in flight.
Each request appends ``<pid> start`` when it arrives and ``<pid> end`` when it is answered to
LOG, which tells which requests a killed server never answered.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from autodidact.types import Completion, Message, SamplingParams

DELAY_S = 0.5


class SlowGoodModel:
    """A ChatModel that answers GOOD after ``DELAY_S`` and logs each request's start and end."""

    name = "scripted"

    def __init__(self, log: str) -> None:
        self.log = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _note(self, what: str) -> None:
        os.write(self.log, f"{os.getpid()} {what}\n".encode())  # one write per line: O_APPEND keeps lines whole

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        from tests.agents.scripted import GOOD

        self._note("start")
        await asyncio.sleep(DELAY_S)
        self._note("end")
        return [Completion(text=GOOD, token_ids=(1, 2), logprobs=(-0.1, -0.2)) for _ in conversations]

    async def aclose(self) -> None:
        os.close(self.log)


def main(argv: list[str]) -> None:
    import uvicorn

    from agents.llm.server import create_app

    port, log = int(argv[0]), argv[1]
    uvicorn.run(create_app(SlowGoodModel(log), "scripted"), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])
