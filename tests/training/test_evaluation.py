"""training.evaluation: a suite's numbers from its episodes, and two policies paired task by task."""

from __future__ import annotations

import pytest

from autodidact.types import Action, Observation, PolicyRef, Step, Task, Trajectory
from training.evaluation import compare, first_and_final, headline, suite_numbers

POLICY = PolicyRef(model="m", backend="scripted")


def episode(task: int, *rewards: float) -> Trajectory:
    """An episode of ``task`` whose submissions scored ``rewards`` (the last is the final answer)."""
    steps = tuple(
        Step(
            index=i,
            role="solver",
            action=Action(kind="submit", text=f"a{i}"),
            observation=Observation(text="f"),
            reward=r,
        )
        for i, r in enumerate(rewards)
    )
    final = rewards[-1] if rewards else 0.0
    task_ = Task(id=f"t/{task}", suite="t", prompt="p", payload={})
    return Trajectory(
        run_id="r", task=task_, env_id="code", policy=POLICY, steps=steps, reward=final, success=final >= 1.0
    )


def test_suite_numbers_count_attempts_samples_and_pass_at_k() -> None:
    greedy = [episode(0, 1.0), episode(1, 0.5, 1.0), episode(2, 1.0, 0.5), episode(3, 0.0, 0.0)]
    assert [first_and_final(t) for t in greedy] == [(True, True), (False, True), (True, False), (False, False)]
    # task 0: 2 of 4 samples pass, task 1: 0 of 4, task 2: 4 of 4, task 3: 1 of 4
    sampled = [episode(t, 1.0 if i < n else 0.0) for t, n in enumerate((2, 0, 4, 1)) for i in range(4)]
    sampled[12] = episode(3, 0.0, 1.0)  # task 3's passing sample was wrong at its first attempt
    got = suite_numbers(greedy, sampled)
    assert got["tasks_n"] == 4 and got["greedy"]["successes"] == 2 and got["greedy"]["pass_at_1"] == 0.5
    assert got["greedy"]["mean_reward"] == pytest.approx((1.0 + 1.0 + 0.5 + 0.0) / 4)
    two = got["two_attempts"]
    assert (two["acc_t1"], two["acc_t2"], two["wrong_to_right"], two["right_to_wrong"]) == (0.5, 0.5, 0.25, 0.25)
    assert got["sampled"]["k"] == 4 and got["sampled"]["pass_at_1"] == pytest.approx((0.5 + 0 + 1 + 0.25) / 4)
    assert got["sampled"]["pass_at_k"] == 0.75  # 3 of 4 tasks have a passing sample
    two = got["sampled"]["two_attempts"]  # over the 16 sampled episodes: 6 right at once, 1 fixed
    assert (two["n"], two["acc_t1"], two["acc_t2"], two["wrong_to_right"], two["right_to_wrong"]) == (
        16,
        6 / 16,
        7 / 16,
        1 / 16,
        0.0,
    )
    assert got["tasks"]["t/1"] == {"greedy": 1, "sampled": 0.0}
    assert headline(got, "sampled") == got["sampled"]["pass_at_1"] and headline(got, "greedy") == 0.5
    assert "sampled" not in suite_numbers(greedy) and headline(suite_numbers(greedy), "sampled") == 0.5


def test_web_episodes_have_no_two_attempt_numbers() -> None:
    """A web episode submits nothing: its success is not a correction of a first attempt."""
    web = [
        Trajectory(
            run_id="r",
            task=Task(id=f"w/{i}", suite="w", prompt="p", payload={}),
            env_id="web",
            policy=POLICY,
            steps=(
                Step(index=0, role="solver", action=Action(kind="click", text="e1"), observation=Observation(text="o")),
            ),
            reward=1.0 if i else 0.0,
            success=bool(i),
        )
        for i in range(2)
    ]
    got = suite_numbers(web, web)
    assert got["greedy"]["successes"] == 1 and got["sampled"]["pass_at_1"] == 0.5
    assert "two_attempts" not in got and "two_attempts" not in got["sampled"]
    assert "two_attempts" in suite_numbers([episode(0, 0.0, 1.0)])  # code: one submission is enough


def test_compare_pairs_only_the_tasks_both_were_measured_on() -> None:
    before = suite_numbers([episode(0, 0.0), episode(1, 0.0), episode(2, 1.0)])
    after = suite_numbers([episode(0, 1.0), episode(1, 1.0), episode(2, 1.0), episode(3, 1.0)])
    d = compare(after, before, "greedy")
    assert d is not None and d.n == 3 and d.mean == pytest.approx(2 / 3)
    assert compare(after, before, "sampled") is None  # neither was sampled
