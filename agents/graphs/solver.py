"""The solver graph: prompt → model → parse → environment, until the episode ends.

A LangGraph ``StateGraph`` with three nodes — ``reset`` (start the episode), ``solve`` (one
model call, parsed into an action) and ``act`` (the environment's step) — and its edges in
:func:`build_solver_graph`. The model, the environment and the sampling settings reach the
nodes through the runtime context (:class:`SolverContext`), never through globals.

Every model call becomes a :class:`~autodidact.types.Step` with the messages sent, the
completion, token ids and logprobs (when the backend gives them), the parsed action, the
observation and reward. A model failure, or a model call or environment step slower than
``step_timeout_s``, ends the episode with the error recorded in the step.

Example:
    >>> graph = build_solver_graph()
    >>> final = await graph.ainvoke({"task": task}, context=SolverContext(model, env))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import operator
import time
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.llm.base import ChatModel
from agents.roles import solver
from autodidact.types import Completion, Message, Observation, SamplingParams, Step, Task
from environments.base import Environment

DEFAULT_SAMPLING = SamplingParams(temperature=0.0, max_tokens=384, stop=("\n```\n",))


@dataclass(frozen=True)
class SolverContext:
    """What the nodes need, given per invocation."""

    model: ChatModel
    env: Environment
    sampling: SamplingParams = DEFAULT_SAMPLING
    max_steps: int = 1
    seed: int | None = None
    step_timeout_s: float | None = None  # a model call or an environment step that takes longer ends the episode


class SolverState(TypedDict, total=False):
    """The graph's state. ``steps`` accumulates: each node returns only the new ones."""

    task: Task
    observation: Observation
    messages: list[Message]
    steps: Annotated[list[Step], operator.add]
    pending: Step | None
    done: bool
    error: str | None
    trial_start: int  # index of the current trial's first step (graphs that retry, like reflexion)


async def reset(state: SolverState, runtime: Runtime[SolverContext]) -> dict[str, Any]:
    obs = await runtime.context.env.reset(state["task"], seed=runtime.context.seed)
    messages = solver.initial_messages(obs, runtime.context.env.id)
    return {"observation": obs, "messages": messages, "steps": [], "done": False, "error": None}


async def solve(state: SolverState, runtime: Runtime[SolverContext]) -> dict[str, Any]:
    ctx = runtime.context
    messages = state["messages"]
    start = time.perf_counter()
    try:
        async with asyncio.timeout(ctx.step_timeout_s):
            [completion] = await ctx.model.generate([messages], ctx.sampling)
    except TimeoutError:
        completion = Completion(
            text="", finish_reason="error", error=f"no answer within {ctx.step_timeout_s:g} s (step_timeout_s)"
        )
    latency = time.perf_counter() - start
    step = Step(
        index=len(state["steps"]),
        role=solver.ROLE,
        messages=tuple(messages),
        completion=completion.text,
        token_ids=completion.token_ids,
        logprobs=completion.logprobs,
        latency_s=latency,
    )
    if completion.finish_reason == "error":
        step = step.model_copy(update={"error": f"model: {completion.error}", "truncated": True})
        return {"steps": [step], "pending": None, "done": True, "error": step.error}
    parsed = solver.parse_action(completion.text, ctx.env.id)
    error = f"parse: {parsed.error}" if parsed.error else None
    return {"pending": step.model_copy(update={"action": parsed.action, "error": error})}


async def act(state: SolverState, runtime: Runtime[SolverContext]) -> dict[str, Any]:
    ctx = runtime.context
    pending = state["pending"]
    assert pending is not None and pending.action is not None
    try:
        async with asyncio.timeout(ctx.step_timeout_s):
            result = await ctx.env.step(pending.action)
    except TimeoutError:
        error = f"environment: the step took longer than {ctx.step_timeout_s:g} s (step_timeout_s)"
        step = pending.model_copy(update={"error": error, "truncated": True})
        return {"steps": [step], "pending": None, "done": True, "error": error}
    trial = [s for s in state["steps"][state.get("trial_start", 0) :] if s.action is not None]
    step = pending.model_copy(
        update={
            "observation": result.observation,
            "reward": result.reward,
            "terminated": result.terminated,
            "truncated": result.truncated or (len(trial) + 1 >= ctx.max_steps and not result.terminated),
        }
    )
    done = step.terminated or step.truncated
    update: dict[str, Any] = {"steps": [step], "pending": None, "done": done, "observation": result.observation}
    if not done:
        completions = [s.completion or "" for s in [*trial, step]]
        update["messages"] = solver.next_messages(state["messages"], completions, result.observation, ctx.env.id)
    return update


def _after_solve(state: SolverState) -> str:
    return END if state.get("done") else "act"


def _after_act(state: SolverState) -> str:
    return END if state.get("done") else "solve"


def build_solver_graph(checkpointer: Any = None) -> Any:
    """Compile the solver graph (optionally with a LangGraph checkpointer)."""
    g = StateGraph(SolverState, context_schema=SolverContext)
    g.add_node("reset", reset)
    g.add_node("solve", solve)
    g.add_node("act", act)
    g.add_edge(START, "reset")
    g.add_edge("reset", "solve")
    g.add_conditional_edges("solve", _after_solve, ["act", END])
    g.add_conditional_edges("act", _after_act, ["solve", END])
    return g.compile(checkpointer=checkpointer)
