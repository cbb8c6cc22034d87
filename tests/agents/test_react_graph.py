"""The react graph's control flow, pinned down with a scripted model and the real code environment."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from agents.graphs.react import build_react_graph
from agents.roles.solver import parse_code_action
from agents.rollout import RunConfig, run_episode, run_rollout
from autodidact import registry
from autodidact.types import Observation, Task
from environments.tasks import load_suite
from memory.base import TrajectoryQuery, open_store
from tests.agents.scripted import GOOD, TASK, WRONG, ScriptedModel


async def _episode(script: Sequence[str | BaseException], **cfg):  # type: ignore[no-untyped-def]
    model = ScriptedModel(script)
    [traj] = await run_episode(TASK, RunConfig(**cfg), model, build_react_graph(), "run")
    return traj, model


async def test_solved_first_try() -> None:
    t, _ = await _episode([GOOD])
    assert t.success and t.reward == 1.0 and t.error is None
    [step] = t.steps
    assert step.role == "solver" and step.terminated and step.token_ids == (1, 2) and step.logprobs == (-0.1, -0.2)
    assert [m.role for m in step.messages] == ["system", "user"] and step.messages[1].content == TASK.prompt
    assert step.action is not None and step.action.text == "def last(xs):\n    return xs[-1]"


async def test_feedback_then_fix_within_the_step_budget() -> None:
    t, model = await _episode([WRONG, GOOD], max_steps=2)
    assert t.success and [s.reward for s in t.steps] == [0.0, 1.0]
    second_prompt = model.seen[1]
    assert [m.role for m in second_prompt] == ["system", "user", "assistant", "user"]
    assert "AssertionError" in second_prompt[3].content


async def test_the_last_attempt_is_the_final_answer_not_a_success() -> None:
    t, _ = await _episode([WRONG], max_steps=2)  # visible feedback (the default): the last attempt is final
    assert not t.success and len(t.steps) == 2 and t.steps[-1].terminated and t.reward < 1.0
    # with the hidden tests as feedback (an oracle), a failed last attempt truncates the episode
    t, model = await _episode([WRONG], max_steps=2, env_options={"feedback": "hidden"})
    assert not t.success and len(t.steps) == 2 and t.steps[-1].truncated and not t.steps[-1].terminated
    assert "hidden tests passed" in model.seen[1][3].content


def test_env_options_are_checked_against_the_environment() -> None:
    from agents.rollout import plan_run
    from autodidact.errors import ConfigError

    with pytest.raises(ConfigError, match=r"code environments take no \['feedbak'\]; they take: .*feedback"):
        plan_run(RunConfig(env_options={"feedbak": "hidden"}), None, False)
    with pytest.raises(ConfigError, match="feedback must be one of visible, hidden; got 'oracle'"):
        plan_run(RunConfig(env_options={"feedback": "oracle"}), None, False)


async def test_garbage_output_is_recorded_as_a_parse_error() -> None:
    t, _ = await _episode(["I don't know, sorry!"])
    assert not t.success and t.steps[0].error == "parse: no code block found in the answer"
    assert t.steps[0].observation is not None and "No code" in t.steps[0].observation.text


async def test_backend_fault_hang_and_crash_end_the_episode_with_the_error() -> None:
    t, _ = await _episode(["ERROR"])
    assert not t.success and t.error is not None and "500" in t.error and t.steps[0].error
    t, _ = await _episode(["HANG"], episode_timeout_s=0.5)
    assert not t.success and t.error == "episode timed out after 0.5 s"
    t, _ = await _episode([RuntimeError("boom")])
    assert not t.success and t.error == "RuntimeError: boom"


async def test_a_hung_model_call_is_a_recorded_step_when_it_passes_the_step_timeout() -> None:
    t, _ = await _episode(["HANG"], step_timeout_s=0.3)
    assert not t.success and t.error == "model: no answer within 0.3 s (step_timeout_s)"
    [step] = t.steps
    assert step.role == "solver" and step.error == t.error and step.truncated and step.messages


async def test_rollout_stores_every_episode_and_survives_faults(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tasks = load_suite("bundled", limit=6)
    model = ScriptedModel([GOOD, "ERROR", RuntimeError("boom"), "garbage", GOOD, GOOD])
    with open_store(str(tmp_path / "s.db")) as store:
        result = await run_rollout(RunConfig(concurrency=1), model, store, tasks=tasks, progress=False)
        stored = store.query(TrajectoryQuery(run_id=result.run_id))
    assert len(stored) == 6 and {t.task.id for t in stored} == {t.id for t in tasks}
    assert sum(t.error is not None for t in stored) == 2
    assert stored[0].success  # task 'last' answered with GOOD


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("```python\ndef f():\n    return 1\n```\nExplanation.", "def f():\n    return 1"),
        ("Here:\n```py\ndef f(): pass", "def f(): pass"),  # generation stopped at the closing fence
        ("```\nimport os\n```", "import os"),
        ("def f(x):\n    return x", "def f(x):\n    return x"),
        ("```text\nnot python\n```", "not python"),
    ],
)
def test_parser_is_tolerant(text: str, code: str) -> None:
    parsed = parse_code_action(text)
    assert parsed.action.text == code and parsed.error is None


class HangingEnvironment:
    """Resets at once; every step hangs."""

    id = "code"

    def __init__(self, **_: object) -> None:
        pass

    async def reset(self, task: Task, *, seed: int | None = None) -> Observation:
        return Observation(text=task.prompt)

    async def step(self, action: object) -> Any:
        await asyncio.sleep(3600)

    async def close(self) -> None:
        pass


async def test_a_hung_environment_step_ends_the_episode_with_the_step_recorded() -> None:
    registry.register("environment", "test-hanging", f"{__name__}:HangingEnvironment")
    t, _ = await _episode([GOOD], env="test-hanging", step_timeout_s=0.3)
    assert t.error == "environment: the step took longer than 0.3 s (step_timeout_s)" and not t.success
    [step] = t.steps
    assert step.completion == GOOD and step.action is not None and step.error == t.error


async def test_an_interrupted_run_resumes_from_its_checkpoints(tmp_path: Any) -> None:
    cfg = RunConfig(samples_per_task=2, max_steps=2, concurrency=1, run_id="r1", reflections={"enabled": False})  # type: ignore[arg-type]
    with open_store(str(tmp_path / "t.db")) as store:
        # Episode 1 is solved and stored; episode 2 gets feedback, then its model hangs: the run is killed.
        first = ScriptedModel([GOOD, WRONG, "HANG"])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(run_rollout(cfg, first, store, tasks=[TASK], progress=False), 3)
        assert store.count(TrajectoryQuery(run_id="r1")) == 1
        second = ScriptedModel([GOOD])
        result = await run_rollout(cfg, second, store, tasks=[TASK], progress=False, resume=True)
        assert result.skipped == 1 and len(result.episodes) == 1
        [t] = result.episodes
        # It went on from the checkpoint: the wrong answer's feedback is in the only new call.
        assert [s.completion for s in t.steps] == [WRONG, GOOD] and t.success
        [prompt] = second.seen
        assert [m.role for m in prompt] == ["system", "user", "assistant", "user"] and "AssertionError" in prompt[
            3
        ].content
        assert store.count(TrajectoryQuery(run_id="r1")) == 2


def test_graph_options_are_checked_against_the_graph() -> None:
    from agents.rollout import graph_context
    from autodidact.errors import ConfigError

    with pytest.raises(ConfigError, match=r"graph_options \['rounds'\] are not settings of graph 'react'"):
        graph_context(RunConfig(graph_options={"rounds": 3}))
    with pytest.raises(ValueError, match=r"roles\.solver"):
        RunConfig(roles={"solver": {"model": "x"}})


def test_sampling_fields_given_keep_the_environments_other_defaults() -> None:
    code = RunConfig(sampling={"temperature": 0.8, "max_tokens": 128}).sampling
    assert (code.temperature, code.max_tokens, code.stop) == (0.8, 128, ("\n```\n",))  # still stops at the fence
    web = RunConfig(env="web", sampling={"temperature": 0.8}).sampling
    assert (web.temperature, web.max_tokens, web.stop) == (0.8, 64, ("\n\n",))
    assert RunConfig(sampling={"stop": []}).sampling.stop == ()  # a default can still be turned off
