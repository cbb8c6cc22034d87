"""The imagine graph: episodes played against the world model instead of the environment.

WebEvolver's synthetic trajectories: the policy acts from a task's real first observation, and
every later observation is the world model's prediction. The judge decides how the imagined
episode went. Stored like any run, the successful ones are extra policy training data (``success``
rows of the run, ``autodidact train --run IMAGINED``), on states the real environment was never
asked about.

Per step:

- ``propose``: the solver's answer (its sampling), parsed as an action (the react graph's);
- ``predict``: the world model predicts what the environment would show after it;
- ``judge``: the judge scores the predicted state against the task. A score of at least
  ``accept`` ends the episode as solved (reward 1); an ending action (``answer``, ``stop``, a
  code submission) ends it as failed otherwise; ``max_steps`` actions truncate it.

The solver's step gains the predicted observation (``data["imagined"]`` true, the judge's score
in ``data["judge_score"]``), so the episode's conversation reads as the solver would have seen it;
the world model's and the judge's calls are steps too. A failed call ends the episode with its
error, as in every graph. Only the first observation comes from the environment (one ``reset``).

Example:
    >>> graph = build_imagine_graph()
    >>> final = await graph.ainvoke({"task": task}, context=ImagineContext(model, env))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.graphs.react import SolverContext, SolverState, acted, model_failed, propose, reset
from agents.roles import solver
from agents.roles.judge import Judge
from agents.roles.world_model import WorldModel
from autodidact.types import Observation

ENDING_KINDS = ("answer", "stop", "submit", "code")  # actions after which a real episode would end


@dataclass(frozen=True)
class ImagineContext(SolverContext):
    """The solver's context plus the world model, the judge and the judge's bar for success."""

    world_model: WorldModel = field(default_factory=WorldModel)
    judge: Judge = field(default_factory=Judge)
    accept: float = 0.7  # the judge's score at or above which the imagined task is solved


class ImagineState(SolverState, total=False):
    position: list[Any]  # always empty: the real environment stays where reset left it (a resume replays nothing)


async def turn(state: ImagineState, runtime: Runtime[ImagineContext]) -> dict[str, Any]:
    """One imagined step: the solver acts, the world model answers, the judge scores."""
    ctx = runtime.context
    steps = list(state["steps"])
    [step] = await propose(ctx, state["messages"], len(steps))
    if end := model_failed([step]):
        return end
    now = state["observation"].text
    action = (step.completion or "").strip()
    guess = await ctx.call(ctx.world_model, index=len(steps) + 1, observation=now, action=action)
    if guess.output is None:
        error = f"world model: {guess.step.error or 'no prediction'}"
        return {"steps": [step, guess.step], "done": True, "error": error}
    predicted = guess.output.observation
    fields = {"task": state["task"].prompt, "observation": now, "action": action, "predicted": predicted}
    verdict = await ctx.call(ctx.judge, index=len(steps) + 2, **fields)
    if verdict.output is None:
        error = f"judge: {verdict.step.error or 'no verdict'}"
        return {"steps": [step, guess.step, verdict.step], "done": True, "error": error}
    score = verdict.output.score
    assert step.action is not None
    solved = score >= ctx.accept
    ended = solved or step.action.kind in ENDING_KINDS
    taken = len(acted(steps)) + 1
    seen = Observation(text=predicted, data={"imagined": True, "judge_score": score})
    step = step.model_copy(
        update={
            "observation": seen,
            "reward": 1.0 if solved else 0.0,
            "terminated": ended,
            "truncated": not ended and taken >= ctx.max_steps,
        }
    )
    done = step.terminated or step.truncated
    update: dict[str, Any] = {
        "steps": [step, guess.step, verdict.step],
        "done": done,
        "observation": seen,
        "position": [],
    }
    if not done:
        completions = [s.completion or "" for s in [*acted(steps), step]]
        update["messages"] = solver.next_messages(state["messages"], completions, seen, ctx.env.id)
    return update


async def _after_turn(state: ImagineState) -> str:
    return END if state.get("done") else "turn"


def build_imagine_graph(checkpointer: Any = None) -> Any:
    """Compile the imagine graph (optionally with a LangGraph checkpointer)."""
    g = StateGraph(ImagineState, context_schema=ImagineContext)
    g.add_node("reset", reset)  # type: ignore[call-overload]
    g.add_node("turn", turn)
    g.add_edge(START, "reset")
    g.add_edge("reset", "turn")
    g.add_conditional_edges("turn", _after_turn, ["turn", END])
    return g.compile(checkpointer=checkpointer)
