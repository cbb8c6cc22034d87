"""Scripted reference policies for web tasks, acting only through the observation and action API.

``web:reference`` reads each observation's accessibility tree (the refs shown in brackets)
and returns one typed action, exactly what a model would have to produce. For a bundled
site it asks the site's ``reference_action(task, observation)`` (which may read the task's
payload: the point is to prove tasks solvable and checkers right). For MiniWoB++ it solves
the tasks in :data:`MINIWOB` from the goal text; other MiniWoB++ tasks get ``stop()``.

Example:
    >>> outcomes = await evaluate("web", load_suite("shop", split="test"), ReferencePolicy())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from autodidact.types import Action, Observation, Task
from environments.web.actions import make_action
from environments.web.env import site
from environments.web.observe import elements, find


def _quoted(goal: str) -> list[str]:
    return re.findall(r'"([^"]*)"', goal)


def _click_button(obs: Observation, goal: str) -> Action:
    m = re.search(r'Click on the "([^"]*)" button', goal)
    ref = find(obs, "button", m.group(1) if m else None)
    return make_action("click", ref) if ref else make_action("stop")


def _enter_text(obs: Observation, goal: str) -> Action:
    box = find(obs, "textbox")
    if box is None:
        return make_action("stop")
    if not any(r == box and 'value="' in rest for r, _, _, rest in elements(obs, "textbox")):
        return make_action("type", box, _quoted(goal)[0])
    return make_action("click", find(obs, "button", "Submit"))


def _login_user(obs: Observation, goal: str) -> Action:
    user, password = _quoted(goal)[:2]
    boxes = [(ref, rest) for ref, _, _, rest in elements(obs, "textbox")]
    for (ref, rest), value in zip(boxes, (user, password), strict=False):
        if f"value={json.dumps(value, ensure_ascii=False)}" not in rest:
            return make_action("type", ref, value)
    return make_action("click", find(obs, "button", "Login"))


def _click_checkboxes(obs: Observation, goal: str) -> Action:
    m = re.search(r"Select (.*?) and click Submit", goal)
    wanted = {w.strip() for w in m.group(1).split(",")} if m and m.group(1) != "nothing" else set()
    for ref, _, name, rest in elements(obs, "checkbox"):
        if (name in wanted) != ("checked" in rest.split()):
            return make_action("check", ref, checked=name in wanted)
    return make_action("click", find(obs, "button", "Submit"))


def _click_test(obs: Observation, goal: str) -> Action:
    return make_action("click", find(obs, "button"))


MINIWOB: dict[str, Callable[[Observation, str], Action]] = {
    "click-test": _click_test,
    "click-button": _click_button,
    "enter-text": _enter_text,
    "login-user": _login_user,
    "click-checkboxes": _click_checkboxes,
}


class ReferencePolicy:
    """The web reference policy (see the module docstring)."""

    name = "reference"
    expect_success = True

    async def act(self, task: Task, observation: Observation) -> Action:
        payload = task.payload
        if payload.get("kind") == "site":
            return site(str(payload["site"])).reference_action(task, observation)  # type: ignore[no-any-return]
        solver = MINIWOB.get(str(payload.get("name")))
        if solver is None:
            return make_action("stop")
        return solver(observation, str(observation.data.get("goal", "")))


__all__ = ["MINIWOB", "ReferencePolicy", "elements", "find"]
