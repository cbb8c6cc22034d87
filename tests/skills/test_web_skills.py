"""Web skills with real Chromium: a solved MiniWoB++ episode becomes a parameterized macro,
verified by replay on its seed and another; a later episode on a new seed runs it with one
action; a macro that cannot run stops with an observation saying why, and the episode goes on."""

from __future__ import annotations

import re
from pathlib import Path

from agents.rollout import RunConfig, SkillConfig, run_rollout
from autodidact.types import Action, Observation, PolicyRef, Step, Task, Trajectory
from environments.tasks import load_suite
from environments.web.env import WebEnvironment
from environments.web.policies import ReferencePolicy
from memory import open_store
from skills import web
from skills.library import SkillLibrary
from skills.use import learn, parse_skill_call, skills_used
from tests.agents.scripted import ScriptedModel


def miniwob(name: str, seed: int | None = None) -> Task:
    [task] = [t for t in load_suite("miniwob") if t.payload["name"] == name]
    return task if seed is None else task.model_copy(update={"payload": {**task.payload, "seed": seed}})


async def reference_episode(task: Task) -> Trajectory:
    """The reference policy's episode, recorded as a model's would be."""
    env, policy, steps = WebEnvironment(), ReferencePolicy(), []
    try:
        obs = await env.reset(task, seed=task.payload.get("seed"))
        for i in range(10):
            action = await policy.act(task, obs)
            r = await env.step(action)
            steps.append(
                Step(
                    index=i,
                    role="solver",
                    action=action,
                    observation=r.observation,
                    reward=r.reward,
                    terminated=r.terminated,
                )
            )
            obs = r.observation
            if r.terminated:
                break
    finally:
        await env.close()
    last = steps[-1]
    return Trajectory(
        run_id="ref",
        task=task,
        env_id="web",
        policy=PolicyRef(model="reference"),
        steps=tuple(steps),
        reward=last.reward,
        success=last.terminated and last.reward >= 1.0,
    )


def test_skill_calls_parse_or_say_why() -> None:
    assert parse_skill_call('skill(login_user, "ann", "pw")') == ("login_user", ["ann", "pw"])
    assert parse_skill_call('I will use it: skill("login_user")') == ("login_user", [])
    assert parse_skill_call("click(e3)") is None
    assert "skill(name)" in str(parse_skill_call("skill(login_user, ann pw)"))


async def test_a_solved_web_episode_becomes_a_macro_that_a_new_seed_runs_in_one_action(tmp_path: Path) -> None:
    t = await reference_episode(miniwob("login-user"))
    assert t.success and len(t.steps) == 3
    with open_store(str(tmp_path / "t.db")) as store:
        library = SkillLibrary(store)
        learned = await learn(t, library)
        assert learned.status == "added" and learned.skill is not None
        skill = learned.skill
        assert skill.name == "login_user" and skill.params == ("p0", "p1") and skill.seed is None
        assert [s["kind"] for s in skill.steps] == ["type", "type", "click"]
        assert skill.steps[0]["text"] == "{p0}" and skill.steps[1]["text"] == "{p1}"
        assert skill.steps[2]["role"] == "button" and skill.steps[2]["name"] == "Login"
        goal = 'Enter the username "ann" and the password "x1" into the text fields and press login.'
        assert web.bind(skill, goal) == {"p0": "ann", "p1": "x1"}
        assert "not of its form" in str(web.bind(skill, "Click the button."))

        # a later episode on another seed: offered the skill, it runs it as one action
        model = ScriptedModel(["skill(login_user)"])
        cfg = RunConfig(env="web", run_id="w", skills=SkillConfig(enabled=True))
        [episode] = (await run_rollout(cfg, model, store, tasks=[miniwob("login-user", 7)], progress=False)).episodes
        assert "skill(name)" in model.seen[0][0].content and "login_user(p0, p1)" in model.seen[0][0].content
        assert episode.success and len(episode.steps) == 1 and skills_used(episode) == [skill.id]
        assert (SkillLibrary(store).get("login_user") or skill).uses == 1


