"""The skill library: verified, reusable skills kept in the store and retrieved by similarity.

A :class:`Skill` is either a Python function (code tasks: self-contained source, with the
tests it passed) or a parameterized action sequence (web tasks: steps whose element names
and typed text may be ``{p0}``-style parameters). Skills come from successful episodes
(:mod:`skills.code`, :mod:`skills.web`) and are admitted only once verified;
:class:`SkillLibrary` keeps them in the store's ``memory`` table (kind ``"skill"``, beside
the trajectories and reflections, SQLite or PostgreSQL) with an embedding of their
description and body, and:

- **deduplicates**: a candidate whose nearest skill of the same environment is at least
  ``duplicate_at`` similar is not added (that skill is returned instead);
- **versions**: a new skill with the name of another becomes its next version, and only the
  latest active version of a name is retrieved (retiring it brings back the one before);
- **retrieves** the ``k`` nearest active skills of an environment for a task's prompt;
- **keeps score**: :meth:`SkillLibrary.record_use` counts each episode that used a skill and
  whether it succeeded; once a skill has ``min_uses`` uses and its success rate is below
  ``retire_below`` it is retired (kept, never retrieved again).

Usage counts are updated under a lock in this process; two processes updating the same skill
at once may lose one of the two updates.

Example:
    >>> library = SkillLibrary(store)  # doctest: +SKIP
    >>> library.admit(skill).status  # doctest: +SKIP
    'added'
    >>> [s.name for s in library.retrieve(task, "code")]  # doctest: +SKIP
    ['last', 'first']
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from autodidact.errors import TaskDataError
from autodidact.types import Record, Task
from memory.base import MemoryEntry, TrajectoryStore
from memory.embed import Embedder, default_embedder
from memory.vectors import VectorIndex

KIND = "skill"
Status = Literal["active", "retired"]


class Skill(Record):
    """A verified skill, where it came from and how it has done since."""

    name: str = Field(description="a Python identifier: the function's name, or the web macro's")
    version: int = 1
    env: Literal["code", "web"]
    description: str
    source: str = Field("", description="code: the function and what it needs, self-contained")
    tests: tuple[str, ...] = Field((), description="code: assert statements derived from the episode")
    params: tuple[str, ...] = Field((), description="web: parameter names, used as {name} in steps")
    steps: tuple[dict[str, Any], ...] = Field((), description="web: actions with a target and templated values")
    pattern: str = Field("", description="web: a regex of goals of the source goal's form, a group per parameter")
    task: Task = Field(description="the task it was learned on (verification replays it)")
    seed: int | None = None
    trajectory_id: str | None = None
    run_id: str | None = None
    model: str = ""
    uses: int = 0
    successes: int = 0
    status: Status = "active"
    created_at: float = Field(default_factory=time.time)

    @property
    def id(self) -> str:
        return f"skill:{self.env}:{self.name}:v{self.version}"

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.uses if self.uses else None

    def signature(self) -> str:
        """How the solver calls it: ``name(p0, p1)`` for a web macro, the ``def`` line for code."""
        if self.env == "web":
            return f"{self.name}({', '.join(self.params)})"
        for line in self.source.splitlines():
            if line.startswith(f"def {self.name}(") or line.startswith(f"async def {self.name}("):
                return line.rstrip(":").removeprefix("async ").removeprefix("def ")
        return self.name

    def body(self) -> str:
        """What is embedded and shown besides the description: the code, or the steps."""
        if self.env == "code":
            return self.source
        return "\n".join(_step_text(s) for s in self.steps)


def _step_text(step: dict[str, Any]) -> str:
    args = [repr(v) for k, v in step.items() if k not in ("kind", "role", "nth")]
    target = f"{step['role']} {step.get('name', '')!r}".strip() if "role" in step else ""
    return f"{step['kind']}({', '.join(([target] if target else []) + args)})"


class Admission(Record):
    """What :meth:`SkillLibrary.admit` did with a candidate."""

    status: Literal["added", "duplicate"]
    skill: Skill
    similarity: float | None = None


class SkillLibrary:
    """Skills in ``store`` (see the module docstring).

    Args:
        store: where skills are kept (their ``memory`` table).
        embedder: embeds descriptions and bodies (default: all-MiniLM-L6-v2 when installed).
        duplicate_at: cosine similarity at or above which a candidate repeats a skill.
        min_uses: uses before a skill can be retired.
        retire_below: success rate under which a skill with ``min_uses`` uses is retired.
    """

    def __init__(
        self,
        store: TrajectoryStore,
        embedder: Embedder | None = None,
        *,
        duplicate_at: float = 0.95,
        min_uses: int = 4,
        retire_below: float = 0.3,
    ) -> None:
        self.store = store
        self.embedder = embedder or default_embedder()
        self.duplicate_at = duplicate_at
        self.min_uses = min_uses
        self.retire_below = retire_below
        self.index = VectorIndex(store, KIND, self.embedder)
        self._lock = threading.RLock()
        self._skills: dict[str, Skill] = {}  # the index's skills, as of their last read here
        self._synced = 0  # index positions read into _skills

    def _sync(self, max_age_s: float = 0.0) -> None:
        """Read the skills added to the store since the last call (by any process)."""
        with self._lock:
            self.index.refresh(max_age_s=max_age_s)
            new = self.index.ids(self._synced)
            if new:
                self._skills.update((e.id, Skill.model_validate(e.data)) for e in self.store.get_memory(new))
                self._synced += len(new)

    def _read(self, skill_ids: Sequence[str]) -> list[Skill]:
        """These skills as stored now (another process may have counted uses or retired them)."""
        fresh = [Skill.model_validate(e.data) for e in self.store.get_memory(list(skill_ids))]
        with self._lock:
            self._skills.update((s.id, s) for s in fresh)
        return fresh

    def all(self) -> list[Skill]:
        """Every skill in the store, every version, retired ones too: by environment, name, version."""
        skills = [Skill.model_validate(e.data) for e in self.store.memory(KIND)]
        return sorted(skills, key=lambda s: (s.env, s.name, s.version))

    def get(self, ref: str) -> Skill | None:
        """A skill by id (``skill:code:last:v2``), or the latest version of a name (``last``)."""
        found = self._read([ref])
        if found:
            return found[0]
        named = [Skill.model_validate(e.data) for e in self.store.memory(KIND, key=ref)]
        return max(named, key=lambda s: s.version) if named else None

    def embed(self, skill: Skill) -> np.ndarray:
        """The vector a skill is found by: its description and body."""
        return self.embedder.embed([f"{skill.description}\n{skill.body()}"])[0]

    def duplicate_of(self, candidate: Skill, vector: np.ndarray | None = None) -> Admission | None:
        """The skill of ``candidate``'s environment that it repeats (similarity >= ``duplicate_at``), if any."""
        vector = self.embed(candidate) if vector is None else vector
        with self._lock:
            self._sync()
            for entry_id, score in self.index.search(vector, 5):
                known = self._skills.get(entry_id)
                if known is not None and known.env == candidate.env and score >= self.duplicate_at:
                    return Admission(status="duplicate", skill=known, similarity=score)
        return None

    def admit(self, candidate: Skill, vector: np.ndarray | None = None) -> Admission:
        """Add a verified ``candidate``, unless it repeats a skill; a taken name gets the next version."""
        vector = self.embed(candidate) if vector is None else vector
        with self._lock:
            same = self.duplicate_of(candidate, vector)
            if same is not None:
                return same
            named = [Skill.model_validate(e.data) for e in self.store.memory(KIND, key=candidate.name)]
            versions = [s.version for s in named if s.env == candidate.env]
            skill = candidate.model_copy(update={"version": max(versions, default=0) + 1, "uses": 0, "successes": 0})
            self._write(skill, vector.tobytes())
            self._sync()
            return Admission(status="added", skill=skill)

    def _write(self, skill: Skill, vector: bytes = b"") -> None:
        """Store ``skill`` (a known id keeps its vector and gets the new data)."""
        entry = MemoryEntry(
            id=skill.id, kind=KIND, key=skill.name, embedder=self.embedder.name, data=skill.model_dump(mode="json")
        )
        self.store.put_memory(entry, vector)
        self._skills[skill.id] = skill

    def retrieve(self, task: Task | str, env: str, k: int = 5) -> list[Skill]:
        """The ``k`` active skills of ``env`` nearest to the task's prompt (the latest active version of each name)."""
        if k <= 0:
            return []
        self._sync(self.index.max_age_s)
        with self._lock:
            latest: dict[str, Skill] = {}
            for s in self._skills.values():
                if (
                    s.env == env
                    and s.status == "active"
                    and (s.name not in latest or s.version > latest[s.name].version)
                ):
                    latest[s.name] = s
            usable = {s.id for s in latest.values()}
        if not usable:
            return []
        query = self.embedder.embed([task.prompt if isinstance(task, Task) else task])[0]
        hits = self.index.search(query, k + len(self.index) - len(usable))  # room for the unusable ones
        chosen = [i for i, _ in hits if i in usable][:k]
        return [s for s in self._read(chosen) if s.status == "active"]  # as stored now: retired elsewhere?

    def record_use(self, skill_ids: Iterable[str], success: bool) -> list[Skill]:
        """Count one episode that used each skill; retire those whose success rate fell. The updated skills."""
        out = []
        with self._lock:
            for s in self._read(list(dict.fromkeys(skill_ids))):
                uses, successes = s.uses + 1, s.successes + int(success)
                falls = uses >= self.min_uses and successes / uses < self.retire_below
                status: Status = "retired" if falls else s.status
                s = s.model_copy(update={"uses": uses, "successes": successes, "status": status})
                self._write(s)
                out.append(s)
        return out

    def set_status(self, ref: str, status: Status) -> Skill:
        """Retire a skill, or bring a retired one back."""
        skill = self.get(ref)
        if skill is None:
            raise KeyError(f"no skill {ref!r}: `autodidact skills list` shows them")
        with self._lock:
            skill = skill.model_copy(update={"status": status})
            self._write(skill)
        return skill

    def export_jsonl(self, path: str | Path, skills: Sequence[Skill] | None = None) -> int:
        """Write skills (default: all) as JSON lines; how many."""
        chosen = self.all() if skills is None else list(skills)
        with Path(path).open("w", encoding="utf-8") as f:
            for s in chosen:
                f.write(s.model_dump_json() + "\n")
        return len(chosen)


def read_skills(path: str | Path) -> list[Skill]:
    """Skills from a JSON-lines file (as :meth:`SkillLibrary.export_jsonl` writes); a bad line is a TaskDataError."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Skill.model_validate(json.loads(line)))
        except ValueError as e:
            raise TaskDataError(
                f"{path}:{n}: not a skill ({str(e).splitlines()[0]}); export one to see the format"
            ) from e
    return out
