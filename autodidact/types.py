"""The shared vocabulary: tasks, actions, observations, steps and trajectories.

Every record is a frozen pydantic v2 model. Records that are persisted carry a schema
version ``v`` so stores and datasets written by an older release can be recognised.
Serialize with ``model_dump()`` / ``model_dump_json()`` and read back with
``model_validate()`` / ``model_validate_json()``.

Example:
    >>> t = Task(id="bundled/last", suite="bundled", prompt="Return the last element.")
    >>> Task.model_validate_json(t.model_dump_json()) == t
    True
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Split = Literal["train", "val", "test", "hard"]  # see environments.tasks
Role = Literal["system", "user", "assistant", "tool"]


class Record(BaseModel):
    """Base of every record: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")


def new_id() -> str:
    """A fresh random id (32 hex characters)."""
    return uuid.uuid4().hex


class Message(Record):
    """One chat message as sent to a model."""

    role: Role
    content: str


class SamplingParams(Record):
    """How a model samples. ``temperature == 0`` means greedy decoding."""

    temperature: float = Field(0.0, ge=0.0, description="0 is greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1, description="new tokens at most")
    stop: tuple[str, ...] = Field((), description="stop generating after any of these strings")
    seed: int | None = None
    logprobs: bool = Field(True, description="return the sampled tokens' logprobs when the backend can")


class Completion(Record):
    """What a model returned for one conversation."""

    text: str
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None
    finish_reason: Literal["stop", "length", "error"] = "stop"
    prompt_tokens: int | None = None
    model: str = ""
    error: str | None = None


class Task(Record):
    """A unit of work from a task suite.

    ``payload`` holds what the environment needs and the agent must not see (hidden tests,
    an entry point, a checker's parameters); ``prompt`` is what the agent is shown.
    """

    v: int = SCHEMA_VERSION
    id: str
    suite: str
    prompt: str
    split: Split = "train"
    payload: dict[str, Any] = Field(default_factory=dict)


class Action(Record):
    """What an agent does in an environment: a kind (``code``, ``click``…), its text and args."""

    kind: str
    text: str = ""
    args: dict[str, Any] = Field(default_factory=dict)


class Observation(Record):
    """What an environment shows after reset or a step. ``data`` holds structured extras."""

    text: str
    data: dict[str, Any] = Field(default_factory=dict)


class PolicyRef(Record):
    """Which policy acted: the model spec as given, its backend, adapter and sampling."""

    model: str
    backend: str = ""
    adapter: str | None = None
    sampling: SamplingParams = SamplingParams()


class Step(Record):
    """One model call and what followed from it.

    A step keeps the messages sent, the completion (with token ids and logprobs when the
    backend gives them), what was parsed from it (the action, or another role's typed output
    as a dict), the environment's observation and reward, and any error (a parse failure, a
    backend fault) so that nothing of an episode is lost.
    """

    index: int
    role: str
    messages: tuple[Message, ...] = ()
    completion: str | None = None
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None
    action: Action | None = None
    output: dict[str, Any] | None = None
    observation: Observation | None = None
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    latency_s: float = 0.0
    error: str | None = None


class Trajectory(Record):
    """A whole episode: the task, who acted, every step, and the outcome.

    ``parent_id`` and ``branch_step`` place the episode in a search tree (MCTS); a plain
    episode has neither. ``error`` is set when the episode failed for a reason other than
    a wrong answer (backend fault, timeout, crash); such an episode still counts as run.
    """

    v: int = SCHEMA_VERSION
    id: str = Field(default_factory=new_id)
    run_id: str
    task: Task
    env_id: str
    policy: PolicyRef
    steps: tuple[Step, ...] = ()
    reward: float = 0.0
    success: bool = False
    round: int = 0
    parent_id: str | None = None
    branch_step: int | None = None
    started_at: float = Field(default_factory=time.time)
    duration_s: float = 0.0
    error: str | None = None
