"""Every graph end to end with the real embedded model: 2 code tasks and 2 MiniWoB tasks each.

Budgets are small (short completions, few steps, small searches) so that the whole matrix
stays within a few minutes on CPU; what is checked is that each graph's episodes are stored
well formed, with the graph's roles at work, not that a 135M model solves the tasks.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from agents.roles.judge import Judge
from agents.roles.refiner import Refiner
from agents.roles.reflector import Reflector
from agents.roles.reviewer import Reviewer
from agents.roles.world_model import WorldModel
from agents.rollout import RunConfig, run_rollout
from autodidact.config import home
from environments.tasks import load_suite
from memory.base import TrajectoryQuery, open_store

pytestmark = pytest.mark.slow

SHORT = {
    "reviewer": {"sampling": {"max_tokens": 32}},
    "refiner": {"sampling": {"max_tokens": 96}},
    "world_model": {"sampling": {"max_tokens": 32}},
    "judge": {"sampling": {"max_tokens": 16}},
}
OPTIONS: dict[str, dict[str, Any]] = {
    "react": {},
    "reflexion": {"rounds": 1},
    "magicore": {"samples": 2, "rounds": 1},
    "lookahead": {"candidates": 2},
    "mcts": {"simulations": 2, "branching": 2},
}
ROLES = {
    "react": {"solver"},
    "reflexion": {"solver", "reviewer", "refiner"},
    "magicore": {"solver", "reviewer", "refiner"},
    "lookahead": {"solver", "world_model", "judge"},
    "mcts": {"solver"},
}
OUTPUTS = {r.name: r.output for r in (Reviewer, Refiner, WorldModel, Judge, Reflector)}  # typed outputs by role
TASKS = {
    "code": load_suite("bundled", split="test", limit=2),
    "web": [t for t in load_suite("miniwob") if t.payload["name"] in ("click-button", "click-link")][:2],
}


def store_memory(tmp_path: Any) -> list[Any]:
    with open_store(str(tmp_path / "t.db")) as store:
        return store.memory("reflection")


@pytest.mark.parametrize("env", ["code", "web"])
@pytest.mark.parametrize("graph", list(OPTIONS))
async def test_graph_end_to_end_with_the_embedded_model(graph: str, env: str, embedded_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = {"sampling": {"max_tokens": 96, "stop": ["\n```\n"]}, "max_steps": 1}
    web = {"sampling": {"max_tokens": 16}, "max_steps": 2}
    cfg = RunConfig.model_validate(
        {"env": env, "graph": graph, "graph_options": OPTIONS[graph], "roles": SHORT, "concurrency": 2}
        | {"reflections": {"enabled": graph == "react"}}  # lessons once per environment: they cost a call each
        | (code if env == "code" else web)
    )
    with open_store(str(tmp_path / "t.db")) as store:
        result = await run_rollout(cfg, embedded_model, store, tasks=TASKS[env], progress=False)
        stored = store.query(TrajectoryQuery(run_id=result.run_id))
    assert len(result.episodes) == 2 and {t.id for t in stored} == {t.id for t in result.trajectories}
    roles = {s.role for t in stored for s in t.steps}
    assert roles <= ROLES[graph] | ({"reflector"} if graph == "react" else set()) and "solver" in roles
    if graph == "react":  # every failed episode left a lesson (the reflector's step, parsed or not)
        failed = [t for t in result.episodes if not t.success]
        assert all(t.steps[-1].role == "reflector" for t in failed)
        assert len(store_memory(tmp_path)) == sum(t.steps[-1].output is not None for t in failed)
    for t in stored:
        assert t.error is None, t.error  # model faults would be recorded here; none expected
        assert [s.index for s in t.steps] == list(range(len(t.steps))) and t.steps
        ran = [s for s in t.steps if s.observation is not None]
        assert ran and all(s.action is not None for s in ran) and ran[-1].reward == t.reward
        assert all(s.messages and s.completion is not None for s in t.steps)
        for s in t.steps:
            if s.role == "solver":
                continue
            # a role's answer parsed to its typed output, or says why not; a model fault is never hidden here
            assert s.error is None or s.error.startswith("parse: "), (s.role, s.error)
            if s.output is None:
                assert s.error, s.role
            else:
                OUTPUTS[s.role].model_validate(s.output)
    if graph == "lookahead":  # each imagined candidate: the world model's guess, then the judge's verdict
        for t in stored:
            looks = [s.role for s in t.steps if s.role in ("world_model", "judge")]
            assert looks == ["world_model", "judge"] * (len(looks) // 2), looks
    if graph == "reflexion":  # every failed first trial was reviewed, then refined
        for t in result.episodes:
            assert t.success or {"reviewer", "refiner"} <= {s.role for s in t.steps}
    if graph == "magicore":  # every decision was reviewed, whatever the model answered
        assert "reviewer" in roles
        for t in result.episodes:
            decisions = sum(s.observation is not None for s in t.steps)
            assert sum(s.role == "reviewer" for s in t.steps) >= decisions
    if graph == "mcts":
        paths = [t for t in stored if t.parent_id is not None]
        assert len(stored) - len(paths) == len(result.episodes)  # one root path per episode, the rest branch off
        ids = {t.id for t in stored}
        assert all(p.parent_id in ids and p.branch_step is not None for p in paths)
    # finished episodes leave no checkpoints behind
    with sqlite3.connect(home() / "checkpoints.sqlite") as db:
        assert db.execute("select count(*) from checkpoints").fetchone() == (0,)
