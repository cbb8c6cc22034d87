"""The solver graph drives the web environment: prompts, action parsing and multi-step episodes."""

from __future__ import annotations

from agents.graphs.react import build_react_graph
from agents.roles.solver import parse_action, system_prompt
from agents.rollout import RunConfig, run_episode, run_rollout
from environments.tasks import load_suite
from memory.base import open_store
from tests.agents.scripted import ScriptedModel


def _task(name: str):  # type: ignore[no-untyped-def]
    [task] = [t for t in load_suite("miniwob") if t.payload["name"] == name]
    return task


def test_web_answers_parse_to_actions_or_record_why_not() -> None:
    ok = parse_action('type(e6, "Myron")', "web")
    assert ok.error is None and ok.action.kind == "type" and ok.action.args["text"] == "Myron"
    bad = parse_action("The goal is to click.", "web")
    assert bad.error and "no action found" in bad.error and bad.action.text == "The goal is to click."
    assert "click(e12)" in system_prompt("web") and "```python" in system_prompt("code")


def test_web_prompts_carry_an_example_turn_and_the_latest_page_only() -> None:
    from agents.roles.solver import initial_messages, next_messages
    from autodidact.types import Observation

    first = initial_messages(Observation(text='Goal: A\n[e1] button "A"'), "web")
    assert [m.role for m in first] == ["system", "user", "assistant", "user"]
    assert first[2].content == "click(e4)" and "=== example" not in first[0].content
    assert first[-1].content.endswith("Your action:") and "Goal: A" in first[-1].content
    second = next_messages(first, ["click(e1)"], Observation(text='Goal: A\n[e5] link "B"'), "web")
    assert second[:3] == first[:3] and len(second) == 4
    assert (
        "[e5] link" in second[-1].content and "[e1]" not in second[-1].content and "1. click(e1)" in second[-1].content
    )
    code = initial_messages(Observation(text="Write f."), "code")
    assert [m.role for m in code] == ["system", "user"] and code[1].content == "Write f."


def test_web_runs_default_to_many_short_steps() -> None:
    cfg = RunConfig(env="web", sampling={"temperature": 0.5})  # type: ignore[arg-type]
    assert cfg.suite == "miniwob" and cfg.max_steps == 15
    assert cfg.sampling.temperature == 0.5 and cfg.sampling.max_tokens == 64
    assert RunConfig().max_steps == 1 and RunConfig().suite == "bundled"


async def test_a_multi_step_web_episode_is_recorded_step_by_step() -> None:
    # enter-text: a bad answer, then type by name, then click Submit by name.
    model = ScriptedModel(["I would type the name.", 'type("textbox", "x")', 'click("Submit")'])
    [traj] = await run_episode(
        _task("enter-text"), RunConfig(env="web", max_steps=5), model, build_react_graph(), "run"
    )
    assert [s.role for s in traj.steps] == ["solver"] * 3
    first, second, third = traj.steps
    assert first.error and first.error.startswith("parse:") and "Error: no action found" in first.observation.text
    assert "no element named 'textbox'" in (second.observation.text if second.observation else "")
    assert third.terminated and traj.reward == -1.0 and not traj.success  # submitted an empty field
    # each turn sees the goal, its previous actions and the current page only
    last_prompt = model.seen[-1]
    assert [m.role for m in last_prompt] == ["system", "user", "assistant", "user"]  # with the example turn
    assert "Your previous actions:\n1. I would type the name.\n2. type(" in last_prompt[-1].content


async def test_rollout_over_miniwob_stores_successful_episodes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = ScriptedModel(['click("Click Me!")'])
    with open_store(str(tmp_path / "s.db")) as store:
        result = await run_rollout(
            RunConfig(env="web", suite="miniwob", samples_per_task=2, concurrency=2),
            model,
            store,
            tasks=[_task("click-test")],
            progress=False,
        )
        stored = store.query()
    assert [t.success for t in result.trajectories] == [True, True]
    assert len(stored) == 2 and all(t.env_id == "web" and t.steps[-1].reward == 1.0 for t in stored)
