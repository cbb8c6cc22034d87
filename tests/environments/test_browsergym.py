"""BrowserGym's own MiniWoB++ tasks under this project's environment, solver, runner and store.

Everything runs the real packages (browsergym-core and browsergym-miniwob 0.14.3 on this
project's Playwright) in the system Chromium, with the pages served by our MiniWoB++ file server.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from agents.roles.solver import initial_messages, parse_action
from agents.rollout import RunConfig, run_rollout
from autodidact import registry
from autodidact.errors import BrowserUnavailableError, ConfigError, EnvironmentUnavailableError, TaskDataError
from autodidact.types import Action, Observation, Task
from environments.tasks import load_suite
from environments.web import browsergym
from environments.web.actions import ActionError
from environments.web.browsergym import BrowserGymEnvironment, browsergym_suite
from memory.base import open_store
from tests.agents.scripted import ScriptedModel

TASKS = {t.id: t for t in load_suite("browsergym-miniwob")}


def _bid(text: str, role: str, name: str) -> str:
    """The bid of the element shown as ``[bid] role 'name'`` in an observation."""
    found = re.search(rf"\[(\w+)\] {role} '{re.escape(name)}'", text)
    assert found, text
    return found.group(1)


# -- suite, parsing, prompts (no browser) -----------------------------------------------------


def test_the_suite_is_browsergyms_miniwob_with_this_projects_splits() -> None:
    assert len(TASKS) == 125  # BrowserGym's MiniWoB++ tasks (of the wheel's 130 pages)
    task = TASKS["browsergym/miniwob.click-test"]
    assert task.suite == "browsergym-miniwob" and task.payload == {
        "kind": "browsergym",
        "env_id": "browsergym/miniwob.click-test",
    }
    ours = {t.payload["name"]: t.split for t in load_suite("miniwob")}
    assert all(t.split == ours[t.id.removeprefix("browsergym/miniwob.")] for t in TASKS.values())
    assert {t.split for t in TASKS.values()} == {"train", "test"}


def test_missing_benchmark_packages_and_unknown_actions_are_config_errors() -> None:
    with pytest.raises(TaskDataError, match=r"pip install --no-deps browsergym-core==0\.14\.3 browsergym-nope"):
        browsergym_suite("nope")
    with pytest.raises(ConfigError, match=r"BrowserGym has no action \['clik'\]"):
        BrowserGymEnvironment(actions=["click", "clik"])
    assert BrowserGymEnvironment(actions=["click", "keyboard_type"]).actions == ("click", "keyboard_type")


@pytest.mark.parametrize(
    ("text", "call"),
    [
        ('click("13")', "click('13')"),
        ("The button is [13].\nclick(13)", "click('13')"),  # a bid as a number is read as a string
        ('fill("5", "Kanesha")\nclick("6")', "click('6')"),  # the last call
        ('```\nfill("5", "a (b) c")\n```', "fill('5', 'a (b) c')"),
        ('goto("http://x")\nclick("7")', "click('7')"),  # goto is not in the default set: skipped
        ("noop()", "noop()"),
        ('select_option("3", ["a", "b"])', "select_option('3', ['a', 'b'])"),
    ],
)
def test_parse_action_takes_the_last_allowed_call(text: str, call: str) -> None:
    assert browsergym.parse_action(text) == call


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("I am not sure.", "no action found"),
        ('goto("http://example.com")', "unknown action goto"),
        ('click("13"', "no action found"),
    ],
)
def test_parse_action_says_why_not(text: str, message: str) -> None:
    with pytest.raises(ActionError, match=message):
        browsergym.parse_action(text)


def test_the_solver_reads_browsergym_calls_and_shows_their_syntax() -> None:
    ok = parse_action('I click it: click("13")', "browsergym")
    assert ok.error is None and ok.action == Action(kind="click", text="click('13')")
    bad = parse_action("Let me think.", "browsergym")
    assert bad.error and "no action found" in bad.error and bad.action.kind == "text"
    first = initial_messages(Observation(text="Goal: A\n[3] button 'A'"), "browsergym")
    assert [m.role for m in first] == ["system", "user", "assistant", "user"]
    assert 'fill("7", "text to enter")' in first[0].content and first[-1].content.endswith("Your action:")
    cfg = RunConfig(env="browsergym")
    assert cfg.suite == "browsergym-miniwob" and cfg.max_steps == 15 and cfg.sampling.max_tokens == 64


# -- episodes in Chromium ------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env() -> AsyncIterator[BrowserGymEnvironment]:
    e = registry.make("environment", "browsergym", max_steps=3)
    yield e
    await e.close()


@pytest.mark.parametrize(
    ("name", "goal", "element"),
    [
        ("click-test", "Click the button.", ("button", "Click Me!")),
        ("enter-text", "into the text field and press Submit", ("button", "Submit")),
        ("choose-list", "from the list and click Submit", ("button", "Submit")),
    ],
)
async def test_reset_shows_the_goal_and_the_page_with_bids(
    env: BrowserGymEnvironment, name: str, goal: str, element: tuple[str, str]
) -> None:
    obs = await env.reset(TASKS[f"browsergym/miniwob.{name}"], seed=3)
    assert obs.text.startswith(f"Goal: {obs.data['goal']}\nURL: http://127.0.0.1:")
    assert goal in obs.data["goal"] and f"/miniwob/{name}.html" in obs.data["url"]
    assert _bid(obs.text, *element).isdigit()


async def test_a_scripted_action_solves_click_test(env: BrowserGymEnvironment) -> None:
    obs = await env.reset(TASKS["browsergym/miniwob.click-test"], seed=1)
    result = await env.step(Action(kind="text", text=f"click({_bid(obs.text, 'button', 'Click Me!')})"))
    assert (result.reward, result.terminated, result.truncated) == (1.0, True, False)
    assert "error" not in result.info and result.info["task_info"]["RAW_REWARD_GLOBAL"] == 1


async def test_bad_actions_are_error_observations_until_the_step_budget(env: BrowserGymEnvironment) -> None:
    await env.reset(TASKS["browsergym/miniwob.click-test"], seed=1)
    results = [
        await env.step(Action(kind="text", text=text))
        for text in ("I would click the button.", 'click("999")', 'goto("http://example.com")')
    ]
    errors = [r.observation.text.splitlines()[0] for r in results]
    assert errors[0].startswith("Error: no action found")
    assert errors[1] == 'Error: ValueError: Could not find element with bid "999"'  # BrowserGym's own
    assert errors[2].startswith("Error: unknown action goto")
    assert all(r.reward == 0.0 and not r.terminated and "Click Me!" in r.observation.text for r in results)
    assert [r.truncated for r in results] == [False, False, True]  # max_steps=3


async def test_faults_not_the_agents_raise_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    other = Task(id="x", suite="x", prompt="x", payload={"kind": "browsergym", "env_id": "browsergym/nope.x"})
    monkeypatch.setenv("AUTODIDACT_CHROMIUM", "/nonexistent/chromium")
    env = BrowserGymEnvironment()
    try:
        with pytest.raises(EnvironmentUnavailableError, match=r"browsergym-nope==0\.14\.3"):
            await env.reset(other)
        with pytest.raises(BrowserUnavailableError, match=r"could not launch Chromium .*/nonexistent/chromium"):
            await env.reset(TASKS["browsergym/miniwob.click-test"])
    finally:
        await env.close()
    with pytest.raises(TaskDataError, match="not a BrowserGym task"):
        await env.reset(load_suite("miniwob", limit=1)[0])


async def test_a_rollout_stores_browsergym_episodes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = ScriptedModel(["Thinking...", 'click("13")'])  # click-test's button is bid 13
    with open_store(str(tmp_path / "s.db")) as store:
        result = await run_rollout(
            RunConfig(env="browsergym", max_steps=4),
            model,
            store,
            tasks=[TASKS["browsergym/miniwob.click-test"]],
            progress=False,
        )
        [stored] = store.query()
    assert result.success_rate == 1.0 and stored.env_id == "browsergym" and stored.success
    assert [s.action.text for s in stored.steps if s.action] == ["Thinking...", "click('13')"]
    assert stored.steps[0].error and stored.steps[0].error.startswith("parse: no action found")
    assert "[13] button 'Click Me!'" in model.seen[0][-1].content and "Your action:" in model.seen[1][-1].content
    assert "Your previous actions:\n1. Thinking..." in model.seen[1][-1].content
