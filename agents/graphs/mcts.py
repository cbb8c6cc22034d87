"""The mcts graph: Monte Carlo tree search over solver answers, storing whole search trees.

Agent-R's way of collecting trajectories: one episode grows a tree of actions from the task's
first observation and keeps every explored root-to-leaf path, good and bad, with where each
one branched off. One simulation:

- ``select``: from the root, descend by UCT, ``Q/N + c·sqrt(ln N_parent / N_child)`` with
  ``c = 0.25`` (unvisited children first, finished subtrees skipped), to the first node that
  is unvisited or not yet expanded; then reset the environment and replay the actions that
  lead there (an unvisited node's own action is left to ``simulate``);
- ``simulate``: one unit of work a visit, so that each is checkpointed — execute the current
  node's action (the step gains its observation, reward and end flags; a node ``max_steps``
  deep that did not end the episode is truncated), or expand the node: ``branching`` solver
  samples at ``explore_temperature``, actions already among its children dropped, and move to
  the first new child. It loops until the node it reached ends the episode;
- ``backup``: the leaf's reward (0 unless it terminated the episode) is added to the value,
  and one to the visits, of every node on the path; a node whose children are all finished
  is finished too;
- ``finish``: after ``simulations`` simulations, or once the whole tree is finished.

Edges: ``START → start → select → simulate ⟲ → backup → select | finish → END``.

**Value-guided** (ReST-MCTS*, ``prm``: a process reward model, :mod:`training.prm`): each new
child's step is scored by the PRM when its parent is expanded. The score is the child's prior:
unvisited children are tried best prior first, and a visited child's mean value counts the prior
as one more visit, ``(Q + prior) / (N + 1)``. Children scored below ``prune_below`` are pruned
(marked finished, never tried) unless that would prune them all: the best one stays.

A failed model call during an expansion becomes the node's only child, a leaf that carries the
error; the search goes on elsewhere. ``state["paths"]`` holds one :class:`TreePath` per leaf a
simulation reached (children never executed are not paths): the best first (highest terminal
reward, then partial credit, then earliest), and each other path's parent is the earlier-listed
path it shares the most steps with (ties: the one found first), ``branch_step`` the number of
shared steps. The runner stores one trajectory per path; ``state["steps"]`` is the best
path's, and ``state["position"]`` always holds the actions that bring a reset environment to
where it is, so an interrupted episode resumes.

Example:
    >>> graph = build_mcts_graph()
    >>> final = await graph.ainvoke({"task": task}, context=MCTSContext(model, env, simulations=4))  # doctest: +SKIP
    >>> [len(p.steps) for p in final["paths"]]  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.graphs.react import SolverContext, SolverState, TreePath, distinct, explore, propose, replay
from agents.roles import solver
from autodidact.errors import ConfigError
from autodidact.types import Action, Message, Record, SamplingParams, Step


@dataclass(frozen=True)
class MCTSContext(SolverContext):
    """The solver's context plus the search budget. Expansions sample with the solver's
    sampling, its temperature raised to ``explore_temperature`` at least."""

    simulations: int = 8  # selection → simulation → backup rounds at most
    branching: int = 3  # solver samples per expansion
    c: float = 0.25  # UCT exploration constant
    explore_temperature: float = 0.8
    prm: str | None = None  # a process reward model (value checkpoint) that guides the search
    prune_below: float = 0.0  # with a prm: children it scores below this are never tried

    def __post_init__(self) -> None:
        if self.simulations < 1 or self.branching < 1 or self.c < 0:
            raise ConfigError(
                f"mcts needs simulations >= 1, branching >= 1 and c >= 0; got "
                f"simulations={self.simulations}, branching={self.branching}, c={self.c}"
            )

    @property
    def exploration(self) -> SamplingParams:
        """The sampling used to expand a node."""
        return explore(self, self.explore_temperature)


class Node(Record):
    """A search-tree node: the solver step whose action leads to it (none at the root).

    ``messages`` is the conversation for choosing the next action here (set once the node's
    action was executed and the episode goes on); ``value`` sums the rewards backed up
    through it over its ``visits``; ``done`` means nothing is left to explore below it.
    """

    id: int
    parent: int | None = None
    depth: int = 0  # actions from the root
    step: Step | None = None
    messages: tuple[Message, ...] = ()
    visits: int = 0
    value: float = 0.0
    children: tuple[int, ...] = ()
    expanded: bool = False
    done: bool = False
    prior: float | None = None  # the process reward model's score of the node's step


class MCTSState(SolverState, total=False):
    tree: list[Node]  # node ids are indexes
    current: int  # the node the simulation is at
    position: list[Action]  # the actions from the root to where the environment is
    leaves: list[int]  # the leaf each finished simulation reached, in order
    paths: list[TreePath]


def uct(node: Node, parent_visits: int, c: float) -> float:
    """The UCT score of ``node``: mean value plus ``c``-weighted exploration; unvisited: infinite.

    Example:
        >>> round(uct(Node(id=1, visits=1, value=1.0), parent_visits=2, c=0.25), 3)  # 1 + 0.25·sqrt(ln 2)
        1.208
    """
    if node.visits == 0:
        return math.inf
    prior, seen = (node.prior, 1) if node.prior is not None else (0.0, 0)
    mean = (node.value + prior) / (node.visits + seen)
    return mean + c * math.sqrt(math.log(parent_visits) / node.visits)


def best_child(tree: Sequence[Node], node: Node, c: float) -> Node | None:
    """The child of ``node`` to explore: the first unvisited one (with priors, the unvisited
    one with the best prior), else the best by UCT (the first of equals); finished children are
    skipped. None when all are finished."""
    open_children = [tree[i] for i in node.children if not tree[i].done]
    if not open_children:
        return None
    return max(open_children, key=lambda child: (uct(child, node.visits, c), child.prior or 0.0))


def descend(tree: Sequence[Node], c: float) -> int:
    """The node a simulation starts from: down from the root by :func:`best_child` to the
    first node that is unvisited or not expanded.

    Example:
        >>> descend([Node(id=0)], c=0.25)  # a fresh tree: the root
        0
    """
    node = tree[0]
    while node.visits > 0 and node.expanded:
        child = best_child(tree, node, c)
        if child is None:
            break
        node = child
    return node.id


def tree_paths(tree: Sequence[Node], leaves: Sequence[int]) -> list[TreePath]:
    """One path per leaf (in simulation order), the best first, each placed in the tree.

    Best: highest terminal reward, then highest last-step reward, then found first. Each
    other path's parent is the path listed before it that shares the most steps with it
    (ties: the one found first); ``branch_step`` is the number of shared steps.
    """
    routes = [_route(tree, leaf)[1:] for leaf in leaves]
    order = sorted(
        range(len(leaves)), key=lambda i: (-_leaf_reward(tree[leaves[i]]), -_last_reward(tree, routes[i]), i)
    )
    out = []
    for pos, i in enumerate(order):
        parent = branch = None
        if pos:
            j = max(order[:pos], key=lambda k: (_shared(routes[i], routes[k]), -k))
            parent, branch = order.index(j), _shared(routes[i], routes[j])
        steps = tuple(_step(tree[n]).model_copy(update={"index": k}) for k, n in enumerate(routes[i]))
        out.append(TreePath(steps=steps, parent=parent, branch_step=branch))
    return out or [TreePath()]


def _route(tree: Sequence[Node], node_id: int) -> list[int]:
    """The node ids from the root to ``node_id``."""
    route = [node_id]
    while (parent := tree[route[-1]].parent) is not None:
        route.append(parent)
    return route[::-1]


def _shared(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _step(node: Node) -> Step:
    assert node.step is not None, "only the root has no step"
    return node.step


def _terminal(node: Node) -> bool:
    """The node ends its path: the episode terminated or was cut short there (or it failed)."""
    return node.step is not None and (node.step.terminated or node.step.truncated)


def _pending(node: Node) -> bool:
    """The node's action still has to be executed."""
    return (
        node.step is not None and node.step.action is not None and node.step.observation is None and not _terminal(node)
    )


