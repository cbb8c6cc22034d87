"""How well a world model predicts what the environment shows next, on held-out transitions.

The transitions are the ``world_model`` rows of the given runs (:func:`training.data.world_model_rows`:
what the environment showed, an action, what it showed next); run them from tasks the world
model was not trained on (the held-out split's runs). The model answers each prompt as the
``world_model`` role (greedy) and its prediction is compared with what really came next:

- ``exact``: the share of predictions equal to the real observation (whitespace-normalised
  lines) — *next-observation accuracy*;
- ``line_f1``: the mean F1 between the predicted and the real lines (as multisets), which
  gives credit for a page that is mostly right.

Train a world model with ``autodidact train --method sft --data world_model --name wm`` (or
``roles: {world_model: [world_model]}`` in ``autodidact evolve``), use it in the lookahead graph
with ``--graph lookahead --role-model world_model=wm``, and measure it with
``autodidact world-model eval --model wm --run HELD_OUT_RUN``.

Example:
    >>> line_f1("[e1] button 'OK'\\n[e2] link 'Home'", "[e1] button 'OK'\\n[e3] link 'Cart'")
    0.5
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from autodidact.types import Message

if TYPE_CHECKING:
    from agents.llm.base import ChatModel
    from memory.base import TrajectoryStore


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def line_f1(predicted: str, real: str) -> float:
    """F1 of the predicted lines against the real ones (multisets, whitespace-normalised)."""
    p, r = Counter(_lines(predicted)), Counter(_lines(real))
    if not p and not r:
        return 1.0
    common = sum((p & r).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


async def score_predictions(
    model: ChatModel, rows: Sequence[dict[str, Any]], *, concurrency: int = 8
) -> dict[str, float]:
    """Predict each row's next observation with ``model``; exact-match accuracy and mean line F1."""
    from agents.roles.world_model import WorldModel

    role = WorldModel()
    gate = asyncio.Semaphore(concurrency)

    async def one(row: dict[str, Any]) -> tuple[bool, float]:
        prompt = [Message(**m) for m in row["messages"][:-1]]
        real = row["messages"][-1]["content"]
        async with gate:
            [out] = await model.generate([prompt], role.default_sampling)
        parsed = role.parse(out.text).output if out.error is None else None
        predicted = parsed.observation if parsed is not None else ""
        return _lines(predicted) == _lines(real), line_f1(predicted, real)

    scores = await asyncio.gather(*(one(r) for r in rows))
    n = len(scores)
    return {
        "transitions": float(n),
        "exact": sum(e for e, _ in scores) / n if n else 0.0,
        "line_f1": sum(f for _, f in scores) / n if n else 0.0,
    }


def held_out_transitions(store: TrajectoryStore, runs: list[str], limit: int | None = None) -> list[dict[str, Any]]:
    """The ``world_model`` rows of ``runs`` (at most ``limit``, in the builder's sorted order).

    Raises:
        NothingToTrainError: the runs have no transition (a one-step episode has none).
    """
    from training.data import DataFields, build_examples

    rows = build_examples(DataFields(run=runs), store, "world_model").rows
    return rows[:limit] if limit else rows


def evaluate_world_model(
    spec: str, store: TrajectoryStore, runs: list[str], *, limit: int | None = 64
) -> dict[str, float]:
    """Next-observation accuracy of model ``spec`` (any ``--model`` spec) on the transitions of ``runs``."""
    from agents.llm.base import resolve_model

    rows = held_out_transitions(store, runs, limit)
    model = resolve_model(spec).build()

    async def go() -> dict[str, float]:
        try:
            return await score_predictions(model, rows)
        finally:
            await model.aclose()

    return asyncio.run(go())
