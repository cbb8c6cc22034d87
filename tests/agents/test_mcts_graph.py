"""The mcts graph's control flow: expansion with duplicates dropped, UCT selection, reset and
replay, backup of terminal rewards and whole trees stored as parent-linked trajectories —
with a scripted model and the real code environment (one small web search too)."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from agents.graphs.mcts import MCTSContext, Node, best_child, build_mcts_graph, descend, tree_paths, uct
from agents.rollout import RunConfig, run_episode, run_rollout
from autodidact import registry
from autodidact.cli import _print_summary
from autodidact.errors import ConfigError
from autodidact.types import SamplingParams, Step
from environments.tasks import load_suite
from memory.base import TrajectoryQuery, open_store
from tests.agents.scripted import GOOD, TASK, WRONG, ScriptedModel


def wrong(body: str) -> str:
    """A wrong answer to TASK (``last(xs)``) returning ``body``."""
    return f"```python\ndef last(xs):\n    return {body}\n```"


async def _episode(script: Sequence[str | BaseException], **cfg: Any):  # type: ignore[no-untyped-def]
    model = ScriptedModel(script)
    task = cfg.pop("task", TASK)
    options = {k: cfg.pop(k) for k in ("simulations", "branching", "c", "explore_temperature") if k in cfg}
    config = RunConfig(graph="mcts", graph_options=options, **cfg)
    trajs = await run_episode(task, config, model, build_mcts_graph(), "run")
    return trajs, model


async def _search(script: Sequence[str], max_steps: int, **options: Any) -> dict[str, Any]:
    """The graph's final state on TASK in the code environment."""
    env = registry.make("environment", "code", max_attempts=max_steps)
    ctx = MCTSContext(model=ScriptedModel(script), env=env, max_steps=max_steps, **options)
    try:
        final: dict[str, Any] = await build_mcts_graph().ainvoke({"task": TASK}, context=ctx)
    finally:
        await env.close()
    return final


def _answers(steps: Sequence[Step]) -> list[str | None]:
    return [s.completion for s in steps]


async def test_duplicates_are_dropped_and_every_executed_answer_is_a_path_the_best_first() -> None:
    trajs, model = await _episode([WRONG, GOOD, WRONG], branching=3)
    assert len(model.seen) == 3  # one expansion of the root: one batch of three samples
    main, other = trajs
    assert _answers(main.steps) == [GOOD] and main.success and main.reward == 1.0 and main.error is None
    assert _answers(other.steps) == [WRONG] and not other.success and other.steps[0].terminated  # its final answer
    assert main.parent_id is None and main.branch_step is None
    assert other.parent_id == main.id and other.branch_step == 0
    assert [s.index for s in other.steps] == [0] and other.steps[0].observation is not None


async def test_terminal_rewards_are_backed_up_and_a_finished_tree_stops_the_search() -> None:
    final = await _search([WRONG, GOOD, WRONG], max_steps=1, branching=3)
    root, first, second = final["tree"]
    assert first.children == second.children == () and root.children == (1, 2)
    assert (root.visits, root.value) == (2, 1.0) and root.done  # both answers tried: nothing left
    assert (first.visits, first.value, second.visits, second.value) == (1, 0.0, 1, 1.0)
    assert final["leaves"] == [1, 2] and final["steps"] == list(final["paths"][0].steps)
    assert final["position"] == [second.step.action]  # where the environment was left


async def test_a_deeper_tree_is_stored_with_each_path_branching_from_the_right_one() -> None:
    # Root → A, B.  1st simulation: A → C (wrong, out of steps).  2nd: B is unvisited → B → E.
    # 3rd: A and B tie (no reward yet), A is first; C is finished so D (GOOD) is tried.
    script = [wrong("xs[0]"), wrong("None"), wrong("xs[1]"), GOOD, wrong("0"), wrong("1")]
    trajs, model = await _episode(script, max_steps=2, branching=2, simulations=3)
    assert len(model.seen) == 6 and len(trajs) == 3
    found_third, found_first, found_second = trajs
    assert _answers(found_third.steps) == [wrong("xs[0]"), GOOD] and found_third.success
    assert _answers(found_first.steps) == [wrong("xs[0]"), wrong("xs[1]")]
    assert _answers(found_second.steps) == [wrong("None"), wrong("0")]
    assert (found_first.parent_id, found_first.branch_step) == (found_third.id, 1)  # shares A
    assert (found_second.parent_id, found_second.branch_step) == (found_first.id, 0)  # ties: found first
    assert [s.index for s in found_third.steps] == [0, 1]
    # the second step of each path saw the first one's feedback, after a reset and a replay
    assert [m.role for m in found_third.steps[1].messages] == ["system", "user", "assistant", "user"]
    assert "AssertionError" in found_third.steps[1].messages[3].content
    # the run's summary counts a step the paths share once: A, D, C, B, E
    console = Console(record=True, width=120)
    _print_summary(console, "mcts", SimpleNamespace(trajectories=trajs, episodes=trajs[:1]))
    assert re.search(r"solver\s*│\s*5\s*│\s*5\.0\s*│", console.export_text()), console.export_text()


