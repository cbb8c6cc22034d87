"""The environment interface (Gymnasium's semantics, async) and the step result.

``reset(task, seed=)`` starts an episode on a task and returns the first observation;
``step(action)`` returns a :class:`StepResult`. ``terminated`` means the episode reached a
terminal state of the task (solved, or failed for good); ``truncated`` means it was cut
short from outside (an attempt or step budget) — as in Gymnasium. ``close()`` releases what
the environment holds. Environments never import an LLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from autodidact.types import Action, Observation, Task


@dataclass(frozen=True)
class StepResult:
    """What one ``step`` returns."""

    observation: Observation
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Environment(Protocol):
    """Where actions happen."""

    id: str

    async def reset(self, task: Task, *, seed: int | None = None) -> Observation:
        """Start an episode on ``task``."""
        ...

    async def step(self, action: Action) -> StepResult:
        """Apply ``action``."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...
