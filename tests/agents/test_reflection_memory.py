"""Reflection memory in runs: a failed episode leaves a lesson (the reflector's, or the refiner's
in reflexion), stored with its provenance; later episodes of the task are given it; it can be
switched off. Scripted models, the real code environment, real embeddings and store."""

from __future__ import annotations

from pathlib import Path

from agents.rollout import ReflectionConfig, RunConfig, run_rollout
from memory import open_store
from tests.agents.scripted import GOOD, TASK, WRONG, ScriptedModel

ON = ReflectionConfig(enabled=True)
LESSON = "Reflection: the last item is xs[-1], not xs[0]."


async def test_a_failed_episode_leaves_a_lesson_that_the_next_run_is_given(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "t.db")) as store:
        first = ScriptedModel([WRONG, LESSON])
        [t] = (
            await run_rollout(RunConfig(run_id="a", reflections=ON), first, store, tasks=[TASK], progress=False)
        ).episodes
        assert [s.role for s in t.steps] == ["solver", "reflector"] and not t.success
        assert t.steps[1].output == {"text": "the last item is xs[-1], not xs[0]."}
        assert "AssertionError" in first.seen[1][-1].content  # the reflector saw the feedback
        stored = store.get(t.id)
        assert stored is not None and [s.role for s in stored.steps] == ["solver", "reflector"]
        [entry] = store.memory("reflection", key=TASK.id)
        assert entry.data["trajectory_id"] == t.id and entry.data["run_id"] == "a" and entry.data["model"] == "embedded"

        second = ScriptedModel([GOOD])
        [ok] = (
            await run_rollout(RunConfig(run_id="b", reflections=ON), second, store, tasks=[TASK], progress=False)
        ).episodes
        system, user = second.seen[0]
        assert "Lessons from earlier attempts" in system.content and "xs[-1], not xs[0]" in system.content
        assert user.content == TASK.prompt
        assert ok.success and [s.role for s in ok.steps] == ["solver"]  # a success leaves no lesson
        assert len(store.memory("reflection")) == 1

        off = ScriptedModel([WRONG])
        cfg = RunConfig(run_id="c")  # off by default
        [t] = (await run_rollout(cfg, off, store, tasks=[TASK], progress=False)).episodes
        assert "Lessons" not in off.seen[0][0].content and [s.role for s in t.steps] == ["solver"]
        assert len(store.memory("reflection")) == 1


async def test_reflexion_keeps_its_own_reflections_and_faults_leave_none(tmp_path: Path) -> None:
    review = "Score: 1\nCritique: it returns the first item."
    refined = f"Reflection: return xs[-1].\nAnswer:\n{WRONG}"
    with open_store(str(tmp_path / "t.db")) as store:
        cfg = RunConfig(run_id="r", graph="reflexion", graph_options={"rounds": 1}, reflections=ON)
        model = ScriptedModel([WRONG, review, refined])
        [t] = (await run_rollout(cfg, model, store, tasks=[TASK], progress=False)).episodes
        assert [s.role for s in t.steps] == ["solver", "reviewer", "refiner"]  # no reflector call
        assert [e.data["text"] for e in store.memory("reflection")] == ["return xs[-1]."]

        broken = ScriptedModel(["ERROR"])
        [t] = (
            await run_rollout(RunConfig(run_id="e", reflections=ON), broken, store, tasks=[TASK], progress=False)
        ).episodes
        assert t.error and [s.role for s in t.steps] == ["solver"] and len(broken.seen) == 1
        assert len(store.memory("reflection")) == 1


async def test_a_costly_success_leaves_a_lesson_on_its_failed_attempt(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "t.db")) as store:
        model = ScriptedModel([WRONG, GOOD, LESSON])
        cfg = RunConfig(run_id="c", reflections=ON, max_steps=2)
        [t] = (await run_rollout(cfg, model, store, tasks=[TASK], progress=False)).episodes
        assert t.success and [s.role for s in t.steps] == ["solver", "solver", "reflector"]
        assert "xs[0]" in model.seen[2][-1].content and "AssertionError" in model.seen[2][-1].content  # the failed try
        [entry] = store.memory("reflection", key=TASK.id)
        assert entry.data["trajectory_id"] == t.id and entry.data["text"] == "the last item is xs[-1], not xs[0]."

        cheap = ScriptedModel([GOOD])  # solved at once, with 3 attempts allowed: nothing to learn
        [t] = (
            await run_rollout(
                RunConfig(run_id="d", reflections=ON, max_steps=3), cheap, store, tasks=[TASK], progress=False
            )
        ).episodes
        assert t.success and [s.role for s in t.steps] == ["solver"] and len(store.memory("reflection")) == 1
