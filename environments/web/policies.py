"""Scripted reference policies for web tasks, acting only through the observation and action API.

``web:reference`` reads each observation's accessibility tree (the refs shown in brackets)
and returns one typed action, exactly what a model would have to produce. For a bundled
site it asks the site's ``reference_action(task, observation)`` (which may read the task's
payload: the point is to prove tasks solvable and checkers right). For MiniWoB++ it runs the
policy in :data:`MINIWOB` (:mod:`environments.web.miniwob_policies`: 74 tasks, from the
observation alone); other MiniWoB++ tasks get ``stop()``.

Example:
    >>> outcomes = await evaluate("web", load_suite("shop", split="test"), ReferencePolicy())  # doctest: +SKIP
"""

from __future__ import annotations

from autodidact.types import Action, Observation, Task
from environments.web.actions import make_action
from environments.web.env import site
from environments.web.miniwob_policies import MINIWOB
from environments.web.observe import elements, find


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
