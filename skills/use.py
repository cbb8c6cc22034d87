"""Skills in episodes: the solver's prompt section, the environment that runs them, learning new ones.

- :func:`skills_prompt` lists the retrieved skills for the solver's system prompt: code
  skills as source the solver may call by name, web skills as ``skill(name, ...)`` actions.
- :class:`SkillEnvironment` wraps an episode's environment: a code submission that calls a
  skill gets the skill's source put before it (:func:`skills.code.link`); a web answer
  ``skill(name, ...)`` runs the macro (:func:`skills.web.run_macro`). Either way the step's
  observation records ``data["skills_used"]``, so :func:`skills_used` reads from a trajectory
  which skills it used, for :meth:`~skills.library.SkillLibrary.record_use`.
- :func:`learn` turns a successful episode into a candidate, verifies it (sandbox tests for
  code, replays for web) and admits it; a candidate that fails verification never enters.

Example:
    >>> env = SkillEnvironment(CodeEnvironment(), library.retrieve(task, "code"))  # doctest: +SKIP
    >>> (await learn(trajectory, library)).status  # doctest: +SKIP
    'added'
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from autodidact.types import Action, Observation, Record, Task, Trajectory
from environments.base import Environment, StepResult
from environments.sandbox.base import Sandbox
from memory.base import TrajectoryStore
from skills import code, web
from skills.library import Skill, SkillLibrary

_SKILL_CALL = re.compile(r"\bskill\s*\(")


def skills_prompt(skills: Sequence[Skill], env_id: str) -> str:
    """The section of the solver's system prompt that offers ``skills`` ("" for none)."""
    skills = [s for s in skills if s.env == env_id]
    if not skills:
        return ""
    if env_id == "code":
        sources = "\n\n".join(s.source.strip() for s in skills)
        return (
            "Verified functions from earlier tasks are already defined; call any that helps by its name "
            f"(do not copy it):\n```python\n{sources}\n```"
        )
    listed = "\n".join(
        f"- {s.signature()}: {s.description}\n  steps: {'; '.join(s.body().splitlines())}" for s in skills
    )
    return (
        "Skills (verified action sequences from earlier tasks). Run one as a single action: skill(name) reads "
        f'its parameters from the goal; skill(name, "value", ...) gives them.\n{listed}'
    )


