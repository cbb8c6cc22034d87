"""Run the solver graph on your own task file, from Python, and look at what was stored.

A task file is JSON lines with ``id``, ``prompt``, ``entry_point`` and ``test`` (code that
defines ``check(candidate)``), optionally ``split``. The same file works on the command line:

    autodidact run --suite examples/string_tasks.jsonl

Run this script (it loads the embedded model, ~5 s, and answers 3 tasks):

    .venv/bin/python examples/run_custom_suite.py
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agents.llm.base import ChatModel, resolve_model
from agents.rollout import RunConfig, run_rollout
from memory.base import TrajectoryQuery, open_store

TASKS = Path(__file__).with_name("string_tasks.jsonl")


async def main(model_spec: str = "embedded", store_path: str | None = None, model: ChatModel | None = None) -> float:
    """Run every task of the example suite once; print each result; return the success rate."""
    own_model = model is None
    model = model or resolve_model(model_spec).build()
    with open_store(store_path) as store:
        result = await run_rollout(RunConfig(suite=str(TASKS), model=model_spec), model, store, progress=False)
        for t in store.query(TrajectoryQuery(run_id=result.run_id)):
            step = t.steps[0]
            print(f"{t.task.id}: {'passed' if t.success else 'failed'}\n{step.completion}\n")
    if own_model:
        await model.aclose()
    print(f"success rate {result.success_rate:.0%} (run {result.run_id})")
    return result.success_rate


if __name__ == "__main__":
    asyncio.run(main())