def _leaf_reward(node: Node) -> float:
    return node.step.reward if node.step is not None and node.step.terminated else 0.0


def _last_reward(tree: Sequence[Node], route: Sequence[int]) -> float:
    return _step(tree[route[-1]]).reward if route else 0.0


def _actions(tree: Sequence[Node], node_id: int) -> list[Action]:
    return [a for n in _route(tree, node_id)[1:] if (a := _step(tree[n]).action) is not None]


async def start(state: MCTSState, runtime: Runtime[MCTSContext]) -> dict[str, Any]:
    """Reset the environment; the tree is its root, holding the first conversation."""
    ctx = runtime.context
    obs = await ctx.env.reset(state["task"], seed=ctx.seed)
    root = Node(
        id=0, messages=tuple(solver.with_memory(solver.initial_messages(obs, ctx.env.id), ctx.lessons, ctx.skills))
    )
    return {
        "observation": obs,
        "tree": [root],
        "current": 0,
        "position": [],
        "leaves": [],
        "steps": [],
        "done": False,
        "error": None,
    }


async def select(state: MCTSState, runtime: Runtime[MCTSContext]) -> dict[str, Any]:
    """Pick the node to simulate from and bring the environment to it (or to its parent,
    when its own action is still to be executed)."""
    ctx = runtime.context
    tree = state["tree"]
    node = tree[descend(tree, ctx.c)]
    base = tree[node.parent] if _pending(node) and node.parent is not None else node
    actions = _actions(tree, base.id)
    if actions != state.get("position"):  # the environment is elsewhere: reset and replay
        await replay(ctx, state["task"], actions)
    return {"current": node.id, "position": actions}


