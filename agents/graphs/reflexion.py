"""The reflexion graph: solve, act, and after a failed trial review, refine, reflect and retry.

A trial is the solver graph's loop (``solve`` → ``act`` until the environment ends it or
``max_steps`` actions). When a trial fails and rounds are left:

- ``review``: the reviewer scores the trial from the environment's feedback and critiques it;
- ``refine``: the refiner writes a reflection (a lesson) and a new answer;
- ``retry``: the environment is reset and a new trial starts with every reflection so far in
  the solver's prompt. When trials are one action (code tasks) the refiner's answer *is* the
  next trial's action; when they are many (web) the new trial starts from the first page,
  where the old answer no longer applies.

The episode ends at the first success or after ``rounds`` refinements. Every model call is a
step (solver, reviewer, refiner) and ``reflections`` is in the final state, for memory.
Reviewer and refiner may use their own models and sampling (the context's ``models`` and
``samplings``, by role name; default: the solver's model).

Example:
    >>> graph = build_reflexion_graph()
    >>> final = await graph.ainvoke({"task": task}, context=ReflexionContext(model, env))  # doctest: +SKIP
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.graphs.react import SolverContext, SolverState, act, acted, solve
from agents.roles import solver
from agents.roles.refiner import Refiner
from agents.roles.reviewer import Reviewer
from autodidact.types import Step


@dataclass(frozen=True)
class ReflexionContext(SolverContext):
    """The solver's context plus the reviewer and refiner, their models, and the round budget."""

    reviewer: Reviewer = field(default_factory=Reviewer)
    refiner: Refiner = field(default_factory=Refiner)
    rounds: int = 2


class ReflexionState(SolverState, total=False):
    round: int  # refinements so far
    rounds: int  # the budget, from the context
    reflections: Annotated[list[str], operator.add]
    critique: str


async def start(state: ReflexionState, runtime: Runtime[ReflexionContext]) -> dict[str, Any]:
    """Reset the environment for a trial (the first, or a retry after a reflection)."""
    ctx = runtime.context
    obs = await ctx.env.reset(state["task"], seed=ctx.seed)
    lessons = [*ctx.lessons, *state.get("reflections", [])]
    messages = solver.with_memory(solver.initial_messages(obs, ctx.env.id), lessons, ctx.skills)
    steps = state.get("steps", [])
    update: dict[str, Any] = {"observation": obs, "messages": messages, "done": False, "error": None}
    update["trial_start"] = len(steps)
    if "round" not in state:
        update.update(round=0, rounds=ctx.rounds, steps=[], reflections=[])
    return update


def _trial(state: ReflexionState) -> list[Step]:
    return acted(state["steps"][state.get("trial_start", 0) :])


def _solved(state: ReflexionState) -> bool:
    trial = _trial(state)
    return bool(trial) and trial[-1].terminated and trial[-1].reward >= 1.0 and trial[-1].error is None


def _about_trial(state: ReflexionState) -> dict[str, Any]:
    """What the reviewer and the refiner are told: the task, the trial's answers, the feedback."""
    return {
        "index": len(state["steps"]),
        "task": state["task"].prompt,
        "attempt": "\n".join(s.completion or "" for s in _trial(state)) or "(no answer)",
        "feedback": state["observation"].text,
    }


async def review(state: ReflexionState, runtime: Runtime[ReflexionContext]) -> dict[str, Any]:
    ctx = runtime.context
    call = await ctx.call(ctx.reviewer, **_about_trial(state))
    critique = call.output.critique if call.output else ""
    return {"steps": [call.step], "critique": critique}


async def refine(state: ReflexionState, runtime: Runtime[ReflexionContext]) -> dict[str, Any]:
    ctx = runtime.context
    critique = state.get("critique") or "(none)"
    call = await ctx.call(ctx.refiner, critique=critique, **_about_trial(state))
    update: dict[str, Any] = {"round": state.get("round", 0) + 1, "pending": None}
    if call.output is None:
        update["steps"] = [call.step]
        return update
    if call.output.reflection:
        update["reflections"] = [call.output.reflection]
    if ctx.max_steps == 1:  # one-action trials: the refined answer is the next trial's action
        parsed = solver.parse_action(call.output.answer, ctx.env.id)
        error = call.step.error or (f"parse: {parsed.error}" if parsed.error else None)
        update["pending"] = call.step.model_copy(update={"action": parsed.action, "error": error})
    else:
        update["steps"] = [call.step]
    return update


async def _after_start(state: ReflexionState) -> str:
    return "act" if state.get("pending") is not None else "solve"


async def _after_solve(state: ReflexionState) -> str:
    return END if state.get("done") else "act"


async def _after_act(state: ReflexionState) -> str:
    if not state.get("done"):
        return "solve"
    if _solved(state) or state.get("error") or state.get("round", 0) >= state.get("rounds", 0):
        return END
    return "review"


def build_reflexion_graph(checkpointer: Any = None) -> Any:
    """Compile the reflexion graph (optionally with a LangGraph checkpointer)."""
    g = StateGraph(ReflexionState, context_schema=ReflexionContext)
    g.add_node("start", start)
    # the solver graph's nodes, reused: they read only the SolverContext part of ReflexionContext
    g.add_node("solve", solve)  # type: ignore[call-overload]
    g.add_node("act", act)  # type: ignore[call-overload]
    g.add_node("review", review)
    g.add_node("refine", refine)
    g.add_edge(START, "start")
    g.add_conditional_edges("start", _after_start, ["act", "solve"])
    g.add_conditional_edges("solve", _after_solve, ["act", END])
    g.add_conditional_edges("act", _after_act, ["solve", "review", END])
    g.add_edge("review", "refine")
    g.add_edge("refine", "start")
    return g.compile(checkpointer=checkpointer)
