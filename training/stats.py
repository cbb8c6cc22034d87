"""The numbers an evaluation reports and a gate decides on: intervals, pass@k, paired differences.

- :func:`wilson`: the 95% interval of one success rate.
- :func:`pass_at_k`: the unbiased pass@k of one task from n samples with c correct (the HumanEval
  paper's estimator), and :func:`mean_pass_at_k` over tasks.
- :func:`paired_bootstrap`: two policies scored on the same tasks; the mean per-task difference,
  its 95% percentile bootstrap interval (tasks resampled with replacement) and a one-sided
  p-value for "no gain" (the share of resampled means at or below zero). Paired, because the
  tasks differ far more from each other than the policies do: the pairing removes the task
  variance that two separate intervals would carry.
- :func:`two_attempts`: SCoRe's self-correction numbers from (first attempt right, final answer
  right) pairs: Acc@t1, Acc@t2, their difference, and the shares that went wrong → right and
  right → wrong.
- :func:`gate`: non-inferiority. A candidate is promoted when the lower end of the paired
  interval of (candidate − incumbent) is above ``-margin``; the gain is *significant* when the
  lower end is above zero.

Example:
    >>> d = paired_bootstrap([1, 1, 0, 1], [0, 1, 0, 0], seed=0)
    >>> d.mean, d.n
    (0.5, 4)
    >>> gate(d, margin=0.05).promoted
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a success rate.

    Example:
        >>> [round(x, 3) for x in wilson(9, 20)]
        [0.258, 0.658]
    """
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def pass_at_k(n: int, c: int, k: int) -> float:
    """The probability that at least one of ``k`` samples drawn without replacement from ``n``
    samples with ``c`` correct is correct: ``1 - C(n-c, k) / C(n, k)``.

    Example:
        >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), round(pass_at_k(4, 2, 2), 4)
        (0.25, 1.0, 0.8333)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean :func:`pass_at_k` over tasks given as ``(n, c)`` pairs (0.0 for no tasks)."""
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) if counts else 0.0


@dataclass(frozen=True)
class PairedDifference:
    """Candidate minus incumbent on the same tasks."""

    n: int  # tasks
    mean: float
    low: float  # the 95% interval
    high: float
    p_value: float  # one-sided, for "the candidate is no better"

    def __str__(self) -> str:
        return f"{self.mean:+.3f} (95% CI {self.low:+.3f} to {self.high:+.3f}, p={self.p_value:.3f}, {self.n} tasks)"


def paired_bootstrap(
    candidate: Sequence[float], incumbent: Sequence[float], *, resamples: int = 10_000, seed: int = 0
) -> PairedDifference:
    """The mean per-task difference of two policies' scores on the same tasks, with its 95%
    percentile bootstrap interval and one-sided p-value (tasks resampled with replacement).

    Scores are per task: 0/1 for one greedy answer, or the share of a task's samples that
    passed. Deterministic for a given ``seed``.

    Example:
        >>> str(paired_bootstrap([1, 1, 1, 1], [0, 0, 0, 0]))
        '+1.000 (95% CI +1.000 to +1.000, p=0.000, 4 tasks)'
    """
    if len(candidate) != len(incumbent):
        raise ValueError(f"paired scores need the same tasks: {len(candidate)} against {len(incumbent)}")
    if not candidate:
        raise ValueError("no tasks to compare")
    diffs = np.asarray(candidate, dtype=float) - np.asarray(incumbent, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return PairedDifference(
        n=len(diffs),
        mean=float(diffs.mean()),
        low=float(low),
        high=float(high),
        p_value=float((means <= 0).mean()),
    )


@dataclass(frozen=True)
class TwoAttempts:
    """SCoRe's two-attempt metrics over ``n`` episodes (shares of episodes)."""

    n: int
    acc_t1: float  # the first attempt is right
    acc_t2: float  # the final answer is right
    delta: float  # acc_t2 - acc_t1
    wrong_to_right: float  # Δi→c
    right_to_wrong: float  # Δc→i


def two_attempts(pairs: Sequence[tuple[bool, bool]]) -> TwoAttempts:
    """SCoRe's metrics from one ``(first attempt right, final answer right)`` pair per episode.
    An episode that ended after one attempt counts its first answer as its final one.

    Example:
        >>> two_attempts([(False, True), (True, True), (True, False), (False, False)])
        TwoAttempts(n=4, acc_t1=0.5, acc_t2=0.5, delta=0.0, wrong_to_right=0.25, right_to_wrong=0.25)
    """
    n = len(pairs)
    if n == 0:
        return TwoAttempts(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    t1 = sum(a for a, _ in pairs) / n
    t2 = sum(b for _, b in pairs) / n
    return TwoAttempts(
        n=n,
        acc_t1=t1,
        acc_t2=t2,
        delta=t2 - t1,
        wrong_to_right=sum(not a and b for a, b in pairs) / n,
        right_to_wrong=sum(a and not b for a, b in pairs) / n,
    )


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    significant: bool
    reason: str


def gate(diff: PairedDifference, margin: float) -> GateDecision:
    """Non-inferiority: promote when the interval's lower end is above ``-margin``; the gain is
    significant when it is above zero.

    Example:
        >>> gate(PairedDifference(n=40, mean=-0.01, low=-0.04, high=0.02, p_value=0.7), margin=0.05).reason
        'promoted: not worse by more than 0.05 (-0.010, 95% CI -0.040 to +0.020); the gain is not significant'
    """
    promoted = diff.low > -margin
    significant = diff.low > 0
    shown = f"({diff.mean:+.3f}, 95% CI {diff.low:+.3f} to {diff.high:+.3f})"
    if not promoted:
        return GateDecision(False, False, f"refused: may be worse by more than {margin:g} {shown}")
    gain = "the gain is significant" if significant else "the gain is not significant"
    return GateDecision(True, significant, f"promoted: not worse by more than {margin:g} {shown}; {gain}")