async def simulate(state: MCTSState, runtime: Runtime[MCTSContext]) -> dict[str, Any]:
    """One move of the simulation: execute the current node's action, or expand the node."""
    node = state["tree"][state["current"]]
    if _pending(node):
        return await _execute(state, runtime.context, node)
    return await _expand(state, runtime.context, node)


async def _execute(state: MCTSState, ctx: MCTSContext, node: Node) -> dict[str, Any]:
    """The environment's step on the node's action, recorded in the node's step."""
    tree = list(state["tree"])
    pending = _step(node)
    assert pending.action is not None
    update: dict[str, Any] = {"tree": tree, "position": _actions(tree, node.id)}
    try:
        async with asyncio.timeout(ctx.step_timeout_s):
            result = await ctx.env.step(pending.action)
    except TimeoutError:
        error = f"environment: the step took longer than {ctx.step_timeout_s:g} s (step_timeout_s)"
        tree[node.id] = node.model_copy(update={"step": pending.model_copy(update={"error": error, "truncated": True})})
        return update
    step = pending.model_copy(
        update={
            "observation": result.observation,
            "reward": result.reward,
            "terminated": result.terminated,
            "truncated": result.truncated or (node.depth >= ctx.max_steps and not result.terminated),
        }
    )
    messages: tuple[Message, ...] = ()
    if not (step.terminated or step.truncated):
        parent = tree[node.parent or 0]
        completions = [_step(tree[n]).completion or "" for n in _route(tree, node.id)[1:-1]] + [step.completion or ""]
        messages = tuple(solver.next_messages(list(parent.messages), completions, result.observation, ctx.env.id))
    tree[node.id] = node.model_copy(update={"step": step, "messages": messages})
    update["observation"] = result.observation
    return update


