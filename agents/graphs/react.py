"""The react graph: prompt → model → parse → environment, until the episode ends.

A LangGraph ``StateGraph`` with two nodes — ``reset`` (start the episode) and ``turn`` (one
model call parsed into an action, ``solve``, then the environment's step on it, ``act``),
looping until the episode ends — and its edges in :func:`build_react_graph`. The model, the environment and the sampling settings reach the
nodes through the runtime context (:class:`SolverContext`), never through globals.

Every model call becomes a :class:`~autodidact.types.Step` with the messages sent, the
completion, token ids and logprobs (when the backend gives them), the parsed action, the
observation and reward. A model failure, or a model call or environment step slower than
``step_timeout_s``, ends the episode with the error recorded in the step.

This module also holds what the other graphs share: the context (with per-role models and
sampling), the ``steps`` reducer, :func:`propose` (solver samples parsed into actions) and
:func:`replay` (reset the environment and redo actions, to resume or to revisit a tree node).

Example:
    >>> graph = build_react_graph()
    >>> final = await graph.ainvoke({"task": task}, context=SolverContext(model, env))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.llm.base import ChatModel
from agents.roles import solver
from agents.roles.base import Role, RoleCall
from autodidact.types import Action, Completion, Message, Observation, Record, SamplingParams, Step, Task
from environments.base import Environment

DEFAULT_SAMPLING = SamplingParams(temperature=0.0, max_tokens=384, stop=("\n```\n",))


@dataclass(frozen=True)
class SolverContext:
    """What the nodes need, given per invocation.

    ``model`` and ``sampling`` are the solver's; ``models`` and ``samplings`` bind other roles
    (by role name) to their own model or sampling — a role without an entry uses ``model``
    and the role's default sampling.
    """

    model: ChatModel
    env: Environment
    sampling: SamplingParams = DEFAULT_SAMPLING
    max_steps: int = 1
    seed: int | None = None
    step_timeout_s: float | None = None  # a model call or an environment step that takes longer ends the episode
    models: Mapping[str, ChatModel] = field(default_factory=dict)
    samplings: Mapping[str, SamplingParams] = field(default_factory=dict)
    lessons: tuple[str, ...] = ()  # recalled reflections, put in the solver's first prompt
    skills: str = ""  # the retrieved skills' section of the solver's system prompt

    def model_for(self, role: str) -> ChatModel:
        return self.models.get(role, self.model)

    async def call(self, role: Role[Any], *, index: int, **fields: Any) -> RoleCall[Any]:
        """One call of ``role`` with its bound model and sampling, under ``step_timeout_s``."""
        return await role.call(
            self.model_for(role.name),
            index=index,
            sampling=self.samplings.get(role.name),
            timeout_s=self.step_timeout_s,
            **fields,
        )


class TreePath(Record):
    """One root-to-leaf path of a search tree, as a graph hands it to the runner (in
    ``state["paths"]``, the main path first): its steps, the path it branched from (an index
    into the paths) and the number of steps it shares with that path."""

    steps: tuple[Step, ...] = ()
    parent: int | None = None
    branch_step: int | None = None


def merge_steps(old: list[Step], new: list[Step]) -> list[Step]:
    """The ``steps`` reducer: a step whose index is already taken replaces that step (a
    candidate that is later acted on gains its observation); others are appended."""
    out = list(old)
    for step in new:
        if step.index < len(out):
            out[step.index] = step
        else:
            out.append(step)
    return out


class SolverState(TypedDict, total=False):
    """The graph's state. ``steps`` accumulates: each node returns only new or updated steps."""

    task: Task
    observation: Observation
    messages: list[Message]
    steps: Annotated[list[Step], merge_steps]
    pending: Step | None
    done: bool
    error: str | None
    trial_start: int  # index of the current trial's first step (graphs that retry, like reflexion)


