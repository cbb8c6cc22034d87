"""B-STaR's balance between exploration and exploitation, for choosing a round's sampling settings.

B-STaR (Zeng et al., 2024) watches two things across self-training rounds: *exploration*, how
many different correct answers the policy can still sample for a task, and *exploitation*, how
well the reward picks the correct ones among them. Its balance score for one task, with the
samples whose reward clears the threshold as the selected ones, is

    min(n_correct_unique / n_star, 1) * (n_correct / n_selected)

(0 when nothing is selected): enough *distinct* correct answers, up to ``n_star``, times the
precision of the selection. Averaged over a probe of training tasks, it is computed for each
candidate temperature (and reward threshold), and the round samples with the best pair.

How many samples a task gets is chosen from the same probe (:func:`samples_needed`): the
balance score of each task's first ``k`` samples grows with ``k`` while new distinct correct
answers keep coming, then levels off; the round samples the smallest ``k`` that reaches the
best score within a tolerance, so a policy that has stopped exploring is not asked for
duplicates, and one that still finds new answers gets more tries.

For code tasks the reward is the share of hidden tests passed, so a threshold below 1 also
selects partly right answers: exploitation then measures how often those are really correct.

Example:
    >>> s = [Sample("a", 1.0, True), Sample("b", 1.0, True), Sample("c", 0.5, False)]
    >>> balance_score([s], threshold=0.5, n_star=4)
    0.3333333333333333
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One sampled answer to a task: its text, its reward and whether it is correct."""

    text: str
    reward: float
    correct: bool


def _selected(samples: Sequence[Sample], threshold: float) -> list[Sample]:
    return [s for s in samples if s.reward >= threshold]


def task_balance(samples: Sequence[Sample], threshold: float, n_star: int) -> float:
    """The balance score of one task's samples (see the module docstring)."""
    chosen = _selected(samples, threshold)
    if not chosen:
        return 0.0
    correct = [s for s in chosen if s.correct]
    unique = len({" ".join(s.text.split()) for s in correct})  # whitespace aside
    return min(unique / n_star, 1.0) * len(correct) / len(chosen)


def balance_score(tasks: Sequence[Sequence[Sample]], threshold: float, n_star: int) -> float:
    """The mean balance score over tasks (0.0 for none)."""
    if n_star < 1:
        raise ValueError(f"n_star must be at least 1, not {n_star}")
    return sum(task_balance(t, threshold, n_star) for t in tasks) / len(tasks) if tasks else 0.0


def exploration(tasks: Sequence[Sequence[Sample]]) -> dict[str, float]:
    """Pass@n (a task with any correct sample) and the mean number of distinct correct answers."""
    if not tasks:
        return {"pass_at_n": 0.0, "distinct_correct": 0.0}
    distinct = [len({" ".join(s.text.split()) for s in t if s.correct}) for t in tasks]
    return {"pass_at_n": sum(d > 0 for d in distinct) / len(tasks), "distinct_correct": sum(distinct) / len(tasks)}


def exploitation(tasks: Sequence[Sequence[Sample]], threshold: float) -> float:
    """The precision of the reward threshold: the share of selected samples that are correct
    (1.0 when nothing is selected: nothing wrong was picked)."""
    chosen = [s for t in tasks for s in _selected(t, threshold)]
    return sum(s.correct for s in chosen) / len(chosen) if chosen else 1.0


@dataclass(frozen=True)
class Choice:
    temperature: float
    threshold: float
    score: float


def choose(probe: Mapping[float, Sequence[Sequence[Sample]]], thresholds: Sequence[float], n_star: int) -> Choice:
    """The (temperature, threshold) pair with the best balance score on a probe that sampled the
    same tasks at each temperature. Ties go to the lower temperature, then the higher threshold.

    Example:
        >>> cold = [[Sample("x", 1.0, True)] * 4]
        >>> hot = [[Sample("x", 1.0, True), Sample("y", 1.0, True), Sample("z", 0.0, False)]]
        >>> choose({0.2: cold, 1.0: hot}, thresholds=[1.0], n_star=2)
        Choice(temperature=1.0, threshold=1.0, score=1.0)
    """
    if not probe or not thresholds:
        raise ValueError("choose needs at least one temperature and one threshold")
    scored = [Choice(t, th, balance_score(tasks, th, n_star)) for t, tasks in probe.items() for th in thresholds]
    return max(scored, key=lambda c: (c.score, -c.temperature, c.threshold))


def samples_needed(
    tasks: Sequence[Sequence[Sample]], threshold: float, n_star: int, options: Sequence[int], tolerance: float = 0.05
) -> tuple[int, dict[int, float]]:
    """The smallest sample count among ``options`` whose balance score (each task's first ``k``
    samples) is within ``tolerance`` (relative) of the best option's, and each option's score.
    Where no option selects a correct answer, the largest: more tries are the only way to find one.

    Example:
        >>> same = [[Sample("x", 1.0, True)] * 8]  # one answer, again and again
        >>> samples_needed(same, 1.0, n_star=4, options=[2, 4, 8])
        (2, {2: 0.25, 4: 0.25, 8: 0.25})
    """
    if not options or min(options) < 1:
        raise ValueError(f"options must be sample counts of at least 1, not {list(options)}")
    scores = {k: balance_score([t[:k] for t in tasks], threshold, n_star) for k in sorted(options)}
    best = max(scores.values())
    if best <= 0.0:
        return max(scores), scores
    return min(k for k, v in scores.items() if v >= best * (1.0 - tolerance)), scores
