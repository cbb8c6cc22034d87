"""The examples run as documented."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from autodidact.types import Action
from environments.code.env import CodeEnvironment
from environments.tasks import load_suite
from memory.base import open_store

EXAMPLES = Path(__file__).parents[1] / "examples"
REFERENCE = {
    "shout": "def shout(s):\n    return s.upper() + '!'",
    "initials": "def initials(name):\n    return ''.join(w[0] for w in name.split())",
    "repeat": "def repeat(s, n):\n    return s * n",
}


async def test_example_task_file_is_valid_and_solvable() -> None:
    tasks = load_suite(str(EXAMPLES / "string_tasks.jsonl"))
    assert [t.id for t in tasks] == ["string_tasks/shout", "string_tasks/initials", "string_tasks/repeat"]
    for task in tasks:
        env = CodeEnvironment()
        await env.reset(task)
        result = await env.step(Action(kind="code", text=REFERENCE[task.payload["entry_point"]]))
        assert result.reward == 1.0, result.observation.text


@pytest.mark.slow
async def test_run_custom_suite_example_with_the_embedded_model(tmp_path: Path, embedded_model, capsys) -> None:  # type: ignore[no-untyped-def]
    main = runpy.run_path(str(EXAMPLES / "run_custom_suite.py"))["main"]
    rate = await main("embedded", str(tmp_path / "store.db"), model=embedded_model)
    with open_store(str(tmp_path / "store.db")) as store:
        stored = store.query()
    assert len(stored) == 3 and all(t.steps[0].completion and t.steps[0].observation for t in stored)
    assert rate == sum(t.success for t in stored) / 3
    assert f"success rate {rate:.0%}" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["evolve_demo.yaml", "evolve_web.yaml", "evolve_web_qwen.yaml"])
def test_evolve_configs_parse_and_pick_tasks_of_their_environment(name: str) -> None:
    from autodidact.config import parse
    from training.evolve import EvolveConfig

    cfg = parse(EvolveConfig, EXAMPLES / name)
    for stage, fields in [(cfg.collect, {}), *[(cfg.evaluate, s.run_fields()) for s in cfg.suites]]:
        run = cfg.run_config(stage, **fields)
        tasks = load_suite(run.suite)
        assert tasks and all((t.payload.get("kind") in ("miniwob", "site")) == (cfg.env == "web") for t in tasks)