async def propose(
    ctx: SolverContext, messages: list[Message], index: int, *, n: int = 1, sampling: SamplingParams | None = None
) -> list[Step]:
    """``n`` solver answers to ``messages`` (one batch), each a step with its parsed action.

    Steps are numbered from ``index``. When the model fails (or takes longer than
    ``step_timeout_s``) the result is one step with the error, ``truncated`` and no action.
    """
    sampling = sampling or ctx.sampling
    start = time.perf_counter()
    try:
        async with asyncio.timeout(ctx.step_timeout_s):
            completions = await ctx.model.generate([messages] * n, sampling)
    except TimeoutError:
        error = f"no answer within {ctx.step_timeout_s:g} s (step_timeout_s)"
        completions = [Completion(text="", finish_reason="error", error=error)]
    latency = time.perf_counter() - start
    steps = []
    for i, completion in enumerate(completions):
        step = Step(
            index=index + i,
            role=solver.ROLE,
            messages=tuple(messages),
            completion=completion.text,
            token_ids=completion.token_ids,
            logprobs=completion.logprobs,
            latency_s=latency,
        )
        if completion.finish_reason == "error":
            return [step.model_copy(update={"index": index, "error": f"model: {completion.error}", "truncated": True})]
        parsed = solver.parse_action(completion.text, ctx.env.id)
        steps.append(
            step.model_copy(update={"action": parsed.action, "error": parsed.error and f"parse: {parsed.error}"})
        )
    return steps


def model_failed(steps: Sequence[Step]) -> dict[str, Any] | None:
    """The update that ends the episode when :func:`propose` got no answer (else None)."""
    if steps and steps[0].action is None:
        return {"steps": list(steps), "pending": None, "done": True, "error": steps[0].error}
    return None


def explore(ctx: SolverContext, temperature: float) -> SamplingParams:
    """The solver's sampling, at ``temperature`` or hotter: for drawing several different answers."""
    return ctx.sampling.model_copy(update={"temperature": max(temperature, ctx.sampling.temperature)})


def distinct(steps: Sequence[Step], seen: Sequence[Action] = ()) -> list[Step]:
    """The steps whose actions differ from each other and from ``seen`` (first kept)."""
    keys = {_key(a) for a in seen}
    out = []
    for s in steps:
        if s.action is None or _key(s.action) in keys:
            continue
        keys.add(_key(s.action))
        out.append(s)
    return out


def _key(action: Action) -> str:
    return action.model_dump_json()


async def replay(ctx: SolverContext, task: Task, actions: Sequence[Action]) -> Observation:
    """Reset the environment to ``task`` and redo ``actions``; the last observation.

    Environments are deterministic given the task and the seed, so this brings a fresh
    environment back to where an interrupted episode was, or to a search-tree node.
    """
    obs = await ctx.env.reset(task, seed=ctx.seed)
    for action in actions:
        obs = (await ctx.env.step(action)).observation
    return obs


async def reset(state: SolverState, runtime: Runtime[SolverContext]) -> dict[str, Any]:
    ctx = runtime.context
    obs = await ctx.env.reset(state["task"], seed=ctx.seed)
    messages = solver.with_memory(solver.initial_messages(obs, ctx.env.id), ctx.lessons, ctx.skills)
    return {"observation": obs, "messages": messages, "steps": [], "done": False, "error": None}


async def solve(state: SolverState, runtime: Runtime[SolverContext]) -> dict[str, Any]:
    [step] = await propose(runtime.context, state["messages"], len(state["steps"]))
    return model_failed([step]) or {"pending": step}


async def act(state: SolverState, runtime: Runtime[SolverContext]) -> dict[str, Any]:
    """The environment's step on ``pending``'s action; the step records what followed."""
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
    trial = acted(state["steps"][state.get("trial_start", 0) :])
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


async def turn(state: SolverState, runtime: Runtime[SolverContext]) -> dict[str, Any]:
    """``solve`` then ``act``, as one node: the react graph's loop body. (One node a step
    instead of two halves LangGraph's cost per step; a resumed episode redoes at most the
    model call of the step it was in.)"""
    update = await solve(state, runtime)
    if update.get("done"):
        return update
    return await act({**state, **update}, runtime)  # type: ignore[typeddict-item]


def acted(steps: Sequence[Step]) -> list[Step]:
    """The steps that acted on the environment (they carry its observation)."""
    return [s for s in steps if s.action is not None and s.observation is not None]


# Routing functions are async on purpose: LangGraph runs a plain function in a thread pool.
async def _after_turn(state: SolverState) -> str:
    return END if state.get("done") else "turn"


def build_react_graph(checkpointer: Any = None) -> Any:
    """Compile the react graph (optionally with a LangGraph checkpointer)."""
    g = StateGraph(SolverState, context_schema=SolverContext)
    g.add_node("reset", reset)
    g.add_node("turn", turn)
    g.add_edge(START, "reset")
    g.add_edge("reset", "turn")
    g.add_conditional_edges("turn", _after_turn, ["turn", END])
    return g.compile(checkpointer=checkpointer)
