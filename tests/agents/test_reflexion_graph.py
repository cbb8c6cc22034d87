"""The reflexion graph: trial, review, refine (reflection + new answer), retry — until solved
or out of rounds; every model call a step. Control flow with a scripted model on the code and
web environments, and end to end with the embedded model."""

from __future__ import annotations

from agents.graphs.reflexion import build_reflexion_graph
from agents.rollout import RunConfig, run_episode
from environments.tasks import load_suite
from tests.agents.scripted import GOOD, TASK, ScriptedModel

BAD = "```python\ndef last(xs):\n    return xs[0]\n```"
REVIEW = "Score: 1/10\nCritique: it returns the first item, not the last."


def refined(code: str) -> str:
    return f"Reflection: return xs[-1], the last item.\nAnswer:\n{code}"


async def _episode(script, **cfg):  # type: ignore[no-untyped-def]
    model = ScriptedModel(script)
    cfg.setdefault("graph", "reflexion")
    [traj] = await run_episode(cfg.pop("task", TASK), RunConfig(**cfg), model, build_reflexion_graph(), "run")
    return traj, model


async def test_a_refined_answer_is_the_next_attempt_and_can_succeed() -> None:
    t, model = await _episode([BAD, REVIEW, refined(GOOD)])
    assert [s.role for s in t.steps] == ["solver", "reviewer", "refiner"]
    solver, reviewer, refiner = t.steps
    assert solver.reward < 1.0 and reviewer.output == {
        "score": 0.1,
        "critique": "it returns the first item, not the last.",
    }
    assert refiner.action is not None and "xs[-1]" in refiner.action.text and refiner.terminated
    assert t.success and t.reward == 1.0 and [s.index for s in t.steps] == [0, 1, 2]
    assert "Environment feedback:" in model.seen[1][-1].content and "Critique:" in model.seen[2][-1].content


async def test_rounds_bound_the_retries_and_a_solved_trial_is_not_reviewed() -> None:
    t, _ = await _episode([BAD, REVIEW, refined(BAD), REVIEW, refined(BAD)])
    assert [s.role for s in t.steps] == ["solver", "reviewer", "refiner", "reviewer", "refiner"]
    assert not t.success and all(s.reward < 1.0 for s in t.steps)
    t, _ = await _episode([GOOD])
    assert [s.role for s in t.steps] == ["solver"] and t.success  # solved at once: no review


async def test_unparseable_reviews_and_refinements_are_recorded_and_the_episode_goes_on() -> None:
    t, _ = await _episode([BAD, "looks fine", refined(GOOD)])
    assert [s.role for s in t.steps] == ["solver", "reviewer", "refiner"] and t.success
    assert t.steps[1].error and t.steps[1].error.startswith("parse: no score") and t.steps[1].output is None
    # a refinement without an answer is recorded, and the next trial asks the solver again
    t, _ = await _episode([BAD, REVIEW, "Reflection: use the last item.\nAnswer:", GOOD])
    assert [s.role for s in t.steps] == ["solver", "reviewer", "refiner", "solver"] and t.success
    assert t.steps[2].error and "no answer found" in t.steps[2].error and t.steps[2].action is None


async def test_web_trials_restart_from_the_first_page_with_the_reflection() -> None:
    [task] = [t for t in load_suite("miniwob") if t.payload["name"] == "click-button"]
    wrong, reflection = "stop()", "Reflection: click the button the goal names.\nAnswer:\nclick(e4)"
    t, model = await _episode([wrong, REVIEW, reflection, 'click("NONE")'], env="web", task=task, max_steps=2)
    roles = [s.role for s in t.steps]
    assert roles[:3] == ["solver", "reviewer", "refiner"] and roles[3] == "solver"
    assert t.steps[2].action is None  # multi-step trials do not act on the old page
    retry_prompt = model.seen[3][0].content  # the lessons close the system message
    assert "Lessons from earlier attempts" in retry_prompt and "click the button the goal names" in retry_prompt


async def test_roles_run_on_their_own_models_and_sampling() -> None:
    from contextlib import AsyncExitStack

    from agents.graphs.reflexion import build_reflexion_graph as build
    from agents.llm.openai_compat import OpenAIChatModel
    from agents.rollout import Bindings, bind_roles, role_sampling

    cfg = RunConfig(graph="reflexion", roles={"reviewer": {"sampling": {"max_tokens": 7}}})
    solver, reviewer = ScriptedModel([BAD, refined(GOOD)]), ScriptedModel([REVIEW])
    bindings = Bindings(models={"reviewer": reviewer}, samplings=role_sampling(cfg))
    [t] = await run_episode(TASK, cfg, solver, build(), "run", bindings=bindings)
    assert [s.role for s in t.steps] == ["solver", "reviewer", "refiner"] and t.success
    assert len(reviewer.seen) == 1 and len(solver.seen) == 2  # the refiner stayed on the run's model
    assert reviewer.samplings[0].max_tokens == 7 and reviewer.samplings[0].temperature == 0.0
    assert solver.samplings[1].max_tokens == 384  # the refiner's own default

    url = "http://127.0.0.1:9/v1"
    two = RunConfig(roles={"reviewer": {"model": url}, "refiner": {"model": url}, "judge": {"model": "embedded"}})
    async with AsyncExitStack() as stack:
        bound = await bind_roles(two, solver, stack)
    assert isinstance(bound.models["reviewer"], OpenAIChatModel) and bound.models["reviewer"] is bound.models["refiner"]
    assert bound.models["judge"] is solver  # the run's own model spec is not built twice
