"""Code skills end to end: real runs (scripted models), the real sandbox, real embeddings and store.

A solved episode leaves a verified skill; a later episode is offered it and calls it by name;
its use is counted. A candidate that fails verification never enters. Poisoned skills (one
that loops, one that raises, one that floods its output) cannot break an episode that calls them.
"""

from __future__ import annotations

from pathlib import Path

from agents.rollout import RunConfig, SkillConfig, run_rollout
from autodidact.types import Task
from environments.sandbox.process import ProcessSandbox
from memory import open_store
from memory.base import TrajectoryStore
from skills import code
from skills.library import Skill, SkillLibrary
from skills.use import learn, skills_used
from tests.agents.scripted import TASK, ScriptedModel

ON = SkillConfig(enabled=True)
SOLUTION = """import math

OFFSET = 1


def _index(xs):
    return len(xs) - OFFSET


def last(xs):
    return xs[_index(xs)]


print(last([1, 2]))
assert last([5]) == 5
"""
ENDS = Task(
    id="custom/ends",
    suite="custom",
    prompt="Write a Python function `ends(xs)` that returns the first and the last element of a list as a tuple.",
    payload={"entry_point": "ends", "test": "def check(candidate):\n    assert candidate([1, 2, 3]) == (1, 3)\n"},
)


def fenced(source: str) -> str:
    return f"```python\n{source}\n```"


async def solve(store: TrajectoryStore, task: Task, answers: list[str], run_id: str, **cfg: object):  # type: ignore[no-untyped-def]
    model = ScriptedModel(answers)
    config = RunConfig.model_validate({"run_id": run_id, "skills": ON, **cfg})
    [t] = (await run_rollout(config, model, store, tasks=[task], progress=False)).episodes
    return t, model


def test_definitions_keep_what_the_function_reaches_and_drop_the_rest() -> None:
    source = code.definitions(SOLUTION, "last")
    assert source is not None
    assert "import math" in source and "OFFSET = 1" in source and "def _index(xs)" in source
    assert "print(" not in source and "assert" not in source
    assert code.definitions("def f(:", "f") is None and code.definitions("x = 1", "f") is None
    # a stub followed by the full definition (a prefix, then a submission): the later one is kept
    assert "return 2" in (code.definitions("def f():\n    pass\n\ndef f():\n    return 2\n", "f") or "")


async def test_a_solved_episode_becomes_a_skill_that_a_later_episode_calls(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "t.db")) as store:
        t, _ = await solve(store, TASK, [fenced(SOLUTION)], "a")
        assert t.success
        library = SkillLibrary(store)
        [skill] = library.all()
        assert (skill.name, skill.version, skill.env, skill.status) == ("last", 1, "code", "active")
        assert skill.trajectory_id == t.id and skill.run_id == "a" and skill.task.id == TASK.id
        assert "assert last([4, 5, 6]) == 6" in skill.tests  # the visible test
        assert "assert last([1, 2, 3]) == 3" in skill.tests  # the hidden check's assert, by name
        assert "print(" not in skill.source

        # the same solution again is a duplicate, not a second skill
        await solve(store, TASK, [fenced(SOLUTION)], "b")
        assert len(SkillLibrary(store).all()) == 1

        # a later task: the solver is offered the skill and calls it without defining it
        t2, model = await solve(store, ENDS, [fenced("def ends(xs):\n    return xs[0], last(xs)")], "c")
        assert "Verified functions" in model.seen[0][0].content and "def _index(xs)" in model.seen[0][0].content
        assert t2.success and skills_used(t2) == [skill.id]
        used = SkillLibrary(store).get("last")
        assert used is not None and (used.uses, used.successes) == (1, 1)
        # ends() leans on last(), which its own source lacks: as a skill it fails verification
        assert SkillLibrary(store).get("ends") is None


async def test_a_candidate_that_fails_verification_never_enters(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "t.db")) as store:
        t, _ = await solve(store, ENDS, [fenced("def ends(xs):\n    return xs[0], xs[-1]")], "a", skills=SkillConfig())
        library = SkillLibrary(store)
        candidate = code.extract(t)
        assert candidate is not None
        sandbox = ProcessSandbox()
        assert await code.verify(candidate, sandbox) is None
        wrong = candidate.model_copy(update={"source": "def ends(xs):\n    return xs[0], xs[0]\n"})
        assert (await code.verify(wrong, sandbox) or "").startswith("its own tests: 0/1 passed")
        untested = candidate.model_copy(update={"tests": ()})
        assert await code.verify(untested, sandbox) == "no tests could be derived from the episode"
        # learn() verifies before it admits: a tampered episode's program leaves nothing behind
        bad_step = t.steps[0].model_copy(
            update={"action": t.steps[0].action.model_copy(update={"text": "def ends(xs):\n    return xs[1:]"})}  # type: ignore[union-attr]
        )
        tampered = t.model_copy(update={"steps": (bad_step,)})
        result = await learn(tampered, library, sandbox=sandbox)
        assert result.status == "rejected" and "its own tests" in (result.reason or "")
        assert library.all() == []
        assert (await learn(t, library, sandbox=sandbox)).status == "added"
        assert [s.name for s in library.all()] == ["ends"]


POISONS = {  # name: (description, source)
    "spin": ("Return the last element of a list, slowly.", "def spin(xs):\n    while True:\n        pass\n"),
    "boom": ("Pick the final item of a sequence.", "def boom(xs):\n    raise RuntimeError('poisoned')\n"),
    "flood": ("Last entry of a list, with logging.", "def flood(xs):\n    while True:\n        print('x' * 100000)\n"),
}

WHY = {"spin": "timed out", "boom": "RuntimeError: poisoned", "flood": "timed out"}


async def test_poisoned_skills_cannot_break_an_episode_that_calls_them(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "t.db")) as store:
        library = SkillLibrary(store)
        for name, (description, source) in POISONS.items():  # as if they had passed too narrow tests
            poisoned = Skill(name=name, env="code", description=description, source=source, tests=(), task=TASK)
            assert library.admit(poisoned).status == "added"
        good = "```python\ndef last(xs):\n    return xs[-1]\n```"
        for name in POISONS:
            answers = [fenced(f"def last(xs):\n    return {name}(xs)"), good]
            t, model = await solve(store, TASK, answers, f"p-{name}", max_steps=2)
            assert name in model.seen[0][0].content  # retrieved and offered
            first = t.steps[0]
            assert first.observation is not None and first.reward == 0.0
            assert WHY[name] in first.observation.text and len(first.observation.text) < 2000  # a flood is cut
            assert first.observation.data.get("skills_used") == [f"skill:code:{name}:v1"]
            assert t.success and t.error is None and len(t.steps) == 2  # the episode went on and was solved
            assert store.get(t.id) is not None
        for name in POISONS:
            s = SkillLibrary(store).get(name)
            assert s is not None and s.uses == 1
