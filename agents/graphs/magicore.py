"""The magicore graph: sample several answers, let the reviewer score them, refine only the hard ones.

After MAgICoRe (Chen et al., 2024), per decision (the one answer of a code task, each action
of a web episode):

- ``sample``: ``samples`` solver answers at ``explore_temperature``;
- ``review``: the reviewer scores each distinct answer before it runs (from the task and
  what the environment shows now); answers are ranked by score × votes (a weighted vote). A
  decision whose best score reaches ``threshold`` is easy: its best answer is taken as is;
- ``refine`` (hard decisions only): the refiner rewrites the best answer from the reviewer's
  critique and the reviewer scores the rewrite; this repeats until the score reaches
  ``threshold``, a rewrite scores no better than the best so far (the stop rule), or
  ``rounds`` rewrites were made;
- ``act``: the environment runs the best answer (the react graph's node).

Every model call is a step: the samples (``solver``), the reviews (``reviewer``, score and
critique in ``output``), the rewrites (``refiner``). The answer that was run gains the
environment's observation; samples that were not run keep none.

Example:
    >>> graph = build_magicore_graph()
    >>> final = await graph.ainvoke({"task": task}, context=MagicoreContext(model, env))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.graphs.react import SolverContext, SolverState, act, explore, model_failed, propose, reset
from agents.roles import solver
from agents.roles.refiner import Refiner
from agents.roles.reviewer import Reviewer
from autodidact.types import Step


@dataclass(frozen=True)
class MagicoreContext(SolverContext):
    """The solver's context plus the reviewer, the refiner and the graph's settings."""

    reviewer: Reviewer = field(default_factory=Reviewer)
    refiner: Refiner = field(default_factory=Refiner)
    samples: int = 3
    threshold: float = 0.8  # a reviewer score at least this high needs no refinement
    rounds: int = 2  # rewrites of a hard decision at most
    explore_temperature: float = 0.8


class MagicoreState(SolverState, total=False):
    candidates: list[int]  # indexes of this decision's samples
    best: int  # index of the decision's best answer so far
    score: float  # its reviewer score
    critique: str  # the reviewer's critique of it
    round: int  # rewrites of this decision so far
    settled: bool  # the decision is made: ``pending`` holds the answer to run


def _before_run(state: MagicoreState) -> str:
    return f"(not run yet) The environment shows:\n{state['observation'].text}"


async def sample(state: MagicoreState, runtime: Runtime[MagicoreContext]) -> dict[str, Any]:
    ctx = runtime.context
    sampling = explore(ctx, ctx.explore_temperature)
    steps = await propose(ctx, state["messages"], len(state["steps"]), n=ctx.samples, sampling=sampling)
    if end := model_failed(steps):
        return end
    return {"steps": steps, "candidates": [s.index for s in steps], "round": 0}


async def review(state: MagicoreState, runtime: Runtime[MagicoreContext]) -> dict[str, Any]:
    """Score each distinct sample; the best by score × votes is the decision's answer so far."""
    ctx = runtime.context
    groups: dict[str, list[Step]] = {}
    for i in state["candidates"]:
        s = state["steps"][i]
        groups.setdefault(s.action.model_dump_json() if s.action else "", []).append(s)
    firsts = [g[0] for g in groups.values()]
    base = len(state["steps"])
    fields = {"task": state["task"].prompt, "feedback": _before_run(state)}
    calls = await asyncio.gather(
        *(ctx.call(ctx.reviewer, index=base + i, attempt=s.completion, **fields) for i, s in enumerate(firsts))
    )
    scores = [c.output.score if c.output else 0.0 for c in calls]
    weight = [score * len(g) for score, g in zip(scores, groups.values(), strict=True)]
    best = max(range(len(firsts)), key=lambda i: (firsts[i].error is None, weight[i]))
    verdict = calls[best].output
    update = {
        "steps": [c.step for c in calls],
        "best": firsts[best].index,
        "score": scores[best],
        "critique": verdict.critique if verdict else "",
    }
    return {**update, **_settle(ctx, firsts[best], scores[best], rounds=0)}


async def refine(state: MagicoreState, runtime: Runtime[MagicoreContext]) -> dict[str, Any]:
    """One rewrite of the best answer, and its review; the rewrite is kept if it scores higher."""
    ctx = runtime.context
    best = state["steps"][state["best"]]
    base = len(state["steps"])
    fields = {"task": state["task"].prompt, "feedback": _before_run(state)}
    critique = state.get("critique") or "(none)"
    call = await ctx.call(ctx.refiner, index=base, attempt=best.completion, critique=critique, **fields)
    update: dict[str, Any] = {"round": state.get("round", 0) + 1, "steps": [call.step]}
    answer, score = best, state["score"]
    if call.output is not None:
        parsed = solver.parse_action(call.output.answer, ctx.env.id)
        error = call.step.error or (f"parse: {parsed.error}" if parsed.error else None)
        rewrite = call.step.model_copy(update={"action": parsed.action, "error": error})
        verdict = await ctx.call(ctx.reviewer, index=base + 1, attempt=call.output.answer, **fields)
        update["steps"] = [rewrite, verdict.step]
        if verdict.output is not None and verdict.output.score > state["score"] and error is None:
            answer, score = rewrite, verdict.output.score
            update.update(best=rewrite.index, score=score, critique=verdict.output.critique)
    return {**update, **_settle(ctx, answer, score, rounds=update["round"], stalled=answer is best)}


def _settle(ctx: MagicoreContext, answer: Step, score: float, *, rounds: int, stalled: bool = False) -> dict[str, Any]:
    """The stop rule: the answer so far is final when it scores ``threshold`` or more, when a
    rewrite did not beat it, or when ``rounds`` rewrites were made; then it becomes ``pending``."""
    if score >= ctx.threshold or stalled or rounds >= ctx.rounds:
        return {"settled": True, "pending": answer}
    return {"settled": False}


async def _after_sample(state: MagicoreState) -> str:
    return END if state.get("done") else "review"


async def _after_judging(state: MagicoreState) -> str:
    return "act" if state.get("settled") else "refine"


async def _after_act(state: MagicoreState) -> str:
    return END if state.get("done") else "sample"


def build_magicore_graph(checkpointer: Any = None) -> Any:
    """Compile the magicore graph (optionally with a LangGraph checkpointer)."""
    g = StateGraph(MagicoreState, context_schema=MagicoreContext)
    g.add_node("reset", reset)  # type: ignore[call-overload]
    g.add_node("sample", sample)
    g.add_node("review", review)
    g.add_node("refine", refine)
    g.add_node("act", act)  # type: ignore[call-overload]
    g.add_edge(START, "reset")
    g.add_edge("reset", "sample")
    g.add_conditional_edges("sample", _after_sample, ["review", END])
    g.add_conditional_edges("review", _after_judging, ["act", "refine"])
    g.add_conditional_edges("refine", _after_judging, ["act", "refine"])
    g.add_conditional_edges("act", _after_act, ["sample", END])
    return g.compile(checkpointer=checkpointer)
