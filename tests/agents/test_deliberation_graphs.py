"""The magicore and lookahead graphs (several candidates per decision, judged before one is run)
and the imagine graph (episodes against the world model). Control flow with a scripted model on the code and web environments."""

from __future__ import annotations

from agents.graphs.imagine import build_imagine_graph
from agents.graphs.lookahead import build_lookahead_graph
from agents.graphs.magicore import build_magicore_graph
from agents.rollout import RunConfig, run_episode
from environments.tasks import load_suite
from tests.agents.scripted import GOOD, TASK, WRONG, ScriptedModel


def refined(code: str) -> str:
    return f"Reflection: return xs[-1], the last item.\nAnswer:\n{code}"


async def _episode(graph: str, script, **cfg):  # type: ignore[no-untyped-def]
    model = ScriptedModel(script)
    build = {"magicore": build_magicore_graph, "lookahead": build_lookahead_graph}[graph]
    [traj] = await run_episode(cfg.pop("task", TASK), RunConfig(graph=graph, **cfg), model, build(), "run")
    return traj, model


def acted(traj):  # type: ignore[no-untyped-def]
    return [s for s in traj.steps if s.observation is not None]


# -- magicore -------------------------------------------------------------------------------------


async def test_magicore_easy_decision_takes_the_weighted_vote_without_refining() -> None:
    t, _ = await _episode("magicore", [WRONG, WRONG, GOOD, "Score: 3\nCritique: first item", "Score: 9\nCritique: ok"])
    assert [s.role for s in t.steps] == ["solver"] * 3 + ["reviewer"] * 2  # one review per distinct answer
    assert t.success and [s.index for s in acted(t)] == [2]  # 0.9 × 1 vote beats 0.3 × 2 votes
    assert t.steps[3].output == {"score": 0.3, "critique": "first item"}
    assert all(s.observation is None for s in t.steps[:2])  # samples that were not run
    assert [s.index for s in t.steps] == list(range(len(t.steps)))


async def test_magicore_refines_a_hard_decision_until_the_reviewer_is_satisfied() -> None:
    script = [WRONG] * 3 + ["Score: 2\nCritique: returns the first item", refined(GOOD), "Score: 9\nCritique: right"]
    t, model = await _episode("magicore", script)
    assert [s.role for s in t.steps] == ["solver"] * 3 + ["reviewer", "refiner", "reviewer"]
    [run] = acted(t)
    assert run.role == "refiner" and run.index == 4 and t.success
    refine_prompt = model.seen[4][-1].content
    assert "returns the first item" in refine_prompt and "(not run yet)" in refine_prompt


async def test_magicore_stops_refining_when_a_rewrite_is_no_better() -> None:
    script = [WRONG] * 3 + ["Score: 5\nCritique: hmm", refined(WRONG.replace("0", "1")), "Score: 2\nCritique: worse"]
    t, _ = await _episode("magicore", script, graph_options={"rounds": 3})
    assert [s.role for s in t.steps] == ["solver"] * 3 + ["reviewer", "refiner", "reviewer"]  # one rewrite only
    [run] = acted(t)
    assert run.role == "solver" and run.index == 0 and not t.success


async def test_magicore_rewrites_at_most_rounds_times() -> None:
    better = [refined(WRONG), "Score: 2", refined(WRONG), "Score: 3", refined(WRONG), "Score: 4"]
    t, _ = await _episode("magicore", [WRONG] * 3 + ["Score: 1\nCritique: no", *better], graph_options={"rounds": 2})
    assert [s.role for s in t.steps].count("refiner") == 2 and len(acted(t)) == 1


async def test_magicore_model_failure_and_garbage_are_recorded() -> None:
    t, _ = await _episode("magicore", ["ERROR"])
    assert t.error and "500" in t.error and not t.success
    t, _ = await _episode("magicore", [WRONG, WRONG, WRONG, "no idea", refined(GOOD), "Score: 10"])
    assert t.steps[3].error and t.steps[3].error.startswith("parse:")  # the unreadable review counts as 0
    assert t.success  # and the decision was refined


# -- lookahead ------------------------------------------------------------------------------------


async def test_lookahead_predicts_and_judges_each_distinct_candidate_then_runs_the_best() -> None:
    script = [
        WRONG,
        GOOD,
        WRONG,
        "Next:\nAssertionError",
        "Score: 1\nCritique: fails",
        "Next:\nall tests pass",
        "Score: 9\nCritique: right",
    ]
    t, model = await _episode("lookahead", script)
    assert [s.role for s in t.steps] == ["solver"] * 3 + ["world_model", "judge"] * 2
    assert t.success and [s.index for s in acted(t)] == [1]
    assert t.steps[5].output == {"observation": "all tests pass"}
    judge_prompt = model.seen[6][-1].content
    assert "all tests pass" in judge_prompt and "return xs[-1]" in judge_prompt


async def test_lookahead_skips_imagining_when_the_candidates_agree() -> None:
    t, _ = await _episode("lookahead", [GOOD, GOOD, GOOD])
    assert [s.role for s in t.steps] == ["solver"] * 3 and t.success


