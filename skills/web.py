"""Web skills: action sequences from solved web tasks, parameterized, verified by replay.

:func:`extract` replays a successful web episode's actions in a fresh environment (same task,
same seed), noting for each action its target element by role, accessible name and position
among the elements of that role and name (refs change from page to page; these do not; a
drag's drop target is kept the same way, as ``target_ref: {role, name, nth}``), and
turning every typed text, chosen option and element name that appears in the goal into a
parameter (``{p0}``, ``{p1}``…). The goal with those values cut out becomes the skill's
``pattern``: a later goal of the same form gives the parameters' new values.

:func:`verify` runs the skill with :func:`run_macro` on the source task and seed (parameters
from the goal) and on another seed of the same task (parameters read from that seed's goal);
both must succeed. :func:`run_macro` is also how an episode runs a skill: each step is
resolved against the page as it is then, and the first step that cannot be resolved or that
the page refuses stops the macro with an observation saying which; a macro has at most
:data:`MAX_STEPS` steps and cannot loop.

Example:
    >>> candidate = await extract(trajectory, WebEnvironment())  # doctest: +SKIP
    >>> candidate.params, candidate.steps[0]  # doctest: +SKIP
    (('p0', 'p1'), {'kind': 'type', 'role': 'textbox', 'name': '', 'nth': 0, 'text': '{p0}', 'submit': False})
    >>> await verify(candidate, WebEnvironment())  # doctest: +SKIP
    None
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from autodidact.types import Action, Observation, Trajectory
from environments.base import Environment, StepResult
from environments.web.actions import SIGNATURES, ActionError, check_action, parse_action
from environments.web.observe import elements
from skills.library import Skill

MAX_STEPS = 20
VALUES = ("text", "option", "key", "url")  # action arguments that may become parameters
TARGET = "target_ref"  # a drag's drop target, kept as {"role", "name", "nth"} like the step's own element
_PARAM = re.compile(r"\{(p\d+)\}")


def _name(task_id: str, payload: Mapping[str, Any]) -> str:
    raw = str(payload.get("name") or task_id.rsplit("/", 1)[-1])
    name = re.sub(r"\W+", "_", raw).strip("_").lower() or "web_skill"
    return name if name[0].isalpha() else f"skill_{name}"


def _words(value: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(value)}(?!\w)")


def _target(obs: Observation, ref: str) -> dict[str, Any] | None:
    """``ref``'s element as role, name and position among the elements with that role and name."""
    found = elements(obs)
    for ref_, role, name, _ in found:
        if ref_ == ref:
            same = [r for r, ro, n, _ in found if ro == role and n == name]
            return {"role": role, "name": name, "nth": same.index(ref)}
    return None


async def extract(t: Trajectory, env: Environment) -> Skill | None:
    """A candidate skill from successful web episode ``t``, replayed in ``env``; None when the
    episode did not succeed, has no actions, or does not replay."""
    actions = [s.action for s in t.steps if s.action is not None and s.observation is not None]
    if not t.success or not actions or len(actions) > MAX_STEPS:
        return None
    seed = t.task.payload.get("seed")
    obs = await env.reset(t.task, seed=seed)
    goal = str(obs.data.get("goal") or "")
    steps: list[dict[str, Any]] = []
    values: dict[str, str] = {}  # a value from the goal -> its parameter
    result: StepResult | None = None
    for action in actions:
        try:
            action = check_action(action) if action.kind in SIGNATURES else parse_action(action.text)
        except ActionError:
            continue  # a turn the environment refused: no step of the skill
        step: dict[str, Any] = {"kind": action.kind}
        for key, value in action.args.items():
            if key in ("ref", TARGET):
                target = _target(obs, str(value))
                if target is None:
                    return None  # a name typed by the model, not a ref on the page: not replayable as is
                if key == "ref":
                    step.update(target)
                else:
                    step[key] = target
            else:
                step[key] = value
        result = await env.step(action)
        if result.info.get("error"):
            continue
        for where in (step, step.get(TARGET) or {}):
            for key in ("name", *VALUES):
                value = where.get(key)
                if isinstance(value, str) and value.strip() and _words(value).search(goal):
                    where[key] = "{" + values.setdefault(value, f"p{len(values)}") + "}"
        steps.append(step)
        obs = result.observation
        if result.terminated:
            break
    else:
        return None  # the replay did not end the episode
    if result is None or result.reward < 1.0:
        return None
    return Skill(
        name=_name(t.task.id, t.task.payload),
        env="web",
        description=f"{t.task.prompt.strip()} For example: {goal}".strip(),
        params=tuple(values.values()),
        steps=tuple(steps),
        pattern=goal_pattern(goal, values),
        task=t.task,
        seed=seed,
        trajectory_id=t.id,
        run_id=t.run_id,
        model=t.policy.model,
    )