def parse_skill_call(text: str) -> tuple[str, list[str]] | str | None:
    """``skill(name, "a", ...)`` in ``text`` as (name, args); why it does not parse; None without one."""
    calls = list(_SKILL_CALL.finditer(text))
    if not calls:
        return None
    m = calls[-1]
    depth, end = 0, None
    for i in range(m.end() - 1, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            end = i + 1
            break
    try:
        call = ast.parse(text[m.start() : end or len(text)].strip(), mode="eval").body
        assert isinstance(call, ast.Call) and call.args
        first = call.args[0]
        name = first.id if isinstance(first, ast.Name) else ast.literal_eval(first)
        args = [str(ast.literal_eval(a)) for a in call.args[1:]]
    except (SyntaxError, ValueError, AssertionError):
        return 'a skill call looks like skill(name) or skill(name, "value", ...)'
    return str(name), args


class SkillEnvironment:
    """``env`` with ``skills`` usable in its episodes (see the module docstring); the rest passes through."""

    def __init__(self, env: Environment, skills: Sequence[Skill]) -> None:
        self.env = env
        self.id = env.id
        self.skills = [s for s in skills if s.env == env.id]
        self._obs: Observation | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    async def reset(self, task: Task, *, seed: int | None = None) -> Observation:
        self._obs = await self.env.reset(task, seed=seed)
        return self._obs

    async def step(self, action: Action) -> StepResult:
        result = await self._step(action)
        self._obs = result.observation
        return result

    async def _step(self, action: Action) -> StepResult:
        if self.skills and self.id == "code" and action.text:
            program, used = code.link(action.text, self.skills)
            if used:
                return _used(await self.env.step(action.model_copy(update={"text": program})), used)
        if self.skills and self.id == "web" and action.kind == "text" and self._obs is not None:
            call = parse_skill_call(action.text)
            if isinstance(call, str):
                return _refused(self._obs, call)
            if call is not None:
                name, args = call
                skill = next((s for s in self.skills if s.name == name), None)
                if skill is None:
                    known = ", ".join(s.name for s in self.skills)
                    return _refused(self._obs, f"no skill {name!r}; the skills are: {known}")
                return await web.run_macro(self.env, skill, self._obs, args)
        return await self.env.step(action)

    async def close(self) -> None:
        await self.env.close()


def _used(result: StepResult, used: list[str]) -> StepResult:
    obs = result.observation
    obs = obs.model_copy(update={"data": {**obs.data, "skills_used": used}})
    return StepResult(obs, result.reward, result.terminated, result.truncated, {**result.info, "skills": used})


def _refused(obs: Observation, why: str) -> StepResult:
    shown = obs.model_copy(update={"text": f"Error: {why}\n\n{obs.text}"})
    return StepResult(shown, 0.0, terminated=False, truncated=False, info={"kind": "skill", "error": why})


def skills_used(t: Trajectory) -> list[str]:
    """The ids of the skills ``t``'s steps used, first use first."""
    used: dict[str, None] = {}
    for s in t.steps:
        if s.observation is not None:
            used.update(dict.fromkeys(s.observation.data.get("skills_used") or ()))
    return list(used)


class Learned(Record):
    """What :func:`learn` made of an episode."""

    status: Literal["added", "duplicate", "rejected", "none"]
    skill: Skill | None = None
    reason: str | None = None


async def verify(skill: Skill, *, sandbox: Sandbox | None = None, web_env: Environment | None = None) -> str | None:
    """Why ``skill`` is not verified, or None: its tests in ``sandbox`` (code), its replays in ``web_env`` (web)."""
    if skill.env == "code":
        if sandbox is None:
            from environments.sandbox.process import ProcessSandbox

            sandbox = ProcessSandbox()
        return await code.verify(skill, sandbox)
    async with _web(web_env) as env:
        return await web.verify(skill, env)


@contextlib.asynccontextmanager
async def _web(env: Environment | None) -> AsyncIterator[Environment]:
    """``env``, or a fresh web environment closed afterwards."""
    if env is not None:
        yield env
        return
    from environments.web.env import WebEnvironment

    fresh = WebEnvironment()
    try:
        yield fresh
    finally:
        await fresh.close()


async def learn(
    t: Trajectory, library: SkillLibrary, *, sandbox: Sandbox | None = None, web_env: Environment | None = None
) -> Learned:
    """Extract a candidate skill from ``t``, verify it, and admit it (see the module docstring).

    Args:
        t: an episode (anything but a success gives ``none``).
        library: where an admitted skill goes.
        sandbox: where code skills are tested (default: the process sandbox).
        web_env: where web skills are replayed (default: a fresh WebEnvironment, closed after).
    """
    if not t.success or t.env_id not in ("code", "web"):
        return Learned(status="none", reason="only successful code and web episodes teach skills")
    async with _web(web_env) if t.env_id == "web" else contextlib.nullcontext(None) as env:
        candidate = code.extract(t) if env is None else await web.extract(t, env)
        if candidate is None:
            return Learned(status="none", reason="no reusable function or replayable action sequence in the episode")
        vector = await asyncio.to_thread(library.embed, candidate)
        same = await asyncio.to_thread(library.duplicate_of, candidate, vector)
        if same is not None:
            return Learned(status="duplicate", skill=same.skill, reason=f"similarity {same.similarity:.2f}")
        why = await verify(candidate, sandbox=sandbox, web_env=env)
    if why is not None:
        return Learned(status="rejected", skill=candidate, reason=why)
    admitted = await asyncio.to_thread(library.admit, candidate, vector)
    return Learned(status=admitted.status, skill=admitted.skill)


async def import_skills(skills: Sequence[Skill], store: TrajectoryStore) -> list[str]:
    """Verify each of ``skills`` again and admit those that pass; per skill, what happened."""
    library = SkillLibrary(store)
    out = []
    async with _web(None) as web_env:
        for skill in skills:
            fresh = skill.model_copy(update={"status": "active"})
            why = await verify(fresh, web_env=web_env)
            if why is not None:
                out.append(f"rejected: {why}")
                continue
            admitted = await asyncio.to_thread(library.admit, fresh)
            out.append(f"{admitted.status} as {admitted.skill.id}")
    return out
