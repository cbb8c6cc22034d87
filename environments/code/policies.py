"""Scripted policies for the code environment: the reference answer, and mutants of it.

``reference`` submits each task's ``solution``; run over a suite it proves the environment,
the sandbox and the hidden tests agree with the suite's authors (every reference must pass).
``mutant`` submits the reference with one small semantic change (:func:`mutate`); the hidden
tests must reject it (a surviving mutant is either an equivalent program or a weak test).

Example:
    >>> mutate("def f(x):\\n    return x + 1\\n", "f", "off_by_one")
    'def f(x):\\n    return x + 2'
"""

from __future__ import annotations

import ast
import random
from typing import Literal

from autodidact.errors import TaskDataError
from autodidact.types import Action, Observation, Task

Mutation = Literal["return_none", "off_by_one", "flip_compare", "swap_arith"]
MUTATIONS: tuple[Mutation, ...] = ("return_none", "off_by_one", "flip_compare", "swap_arith")
_FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.Div: ast.Mult,
    ast.Mod: ast.FloorDiv,
}


def reference_program(task: Task) -> str:
    """The task's reference answer as a whole program (prefix + solution)."""
    solution = task.payload.get("solution")
    if not solution:
        raise TaskDataError(f"task {task.id!r} has no reference solution (payload field 'solution')")
    return f"{task.payload.get('prefix', '')}\n{solution}"


def mutate(program: str, entry_point: str, mutation: Mutation) -> str | None:
    """``program`` with one ``mutation`` applied inside ``entry_point`` (None: nothing to mutate).

    ``return_none`` makes every return of the function return None; ``off_by_one`` adds 1 to the
    first integer constant; ``flip_compare`` negates the first comparison; ``swap_arith`` swaps
    the first arithmetic operator (+ and -, * and //, ...).
    """
    tree = ast.parse(program)
    funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == entry_point]
    if not funcs:
        return None
    func = funcs[-1]  # the definition that wins
    body = [n for stmt in func.body for n in ast.walk(stmt)]
    changed = False
    if mutation == "return_none":
        for node in body:
            if isinstance(node, ast.Return) and not (isinstance(node.value, ast.Constant) and node.value.value is None):
                node.value = ast.Constant(None)
                changed = True
    elif mutation == "off_by_one":
        for node in body:
            if isinstance(node, ast.Constant) and type(node.value) is int:
                node.value += 1
                changed = True
                break
    elif mutation == "flip_compare":
        for node in body:
            if isinstance(node, ast.Compare) and type(node.ops[0]) in _FLIP:
                node.ops[0] = _FLIP[type(node.ops[0])]()
                changed = True
                break
    elif mutation == "swap_arith":
        for node in body:
            if isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in _SWAP:
                node.op = _SWAP[type(node.op)]()
                changed = True
                break
    return ast.unparse(tree) if changed else None


class ReferencePolicy:
    """Submits the task's reference solution."""

    name = "reference"
    expect_success = True

    async def act(self, task: Task, observation: Observation) -> Action:
        return Action(kind="submit", text=reference_program(task))


class MutantPolicy:
    """Submits a mutant of the reference: the first mutation (in a per-task seeded order) that applies."""

    name = "mutant"
    expect_success = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    async def act(self, task: Task, observation: Observation) -> Action:
        program = reference_program(task)
        order = list(MUTATIONS)
        random.Random(f"{self.seed}/{task.id}").shuffle(order)
        for mutation in order:
            mutant = mutate(program, task.payload["entry_point"], mutation)
            if mutant is not None:
                return Action(kind="submit", text=mutant, args={"mutation": mutation})
        return Action(kind="submit", text=program, args={"mutation": None})