async def _expand(state: MCTSState, ctx: MCTSContext, node: Node) -> dict[str, Any]:
    """Sample ``branching`` answers at the node, add the new distinct ones as children and
    move to the first (with priors, the best). A failed model call becomes a child that ends the path with its error."""
    tree = list(state["tree"])
    seen = [a for i in node.children if (a := _step(tree[i]).action) is not None]
    steps = await propose(ctx, list(node.messages), node.depth, n=ctx.branching, sampling=ctx.exploration)
    new = steps if steps[0].action is None else distinct(steps, seen)
    children = [
        Node(id=len(tree) + k, parent=node.id, depth=node.depth + 1, step=s.model_copy(update={"index": node.depth}))
        for k, s in enumerate(new)
    ]
    if ctx.prm is not None and children and new[0].action is not None:
        children = await _scored(ctx, node, children)
    tree[node.id] = node.model_copy(
        update={"expanded": True, "children": node.children + tuple(c.id for c in children)}
    )
    tree.extend(children)
    first = max(children, key=lambda c: c.prior or 0.0) if children else None  # the first child, or the best prior
    return {"tree": tree, "current": first.id if first is not None else node.id}


async def _scored(ctx: MCTSContext, node: Node, children: list[Node]) -> list[Node]:
    """``children`` with the process reward model's priors; those below ``prune_below`` pruned
    (all but the best, when every one is)."""
    from training.data import answer_text
    from training.prm import loaded

    assert ctx.prm is not None
    messages = [m.model_dump() for m in node.messages]
    asked = [(messages, answer_text(_step(c))) for c in children]
    priors = await asyncio.to_thread(lambda: loaded(ctx.prm).values(asked))  # type: ignore[arg-type]
    best = max(range(len(children)), key=lambda i: priors[i])
    return [
        c.model_copy(update={"prior": p, "done": p < ctx.prune_below and i != best})
        for i, (c, p) in enumerate(zip(children, priors, strict=True))
    ]


async def backup(state: MCTSState, runtime: Runtime[MCTSContext]) -> dict[str, Any]:
    """Add the leaf's reward to every node on its path; stop when the budget or the tree is spent."""
    ctx = runtime.context
    tree = list(state["tree"])
    leaf = tree[state["current"]]
    reward = _leaf_reward(leaf)
    for i in reversed(_route(tree, leaf.id)):  # leaf first, so a parent sees its children's `done`
        n = tree[i]
        done = _terminal(n) or (n.expanded and all(tree[c].done for c in n.children))
        tree[i] = n.model_copy(update={"visits": n.visits + 1, "value": n.value + reward, "done": done})
    leaves = [*state.get("leaves", []), leaf.id]
    return {"tree": tree, "leaves": leaves, "done": len(leaves) >= ctx.simulations or tree[0].done}


async def finish(state: MCTSState, runtime: Runtime[MCTSContext]) -> dict[str, Any]:
    """The explored paths, the best first; the episode's steps and error are the best path's."""
    paths = tree_paths(state["tree"], state.get("leaves", []))
    last = paths[0].steps[-1] if paths[0].steps else None
    error = last.error if last is not None and last.observation is None else None  # a fault, not a wrong answer
    return {"paths": paths, "steps": list(paths[0].steps), "done": True, "error": error}


async def _after_move(state: MCTSState) -> str:
    node = state["tree"][state["current"]]
    # an expanded node still current means its expansion added nothing new: it is a leaf too
    return "backup" if _terminal(node) or node.expanded else "simulate"


async def _after_backup(state: MCTSState) -> str:
    return "finish" if state.get("done") else "select"


def build_mcts_graph(checkpointer: Any = None) -> Any:
    """Compile the mcts graph (optionally with a LangGraph checkpointer)."""
    g = StateGraph(MCTSState, context_schema=MCTSContext)
    g.add_node("start", start)
    g.add_node("select", select)
    g.add_node("simulate", simulate)
    g.add_node("backup", backup)
    g.add_node("finish", finish)
    g.add_edge(START, "start")
    g.add_edge("start", "select")
    g.add_conditional_edges("select", _after_move, ["simulate", "backup"])
    g.add_conditional_edges("simulate", _after_move, ["simulate", "backup"])
    g.add_conditional_edges("backup", _after_backup, ["select", "finish"])
    g.add_edge("finish", END)
    return g.compile(checkpointer=checkpointer)