async def test_a_macro_that_does_not_generalize_is_not_verified() -> None:
    t = await reference_episode(miniwob("login-user"))
    env = WebEnvironment()
    try:
        skill = await web.extract(t, env)
        assert skill is not None and await web.verify(skill, env) is None
        goal = str(t.steps[0].observation.data["goal"])  # type: ignore[union-attr]
        user = re.findall(r'"([^"]*)"', goal)[0]
        fixed = skill.model_copy(update={"steps": ({**skill.steps[0], "text": user}, *skill.steps[1:])})
        why = await web.verify(fixed, env)  # the username typed literally: right on its seed only
        assert why is not None and why.startswith("replay on seed 1")
    finally:
        await env.close()


async def test_a_broken_or_runaway_macro_stops_and_the_episode_goes_on(tmp_path: Path) -> None:
    t = await reference_episode(miniwob("login-user"))
    with open_store(str(tmp_path / "t.db")) as store:
        library = SkillLibrary(store)
        skill = (await learn(t, library)).skill
        assert skill is not None
        # poisoned: a step aimed at an element that is not there, then far too many steps
        steps = ({**skill.steps[0], "role": "button", "name": "Nowhere"}, *[skill.steps[0]] * 500)
        library.set_status(skill.name, "retired")
        poisoned = skill.model_copy(update={"name": "login_user_fast", "steps": steps, "description": "Log in fast."})
        assert library.admit(poisoned).status == "added"
        model = ScriptedModel(["skill(login_user_fast)", "skill(nonexistent)", "stop()"])
        cfg = RunConfig(env="web", run_id="p", skills=SkillConfig(enabled=True, learn=False), max_steps=3)
        [episode] = (await run_rollout(cfg, model, store, tasks=[miniwob("login-user", 3)], progress=False)).episodes
        first, second = episode.steps[0].observation, episode.steps[1].observation
        assert first is not None and "ran 0 of 501 steps; stopped: no button named 'Nowhere'" in first.text
        assert second is not None and "no skill 'nonexistent'" in second.text
        assert len(episode.steps) == 3 and episode.error is None and not episode.success
        assert store.get(episode.id) is not None

        # a macro longer than MAX_STEPS runs MAX_STEPS steps at most
        env = WebEnvironment()
        try:
            obs = await env.reset(miniwob("login-user", 3))
            long = poisoned.model_copy(update={"steps": (skill.steps[0],) * 500})
            result = await web.run_macro(env, long, obs)
            assert f"ran {web.MAX_STEPS} of 500 steps" in result.observation.text
        finally:
            await env.close()


def test_a_drag_step_finds_its_drop_target_by_role_and_name_on_a_renumbered_page() -> None:
    step = {"kind": "drag", "role": "text", "name": "{p0}", "nth": 0}
    step[web.TARGET] = {"role": "text", "name": "Pear", "nth": 0}
    page = Observation(text="[e4] Pear\n[e9] Fig\n[e11] Plum")
    action = web._action(step, {"p0": "Plum"}, page)
    assert isinstance(action, Action) and action.args == {"ref": "e11", "target_ref": "e4"}
    gone = {**step, web.TARGET: {"role": "text", "name": "Kiwi", "nth": 0}}
    assert web._action(gone, {"p0": "Plum"}, page) == "no text named 'Kiwi' on this page"


async def test_a_solved_drag_episode_keeps_its_drop_target_and_replays() -> None:
    t = await reference_episode(miniwob("drag-items", 2))
    assert t.success and t.steps[0].action is not None and t.steps[0].action.kind == "drag"
    env = WebEnvironment()
    try:
        skill = await web.extract(t, env)
        assert skill is not None
        [step] = skill.steps
        # the dragged item is named in the goal, so it is a parameter; the item at the target
        # position is not, so it is kept by its text
        goal = str(t.steps[0].observation.data["goal"])  # type: ignore[union-attr]
        dragged = str(web.bind(skill, goal)["p0"])  # type: ignore[index]
        assert (step["kind"], step["role"], step["name"], skill.params) == ("drag", "text", "{p0}", ("p0",))
        assert goal.startswith(f"Drag {dragged} ") and step[web.TARGET]["role"] == "text"
        assert step[web.TARGET]["name"] not in ("", dragged, "{p0}")
        obs = await env.reset(t.task, seed=2)
        result = await web.run_macro(env, skill, obs)
        assert result.reward >= 1.0 and result.terminated, result.observation.text
    finally:
        await env.close()
