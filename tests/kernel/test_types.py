"""Records round-trip exactly, are frozen and carry their schema version."""

from __future__ import annotations

import pydantic
import pytest

from autodidact.types import (
    SCHEMA_VERSION,
    Action,
    Message,
    Observation,
    PolicyRef,
    SamplingParams,
    Step,
    Task,
    Trajectory,
)


def make_trajectory() -> Trajectory:
    task = Task(
        id="bundled/last", suite="bundled", prompt="p", split="test", payload={"entry_point": "last", "test": "t"}
    )
    steps = (
        Step(
            index=0,
            role="solver",
            messages=(Message(role="system", content="s"), Message(role="user", content="u")),
            completion="```python\nx\n```",
            token_ids=(1, 2, 3),
            logprobs=(-0.5, -0.25, -1.0e-9),
            action=Action(kind="code", text="x", args={"k": [1, 2]}),
            observation=Observation(text="fail", data={"exit_code": 1}),
            truncated=True,
            latency_s=0.25,
            error="parse: none",
        ),
    )
    return Trajectory(
        run_id="r1",
        task=task,
        env_id="code",
        policy=PolicyRef(model="embedded", sampling=SamplingParams(stop=("x",))),
        steps=steps,
        reward=0.0,
    )


def test_trajectory_round_trips_through_json_and_dict() -> None:
    t = make_trajectory()
    assert Trajectory.model_validate_json(t.model_dump_json()) == t
    assert Trajectory.model_validate(t.model_dump(mode="json")) == t
    assert t.v == SCHEMA_VERSION and t.task.v == SCHEMA_VERSION
    assert len(t.id) == 32 and t.id != make_trajectory().id


def test_records_are_frozen_and_reject_unknown_fields() -> None:
    t = make_trajectory()
    with pytest.raises(pydantic.ValidationError):
        t.reward = 1.0  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        Task(id="a", suite="s", prompt="p", colour="red")  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        SamplingParams(temperature=-1)