def goal_pattern(goal: str, values: Mapping[str, str]) -> str:
    """A regex matching goals of ``goal``'s form, with a named group per parameter."""
    spans: list[tuple[int, int, str]] = []
    for value, param in sorted(values.items(), key=lambda kv: -len(kv[0])):
        for m in _words(value).finditer(goal):
            if all(m.end() <= a or m.start() >= b for a, b, _ in spans):
                spans.append((m.start(), m.end(), param))
    out, at, seen = [], 0, set()
    for a, b, param in sorted(spans):
        out.append(re.escape(goal[at:a]))
        out.append(f"(?P={param})" if param in seen else f"(?P<{param}>.+?)")
        seen.add(param)
        at = b
    out.append(re.escape(goal[at:]))
    return "^" + "".join(out) + "$"


def bind(skill: Skill, goal: str, args: Sequence[str] = ()) -> dict[str, str] | str:
    """The parameters' values: ``args`` in order, the rest read from ``goal``; or why they cannot be had."""
    if len(args) > len(skill.params):
        return f"skill {skill.name} takes {len(skill.params)} argument(s): {skill.signature()}"
    bound = dict(zip(skill.params, (str(a) for a in args), strict=False))
    if len(bound) < len(skill.params):
        m = re.match(skill.pattern, goal) if skill.pattern else None
        if m is None:
            missing = ", ".join(p for p in skill.params if p not in bound)
            return f"skill {skill.name} needs {missing}: this goal is not of its form; pass them: {skill.signature()}"
        bound = {**m.groupdict(), **bound}
    return bound


def _fill(value: Any, bound: Mapping[str, str]) -> Any:
    return _PARAM.sub(lambda m: bound.get(m.group(1), m.group(0)), value) if isinstance(value, str) else value


async def run_macro(env: Environment, skill: Skill, obs: Observation, args: Sequence[str] = ()) -> StepResult:
    """Run ``skill``'s steps in ``env`` from the page ``obs``; the last step's result, its
    observation saying how far the skill got (and ``data["skills_used"] = [skill.id]``)."""
    bound = bind(skill, str(obs.data.get("goal") or ""), args)
    result: StepResult | None = None
    done, why = 0, bound if isinstance(bound, str) else None
    for step in skill.steps[:MAX_STEPS] if why is None else ():
        assert isinstance(bound, dict)
        action = _action(step, bound, obs)
        if isinstance(action, str):
            why = action
            break
        result = await env.step(action)
        obs = result.observation
        if result.info.get("error"):
            why = str(result.info["error"])
            break
        done += 1
        if result.terminated or result.truncated:
            break
    head = f"Skill {skill.name} ran {done} of {len(skill.steps)} steps" + (f"; stopped: {why}" if why else ".")
    obs = obs.model_copy(update={"text": f"{head}\n\n{obs.text}", "data": {**obs.data, "skills_used": [skill.id]}})
    if result is None:
        return StepResult(obs, 0.0, terminated=False, truncated=False, info={"kind": "skill", "error": why})
    info = {**result.info, "kind": "skill", "skill": skill.id} | ({"error": why} if why else {})
    return StepResult(obs, result.reward, terminated=result.terminated, truncated=result.truncated, info=info)


def _action(step: Mapping[str, Any], bound: Mapping[str, str], obs: Observation) -> Action | str:
    """The typed action for ``step`` on page ``obs``, or why there is none."""
    args = {k: _fill(v, bound) for k, v in step.items() if k not in ("kind", "role", "name", "nth", TARGET)}
    for key, where in (("ref", step if "role" in step else None), (TARGET, step.get(TARGET))):
        if where:
            name = _fill(where.get("name", ""), bound)
            refs = [r for r, role, n, _ in elements(obs) if role == where["role"] and n == name]
            if not refs:
                return f"no {where['role']} named {name!r} on this page"
            args[key] = refs[min(int(where.get("nth", 0)), len(refs) - 1)]
    try:
        return check_action(Action(kind=str(step["kind"]), args=args))
    except ActionError as e:
        return str(e)


async def verify(skill: Skill, env: Environment) -> str | None:
    """Why ``skill`` is not verified (None when it is): it must solve its source task on its seed
    and on another seed, parameters read from each goal."""
    seed = skill.seed if skill.seed is not None else 0
    for s in (skill.seed, seed + 1):
        obs = await env.reset(skill.task, seed=s)
        result = await run_macro(env, skill, obs)
        if not (result.terminated and result.reward >= 1.0):
            return f"replay on seed {s}: {result.observation.text.splitlines()[0]} (reward {result.reward:g})"
    return None