async def test_simulations_bound_the_paths() -> None:
    three = [wrong("xs[0]"), wrong("None"), wrong("0")]
    for simulations in (1, 2):
        trajs, model = await _episode(three, branching=3, simulations=simulations)
        assert len(trajs) == simulations and len(model.seen) == 3  # the other children were never executed
    trajs, _ = await _episode(three, branching=3, simulations=8)
    assert len(trajs) == 3  # the tree ran out first


def test_uct_prefers_unvisited_then_balances_value_and_exploration_with_c() -> None:
    root = Node(id=0, visits=10, value=5.0, children=(1, 2, 3, 4), expanded=True)
    a = Node(id=1, parent=0, depth=1, visits=6, value=3.0)  # Q 0.5
    b = Node(id=2, parent=0, depth=1, visits=3, value=2.0)  # Q 0.667
    c = Node(id=3, parent=0, depth=1, visits=1, value=0.0)  # Q 0
    d = Node(id=4, parent=0, depth=1, visits=1, value=1.0, done=True)  # Q 1, but finished
    tree = [root, a, b, c, d]
    assert uct(b, 10, 0.25) == pytest.approx(2 / 3 + 0.25 * math.sqrt(math.log(10) / 3))
    assert best_child(tree, root, 0.25) == b  # 0.886 beats a 0.655, c 0.379; d is skipped
    assert best_child(tree, root, 2.0) == c  # with more exploration the least visited wins
    fresh = Node(id=5, parent=0, depth=1)
    with_fresh = [root.model_copy(update={"children": (*root.children, 5)}), a, b, c, d, fresh]
    assert best_child(with_fresh, with_fresh[0], 0.25) == fresh and uct(fresh, 10, 0.25) == math.inf
    # descend stops at the first unvisited node, and at a finished subtree's parent no child is open
    assert descend(with_fresh, 0.25) == 5
    assert best_child(tree, root.model_copy(update={"children": (4,)}), 0.25) is None


def test_paths_are_ordered_best_first_and_placed_in_the_tree() -> None:
    def node(i: int, parent: int, reward: float = 0.0, terminated: bool = False) -> Node:
        step = Step(index=0, role="solver", completion=str(i), reward=reward, terminated=terminated)
        return Node(id=i, parent=parent, depth=1, step=step)

    root = Node(id=0)
    # 1 → 3, 1 → 4 (reward 1, terminated), 2 (partial credit, not terminated)
    tree = [root, node(1, 0), node(2, 0, reward=0.5), node(3, 1), node(4, 1, reward=1.0, terminated=True)]
    paths = tree_paths(tree, [3, 2, 4])
    assert [[s.completion for s in p.steps] for p in paths] == [["1", "4"], ["2"], ["1", "3"]]
    assert [(p.parent, p.branch_step) for p in paths] == [(None, None), (0, 0), (0, 1)]
    assert [s.index for s in paths[0].steps] == [0, 1]


async def test_backend_faults_and_garbage_are_recorded_not_raised() -> None:
    [t], _ = await _episode(["ERROR"])
    assert not t.success and t.error is not None and "500" in t.error
    [step] = t.steps
    assert step.error == t.error and step.action is None and step.truncated
    [t], _ = await _episode(["I don't know, sorry!"])  # three identical unparseable answers: one child
    assert not t.success and t.error is None and t.steps[0].error == "parse: no code block found in the answer"
    assert t.steps[0].observation is not None and "No code" in t.steps[0].observation.text


async def test_a_failed_expansion_ends_its_path_and_the_search_goes_on() -> None:
    # Root → A, B; A's expansion fails; B is tried next and solves it.
    trajs, _ = await _episode([WRONG, GOOD, "ERROR", "unused"], max_steps=2, branching=2, simulations=4)
    main, failed = trajs
    assert _answers(main.steps) == [GOOD] and main.success and main.error is None
    assert _answers(failed.steps) == [WRONG, ""] and failed.steps[1].error is not None
    assert "500" in failed.steps[1].error and (failed.parent_id, failed.branch_step) == (main.id, 0)


async def test_expansions_sample_hotter_than_the_solver() -> None:
    ctx = MCTSContext(model=ScriptedModel([GOOD]), env=registry.make("environment", "code"))
    assert ctx.exploration.temperature == 0.8 and ctx.exploration.max_tokens == ctx.sampling.max_tokens
    hot = MCTSContext(model=ctx.model, env=ctx.env, sampling=SamplingParams(temperature=1.2), explore_temperature=0.5)
    assert hot.exploration.temperature == 1.2
    with pytest.raises(ConfigError, match="simulations >= 1"):
        MCTSContext(model=ctx.model, env=ctx.env, simulations=0)
    await ctx.env.close()


