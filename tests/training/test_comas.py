"""CoMAS (training.comas): interaction rewards of solver, reviewer and refiner on hand-made
reflexion episodes, the roles' usefulness, and a REINFORCE update of one role on the embedded model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

from agents.llm.hf_local import TransformersChatModel
from agents.roles import solver
from agents.roles.refiner import Refiner
from agents.roles.reviewer import Reviewer
from autodidact.errors import ConfigError, NothingToTrainError
from autodidact.types import Action, Observation, PolicyRef, Step, Trajectory
from memory.base import TrajectoryStore
from training.checkpoints import WEIGHTS_DIR, checkpoint_dir
from training.comas import CoMASTrainConfig, interaction_rewards, prepare_comas, usefulness
from training.policy import run_job

from .test_data import FEEDBACK, TASK, G, W
from .test_sft import TINY

PROMPT = tuple(solver.initial_messages(Observation(text=TASK.prompt), "code"))


def attempt(i: int, role: str, answer: str, reward: float) -> Step:
    return Step(
        index=i,
        role=role,
        messages=PROMPT,
        completion=answer,
        action=Action(kind="submit", text=answer),
        observation=Observation(text=FEEDBACK[answer]),
        reward=reward,
        terminated=True,
    )


def review(i: int, score: float, answer: str = W) -> Step:
    msgs = Reviewer().messages(task=TASK.prompt, attempt=answer, feedback=FEEDBACK[answer])
    text = f"Score: {round(10 * score)}\nCritique: look at the index."
    return Step(
        index=i, role="reviewer", messages=tuple(msgs), completion=text, output={"score": score, "critique": "x"}
    )


def refine(i: int, answer: str | None, reward: float = 0.0) -> Step:
    msgs = tuple(Refiner().messages(task=TASK.prompt, attempt=W, feedback=FEEDBACK[W], critique="look at the index"))
    if answer is None:  # did not parse
        return Step(index=i, role="refiner", messages=msgs, completion="I give up.", error="parse: no code")
    return attempt(i, "refiner", answer, reward).model_copy(
        update={"messages": msgs, "completion": f"Fix it.\n{answer}"}
    )


def episode(id: str, steps: list[Step]) -> Trajectory:
    return Trajectory(
        id=id,
        run_id="r1",
        task=TASK,
        env_id="code",
        policy=PolicyRef(model="embedded"),
        steps=tuple(steps),
        reward=steps[-1].reward,
        success=steps[-1].reward >= 1.0,
    )


def episodes() -> list[Trajectory]:
    return [
        # wrong (1 of 3 tests), reviewed 0.8, refined into the right answer
        episode("fixed", [attempt(0, "solver", W, 1 / 3), review(1, 0.8), refine(2, G, 1.0)]),
        episode("right", [attempt(0, "solver", G, 1.0)]),
        # wrong, reviewed 0.1, a rewrite that did not parse
        episode("gave-up", [attempt(0, "solver", W, 1 / 3), review(1, 0.1), refine(2, None)]),
    ]


def test_interaction_rewards_against_hand_computed_cases() -> None:
    fixed, right, gave_up = episodes()
    got = [(r.role, round(r.reward, 4)) for r in interaction_rewards(fixed)]
    # solver: its attempt failed (0); reviewer: 1 - |0.8 - 0|; refiner: 1 - 0
    assert got == [("solver", 0.0), ("reviewer", 0.2), ("refiner", 1.0)]
    partial = [round(r.reward, 4) for r in interaction_rewards(fixed, partial_credit=True)]
    assert partial == [round(1 / 3, 4), round(1 - abs(0.8 - 1 / 3), 4), round(1 - 1 / 3, 4)]
    assert [(r.role, r.reward) for r in interaction_rewards(right)] == [("solver", 1.0)]
    # a rewrite that did not parse counts as a failed attempt: no gain over the failed one
    assert [(r.role, round(r.reward, 4)) for r in interaction_rewards(gave_up)] == [
        ("solver", 0.0),
        ("reviewer", 0.9),
        ("refiner", 0.0),
    ]
    partial = interaction_rewards(gave_up, partial_credit=True)[2]
    assert partial.reward == pytest.approx(-1 / 3)  # it threw away a third of the tests
    # a refiner's rewrite not acted on (web: a new trial starts from the first page) is not rewarded,
    # nor is a call that failed
    web = episode(
        "web", [attempt(0, "solver", W, 0.0), refine(1, W).model_copy(update={"action": None, "observation": None})]
    )
    failed = review(1, 0.5).model_copy(update={"error": "model: timeout"})
    assert [r.role for r in interaction_rewards(web)] == ["solver"]
    assert [r.role for r in interaction_rewards(episode("f", [attempt(0, "solver", W, 0.0), failed]))] == ["solver"]


def test_usefulness_of_each_role() -> None:
    u = usefulness(episodes())
    assert u["reviewer_agreement"] == 0.5 and u["reviews"] == 2  # 0.8 on a failure disagrees, 0.1 agrees
    assert u["refiner_wrong_to_right"] == 0.5 and u["refinements"] == 2
    assert u["solver_first_success"] == pytest.approx(1 / 3) and u["episodes"] == 3
    assert math.isnan(usefulness([episodes()[1]])["reviewer_agreement"])


def test_comas_refuses_an_unknown_role_and_episodes_without_one(store: TrajectoryStore) -> None:
    with pytest.raises(ConfigError, match="role must be one of solver, reviewer, refiner"):
        CoMASTrainConfig(role="judge", **TINY)
    store.append(episodes()[1])
    with pytest.raises(NothingToTrainError, match=r"no rewarded reviewer calls.*--graph reflexion"):
        prepare_comas(CoMASTrainConfig(run="r1", role="reviewer", **TINY), store)


@pytest.mark.slow
def test_a_comas_update_trains_the_reviewer_on_its_own_reward(
    store: TrajectoryStore, embedded_model: TransformersChatModel, _isolated_home: Path
) -> None:
    for t in episodes():
        store.append(t)
    job = prepare_comas(CoMASTrainConfig(run="r1", role="reviewer", checkpoint_name="rev", **TINY), store)
    rows = job.examples.rows
    # the two reviews of the task: rewards 0.2 and 0.9, leave-one-out advantages -0.7 and +0.7
    assert sorted(round(r["advantage"], 4) for r in rows) == [-0.7, 0.7]
    assert job.examples.source.counts["calls"] == 2 and job.examples.source.filters["role"] == "reviewer"
    assert job.extra["reviewer_agreement"] == 0.5 and job.extra["reward_mean"] == pytest.approx(0.55)
    ckpt = run_job(job)
    assert ckpt.method == "comas" and ckpt.metrics.steps == 2
    weights = load_file(str(checkpoint_dir("rev") / WEIGHTS_DIR / "adapter_model.safetensors"))
    assert any(float(w.abs().max()) > 0 for k, w in weights.items() if "lora_B" in k)  # the adapter moved