async def test_lookahead_model_failure_is_recorded() -> None:
    t, _ = await _episode("lookahead", ["ERROR"])
    assert t.error and not t.success and t.steps[0].error


async def test_lookahead_on_the_web_runs_the_judged_best_click_each_step() -> None:
    [task] = [t for t in load_suite("miniwob") if t.payload["name"] == "click-button"]
    step = ['click("e1")', 'click("e2")', "Next:\npage", "Score: 2", "Next:\npage", "Score: 8"]
    t, model = await _episode("lookahead", step * 2, env="web", task=task, max_steps=2, graph_options={"candidates": 2})
    runs = acted(t)
    assert len(runs) == 2 and all(r.action and r.action.args.get("ref") == "e2" for r in runs)
    assert [s.role for s in t.steps] == (["solver"] * 2 + ["world_model", "judge"] * 2) * 2
    assert "[e" in model.seen[2][-1].content  # the world model saw the real page


# -- imagine -------------------------------------------------------------------------------------


async def _imagined(script, **cfg):  # type: ignore[no-untyped-def]
    model = ScriptedModel(script)
    task = cfg.pop("task", TASK)
    [traj] = await run_episode(task, RunConfig(graph="imagine", **cfg), model, build_imagine_graph(), "run")
    return traj, model


async def test_imagine_plays_against_the_world_model_and_the_judge_decides() -> None:
    t, model = await _imagined([GOOD, "Next:\n3 of 3 tests passed.", "Score: 9\nCritique: right"])
    assert [s.role for s in t.steps] == ["solver", "world_model", "judge"] and t.success and t.reward == 1.0
    [step] = acted(t)
    assert step.observation is not None and step.observation.text == "3 of 3 tests passed."
    assert step.observation.data == {"imagined": True, "judge_score": 0.9} and step.terminated
    assert "return xs[-1]" in model.seen[1][-1].content  # the world model was shown the action
    # a code submission ends the episode: judged below `accept`, it failed
    t, _ = await _imagined([WRONG, "Next:\nAssertionError", "Score: 6\nCritique: unsure"])
    assert not t.success and t.reward == 0.0 and acted(t)[0].terminated and t.error is None
    # a world model that does not answer ends the episode with its error
    t, _ = await _imagined([GOOD, "ERROR"])
    assert not t.success and t.error is not None and t.error.startswith("world model:")


async def test_imagine_on_the_web_goes_on_from_predicted_pages_until_the_judge_is_satisfied() -> None:
    [task] = [t for t in load_suite("miniwob") if t.payload["name"] == "click-button"]
    script = ['click("e1")', "Next:\n[e7] button 'Imagined'", "Score: 3", 'click("e7")', "Next:\nDone.", "Score: 8"]
    t, model = await _imagined(script, env="web", task=task, max_steps=3)
    assert [s.role for s in t.steps] == ["solver", "world_model", "judge"] * 2 and t.success
    first, second = acted(t)
    assert not first.terminated and second.terminated and second.action is not None
    assert second.action.args.get("ref") == "e7"  # acted on the imagined page
    assert "[e7] button 'Imagined'" in model.seen[3][-1].content  # the solver was shown the prediction
    # never satisfied: truncated at max_steps, a failure
    t, _ = await _imagined(script[:3] * 2, env="web", task=task, max_steps=2)
    assert not t.success and acted(t)[-1].truncated and len(acted(t)) == 2


async def test_lookahead_imagines_several_steps_ahead_with_depth() -> None:
    [task] = [t for t in load_suite("miniwob") if t.payload["name"] == "click-button"]
    script = [
        'click("e1")',
        'click("e2")',
        "Next:\n[e5] button 'Next'",  # candidate 1, prediction 1
        'click("e5")',  # candidate 1, imagined answer
        "Next:\nstill nothing",  # candidate 1, prediction 2
        "Score: 2",
        "Next:\n[e6] button 'Finish'",  # candidate 2
        'click("e6")',
        "Next:\nDone, task solved.",
        "Score: 9",
    ]
    t, model = await _episode(
        "lookahead", script, env="web", task=task, max_steps=1, graph_options={"candidates": 2, "depth": 2}
    )
    roles = [s.role for s in t.steps]
    assert roles == ["solver"] * 2 + ["world_model", "solver", "world_model", "judge"] * 2
    assert [s.index for s in t.steps] == list(range(len(t.steps)))
    [ran] = acted(t)
    assert (
        ran.action is not None and ran.action.args.get("ref") == "e2"
    )  # the candidate whose imagined future was judged best
    imagined = t.steps[3]
    assert imagined.observation is None and imagined.action is not None  # imagined, never run
    assert "[e5] button 'Next'" in model.seen[3][-1].content  # the solver answered the predicted page
    assert model.samplings[3].temperature == 0.0
    judge_prompt = model.seen[5][-1].content
    assert "still nothing" in judge_prompt and 'click("e5")' in judge_prompt  # the last prediction, the chain
