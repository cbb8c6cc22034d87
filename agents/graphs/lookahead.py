"""The lookahead graph: imagine where each candidate action leads, then take the best one.

After WebEvolver's world-model look-ahead, per decision:

- ``propose``: ``candidates`` solver answers at ``explore_temperature``, duplicates dropped
  (fewer candidates when the model keeps answering the same; one goes straight to ``act``);
- ``imagine``: for each candidate at once, the world model predicts what the environment
  will show after it, and the judge scores that predicted state against the task. With
  ``depth`` > 1 the imagined episode goes on: the solver answers the predicted page (greedy,
  its sampling at temperature 0), the world model predicts again, ``depth`` predictions in all
  (fewer when an imagined answer does not parse), and the judge scores the last predicted state
  with the whole imagined chain of actions;
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

from agents.graphs.react import SolverContext, SolverState, act, acted, distinct, explore, model_failed, propose, reset
from agents.roles import solver
from agents.roles.judge import Judge
from agents.roles.world_model import WorldModel
from autodidact.errors import ConfigError
from autodidact.types import Observation, Step


@dataclass(frozen=True)
class LookaheadContext(SolverContext):
    """The solver's context plus the world model, the judge and how many candidates."""

    world_model: WorldModel = field(default_factory=WorldModel)
    judge: Judge = field(default_factory=Judge)
    candidates: int = 3
    explore_temperature: float = 0.8
    depth: int = 1  # predictions per candidate: how many steps ahead it is imagined

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ConfigError(f"lookahead needs depth >= 1, got {self.depth}")


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

    width = 2 * ctx.depth  # steps one candidate's look may take: predictions, imagined answers, the verdict
    trial = acted(state["steps"][state.get("trial_start", 0) :])
    greedy = ctx.sampling.model_copy(update={"temperature": 0.0})

    async def look(k: int, candidate: Step) -> tuple[list[Step], float]:
        now = state["observation"].text
        index = base + width * k
        steps: list[Step] = []
        messages, said, move, actions = state["messages"], [s.completion or "" for s in trial], candidate, []
        predicted = "(no prediction)"
        for d in range(ctx.depth):
            action = (move.completion or "").strip()
            actions.append(action)
            guess = await ctx.call(ctx.world_model, index=index + len(steps), observation=now, action=action)
            steps.append(guess.step)
            if guess.output is None:
                break
            predicted = guess.output.observation
            if d + 1 == ctx.depth:
                break
            said = [*said, move.completion or ""]
            messages = solver.next_messages(messages, said, Observation(text=predicted), ctx.env.id)
            [move] = await propose(ctx, messages, index + len(steps), sampling=greedy)
            steps.append(move)
            if move.action is None:  # the imagined answer did not parse: judge what was predicted so far
                break
            now = predicted
        chain = "\n".join(f"{i + 1}. {a}" for i, a in enumerate(actions)) if len(actions) > 1 else actions[0]
        fields = {"task": state["task"].prompt, "observation": state["observation"].text, "action": chain}
        verdict = await ctx.call(ctx.judge, index=index + len(steps), predicted=predicted, **fields)
        return [*steps, verdict.step], verdict.output.score if verdict.output else 0.0

    looks = await asyncio.gather(*(look(k, c) for k, c in enumerate(options)))
    best = max(range(len(options)), key=lambda k: looks[k][1])  # ties: the earlier candidate
    made = [s for steps, _ in looks for s in steps]  # numbered in order (a look that stopped early leaves no gap)
    return {"steps": [s.model_copy(update={"index": base + i}) for i, s in enumerate(made)], "pending": options[best]}


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
