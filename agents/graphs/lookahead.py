"""The lookahead graph: imagine where each candidate action leads, then take the best one.

After WebEvolver's world-model look-ahead, per decision:

- ``propose``: ``candidates`` solver answers at ``explore_temperature``, duplicates dropped
  (fewer candidates when the model keeps answering the same; one goes straight to ``act``);
- ``imagine``: for each candidate at once, the world model predicts what the environment
  will show after it, and the judge scores that predicted state against the task;
- ``act``: the environment runs the best-scored candidate (the react graph's node).

Every model call is a step: the candidates (``solver``), the predictions (``world_model``,
the predicted observation in ``output``) and the judgements (``judge``, score and critique).
The candidate that was run gains the environment's observation — with the prediction made
for it, a (state, action, next state) example for training the world model.

Example:
    >>> graph = build_lookahead_graph()
    >>> final = await graph.ainvoke({"task": task}, context=LookaheadContext(model, env))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.graphs.react import SolverContext, SolverState, act, distinct, explore, model_failed, propose, reset
from agents.roles.judge import Judge
from agents.roles.world_model import WorldModel
from autodidact.types import Step


@dataclass(frozen=True)
class LookaheadContext(SolverContext):
    """The solver's context plus the world model, the judge and how many candidates."""

    world_model: WorldModel = field(default_factory=WorldModel)
    judge: Judge = field(default_factory=Judge)
    candidates: int = 3
    explore_temperature: float = 0.8


class LookaheadState(SolverState, total=False):
    candidates: list[int]  # indexes of this decision's distinct, parsed candidates


async def propose_actions(state: LookaheadState, runtime: Runtime[LookaheadContext]) -> dict[str, Any]:
    ctx = runtime.context
    sampling = explore(ctx, ctx.explore_temperature)
    steps = await propose(ctx, state["messages"], len(state["steps"]), n=ctx.candidates, sampling=sampling)
    if end := model_failed(steps):
        return end
    options = distinct([s for s in steps if s.error is None]) or steps[:1]  # none parsed: run the first, as react would
    update: dict[str, Any] = {"steps": steps, "candidates": [s.index for s in options]}
    if len(options) == 1:
        update["pending"] = options[0]
    return update


async def imagine(state: LookaheadState, runtime: Runtime[LookaheadContext]) -> dict[str, Any]:
    """Predict and judge each candidate's next state; the best candidate becomes ``pending``."""
    ctx = runtime.context
    base = len(state["steps"])
    options = [state["steps"][i] for i in state["candidates"]]

    async def look(k: int, candidate: Step) -> tuple[Step, Step, float]:
        now = state["observation"].text
        action = (candidate.completion or "").strip()
        guess = await ctx.call(ctx.world_model, index=base + 2 * k, observation=now, action=action)
        predicted = guess.output.observation if guess.output else "(no prediction)"
        fields = {"task": state["task"].prompt, "observation": now, "action": action, "predicted": predicted}
        verdict = await ctx.call(ctx.judge, index=base + 2 * k + 1, **fields)
        return guess.step, verdict.step, verdict.output.score if verdict.output else 0.0

    looks = await asyncio.gather(*(look(k, c) for k, c in enumerate(options)))
    best = max(range(len(options)), key=lambda k: looks[k][2])  # ties: the earlier candidate
    return {"steps": [s for guess, verdict, _ in looks for s in (guess, verdict)], "pending": options[best]}


async def _after_propose(state: LookaheadState) -> str:
    if state.get("done"):
        return END
    return "act" if state.get("pending") is not None else "imagine"


async def _after_act(state: LookaheadState) -> str:
    return END if state.get("done") else "propose"


def build_lookahead_graph(checkpointer: Any = None) -> Any:
    """Compile the lookahead graph (optionally with a LangGraph checkpointer)."""
    g = StateGraph(LookaheadState, context_schema=LookaheadContext)
    g.add_node("reset", reset)  # type: ignore[call-overload]
    g.add_node("propose", propose_actions)
    g.add_node("imagine", imagine)
    g.add_node("act", act)  # type: ignore[call-overload]
    g.add_edge(START, "reset")
    g.add_edge("reset", "propose")
    g.add_conditional_edges("propose", _after_propose, ["imagine", "act", END])
    g.add_edge("imagine", "act")
    g.add_conditional_edges("act", _after_act, ["propose", END])
    return g.compile(checkpointer=checkpointer)
