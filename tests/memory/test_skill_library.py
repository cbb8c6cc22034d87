"""The skill library on both stores (SQLite, PostgreSQL) with real all-MiniLM-L6-v2 embeddings:
deduplication, versions, retrieval, usage counts and retirement, export and import."""

from __future__ import annotations

from pathlib import Path

import pytest

from autodidact.errors import TaskDataError
from environments.tasks import load_suite
from memory.base import TrajectoryStore
from memory.embed import minilm_available
from skills.library import Skill, SkillLibrary, read_skills

pytestmark = pytest.mark.skipif(not minilm_available(), reason="the memory extra (MiniLM) is not installed")
REDUCE = "import functools\n\n\ndef last(xs):\n    return functools.reduce(lambda _, x: x, xs)\n"
ITERABLES = "Write `last(items)`: the final item of any iterable, a generator too, in one pass."
BUNDLED = {t.id.split("/")[-1]: t for t in load_suite("bundled")}


def skill(task_name: str, source: str | None = None, description: str | None = None) -> Skill:
    t = BUNDLED[task_name]
    return Skill(
        name=t.payload["entry_point"],
        env="code",
        description=description or t.prompt,
        source=source or t.payload["solution"],
        tests=tuple(t.payload.get("visible_tests") or ()),
        task=t,
    )


def test_near_copies_are_one_skill_and_a_new_body_under_a_taken_name_is_a_version(store: TrajectoryStore) -> None:
    library = SkillLibrary(store)
    assert library.admit(skill("last")).status == "added"
    again = library.admit(skill("last", "def last(xs):\n    return xs[len(xs) - 1]\n"))
    assert again.status == "duplicate" and again.skill.id == "skill:code:last:v1" and (again.similarity or 0) >= 0.95
    # measured: is_odd and is_even are 0.93 similar, the closest pair of bundled solutions: both kept
    assert library.admit(skill("is_odd")).status == library.admit(skill("is_even")).status == "added"
    # the same task's skill with another body is still 0.96 similar (the description weighs most):
    # a duplicate; another task's function of the same name is a new version
    assert library.admit(skill("last", REDUCE)).status == "duplicate"
    v2 = library.admit(skill("last", REDUCE, ITERABLES))
    assert v2.status == "added" and v2.skill.id == "skill:code:last:v2", v2
    assert library.get("last") == v2.skill and library.get("skill:code:last:v1") is not None
    assert [s.id for s in SkillLibrary(store).all()] == [
        "skill:code:is_even:v1",
        "skill:code:is_odd:v1",
        "skill:code:last:v1",
        "skill:code:last:v2",
    ]


def test_retrieval_gives_the_nearest_active_latest_versions(store: TrajectoryStore) -> None:
    library = SkillLibrary(store)
    names = ["last", "first", "add", "square", "is_odd", "is_even", "sort_list", "last_n"]
    for name in names:
        library.admit(skill(name))
    top = library.retrieve(BUNDLED["last"], "code")
    assert len(top) == 5 and top[0].name == "last" and "last_n" in [s.name for s in top[:3]]
    assert library.retrieve(BUNDLED["last"], "web") == [] and library.retrieve(BUNDLED["last"], "code", k=0) == []
    library.admit(skill("last", REDUCE, ITERABLES))
    offered = [s.id for s in library.retrieve(BUNDLED["last"], "code", k=10)]
    assert "skill:code:last:v2" in offered and "skill:code:last:v1" not in offered  # one version of a name
    library.set_status("skill:code:last:v2", "retired")  # the version before comes back
    assert [s.id for s in library.retrieve(BUNDLED["last"], "code", k=1)] == ["skill:code:last:v1"]
    library.set_status("last", "retired")  # the latest is v2 (retired already): by id it is v1
    library.set_status("skill:code:last:v1", "retired")
    assert "last" not in [s.name for s in SkillLibrary(store).retrieve(BUNDLED["last"], "code")]


def test_uses_are_counted_and_a_failing_skill_is_retired(store: TrajectoryStore) -> None:
    library = SkillLibrary(store, min_uses=4, retire_below=0.3)
    s = library.admit(skill("square")).skill
    [after] = library.record_use([s.id, s.id], success=True)  # one episode counts once
    assert (after.uses, after.successes, after.success_rate) == (1, 1, 1.0)
    library.record_use([s.id], success=False)
    library.record_use([s.id], success=False)
    assert SkillLibrary(store).get("square").status == "active"  # type: ignore[union-attr]  # 1/3: too few uses yet
    [gone] = library.record_use([s.id], success=False)  # 1/4 < 0.3 with min_uses uses
    assert gone.status == "retired" and (gone.uses, gone.successes) == (4, 1)
    assert SkillLibrary(store).retrieve(BUNDLED["square"], "code") == []
    assert library.record_use(["skill:code:nope:v1"], success=True) == []


def test_export_and_read_back(store: TrajectoryStore, tmp_path: Path) -> None:
    library = SkillLibrary(store)
    for name in ("add", "square"):
        library.admit(skill(name))
    path = tmp_path / "skills.jsonl"
    assert library.export_jsonl(path) == 2
    assert read_skills(path) == library.all()
    path.write_text(path.read_text() + '{"name": "x"}\n')
    with pytest.raises(TaskDataError, match=r"skills.jsonl:3: not a skill"):
        read_skills(path)