async def test_an_interrupted_search_resumes_from_its_checkpoint(tmp_path: Any) -> None:
    options = {"branching": 1, "simulations": 2}
    cfg = RunConfig(graph="mcts", max_steps=2, run_id="m1", graph_options=options, reflections={"enabled": False})  # type: ignore[arg-type]
    with open_store(str(tmp_path / "t.db")) as store:
        # A wrong first answer is executed, then the model hangs on its expansion: the run is killed.
        first = ScriptedModel([WRONG, "HANG"])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(run_rollout(cfg, first, store, tasks=[TASK], progress=False), 3)
        assert store.count(TrajectoryQuery(run_id="m1")) == 0
        second = ScriptedModel([GOOD])
        result = await run_rollout(cfg, second, store, tasks=[TASK], progress=False, resume=True)
        [t] = result.episodes
        assert _answers(t.steps) == [WRONG, GOOD] and t.success and len(result.trajectories) == 1
        [prompt] = second.seen  # the only new call: the wrong answer's feedback came from the replayed env
        assert [m.role for m in prompt] == ["system", "user", "assistant", "user"] and "AssertionError" in prompt[
            3
        ].content


async def test_a_small_web_search_replays_clicks_and_stores_the_tree() -> None:
    # Root → click a text (A), click "next" (B: wrong, ends the task). A → click "okay" (solved), stop.
    [task] = [t for t in load_suite("miniwob") if t.payload["name"] == "click-button"]
    script = ['click("e5")', 'click("e9")', 'click("e6")', "stop()"]
    trajs, model = await _episode(script, env="web", task=task, max_steps=2, branching=2)
    assert len(model.seen) == 4 and len(trajs) == 3  # the tree is finished after three simulations
    solved, stopped, wrong_button = trajs
    assert _answers(solved.steps) == ['click("e5")', 'click("e6")'] and solved.success and solved.reward == 1.0
    assert _answers(stopped.steps) == ['click("e5")', "stop()"] and stopped.reward == 0.0  # after a replay
    assert _answers(wrong_button.steps) == ['click("e9")'] and wrong_button.reward == -1.0
    assert (stopped.parent_id, stopped.branch_step) == (solved.id, 1)
    assert (wrong_button.parent_id, wrong_button.branch_step) == (solved.id, 0)


class StubPRM:
    """A process reward model that scores a step by the code it answers."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.asked: list[str] = []

    def values(self, steps: Sequence[tuple[Sequence[dict[str, str]], str]]) -> list[float]:
        self.asked += [answer for _, answer in steps]
        return [next((v for k, v in self.scores.items() if k in answer), 0.0) for _, answer in steps]


async def test_a_process_reward_model_orders_unvisited_children_and_prunes(monkeypatch: pytest.MonkeyPatch) -> None:
    import training.prm

    prm = StubPRM({"xs[0]": 0.1, "None": 0.3, "xs[-1]": 0.9})
    monkeypatch.setattr(training.prm, "loaded", lambda name: prm)
    script = [wrong("xs[0]"), wrong("None"), GOOD]
    plain = await _search(script, max_steps=1, branching=3, simulations=1)
    assert plain["paths"][0].steps[0].completion == wrong("xs[0]")  # unguided: the first child
    guided = await _search(script, max_steps=1, branching=3, simulations=1, prm="p")
    assert guided["paths"][0].steps[0].completion == GOOD  # the best prior first
    assert [n.prior for n in guided["tree"][1:]] == [0.1, 0.3, 0.9] and len(prm.asked) == 3
    assert all("```python" in a for a in prm.asked)  # scored as the answers the PRM was fitted on

    pruned = await _search(script, max_steps=1, branching=3, simulations=8, prm="p", prune_below=0.5)
    assert [n.done for n in pruned["tree"][1:]] == [True, True, True] and len(pruned["leaves"]) == 1
    assert pruned["paths"][0].steps[0].completion == GOOD  # the two pruned children were never tried
    # every child below the threshold: the best one stays open and is tried
    low = await _search(script, max_steps=1, branching=3, simulations=1, prm="p", prune_below=0.95)
    assert low["paths"][0].steps[0].completion == GOOD and low["tree"][3].visits == 1


def test_uct_counts_a_prior_as_one_more_visit() -> None:
    node = Node(id=1, visits=1, value=0.0, prior=0.8)
    assert uct(node, parent_visits=1, c=0.0) == pytest.approx(0.4)
    assert uct(Node(id=1, visits=1, value=0.0), parent_visits=1, c=0.0) == 0.0
