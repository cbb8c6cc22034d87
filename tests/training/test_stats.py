"""training.stats against cases computed by hand: pass@k, the paired bootstrap, the gate."""

from __future__ import annotations

import pytest

from training.stats import PairedDifference, gate, mean_pass_at_k, paired_bootstrap, pass_at_k, two_attempts, wilson


def test_wilson_interval_brackets_the_rate() -> None:
    lo, hi = wilson(9, 20)
    assert lo < 0.45 < hi and (round(lo, 3), round(hi, 3)) == (0.258, 0.658)
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == 0.25  # one sample: the share correct
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)  # C(2,2)/C(4,2) = 1/6 draws miss both
    assert pass_at_k(5, 2, 4) == 1.0  # only 3 wrong: any 4 hold a correct one
    assert mean_pass_at_k([(4, 1), (4, 3)], 1) == pytest.approx(0.5)
    assert mean_pass_at_k([], 1) == 0.0
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(2, 1, 3)


def test_the_paired_bootstrap_matches_the_exact_resampling_distribution() -> None:
    # diffs (1, 0, 0, 0): a resampled mean is <= 0 only when no draw of 4 picks the 1: (3/4)^4
    d = paired_bootstrap([1, 0, 1, 1], [0, 0, 1, 1], resamples=20_000, seed=1)
    assert d.n == 4 and d.mean == 0.25
    assert d.p_value == pytest.approx(0.75**4, abs=0.01)
    assert (d.low, d.high) == (0.0, 0.75)  # 2.5th and 97.5th percentiles of {0, .25, .5, .75, 1}
    # diffs (+1, -1): means -1, 0, +1 with probabilities 1/4, 1/2, 1/4
    two = paired_bootstrap([1, 0], [0, 1], seed=2)
    assert (two.low, two.high, two.mean) == (-1.0, 1.0, 0.0)
    assert two.p_value == pytest.approx(0.75, abs=0.02)
    same = paired_bootstrap([0.5, 0.25], [0.5, 0.25])
    assert (same.low, same.high, same.p_value) == (0.0, 0.0, 1.0)
    assert paired_bootstrap([1, 0, 1], [0, 0, 1], seed=3) == paired_bootstrap([1, 0, 1], [0, 0, 1], seed=3)
    with pytest.raises(ValueError, match="same tasks"):
        paired_bootstrap([1, 0], [1])


def test_the_gate_on_constructed_outcomes() -> None:
    win = paired_bootstrap([1] * 30 + [0] * 10, [1] * 15 + [0] * 25)  # +0.375 on 40 tasks
    assert win.low > 0 and win.p_value < 0.01
    decision = gate(win, margin=0.05)
    assert decision.promoted and decision.significant and "significant" in decision.reason

    tie = PairedDifference(n=40, mean=0.0, low=-0.04, high=0.04, p_value=0.55)
    decision = gate(tie, margin=0.05)
    assert decision.promoted and not decision.significant and "not significant" in decision.reason

    loss = paired_bootstrap([0] * 12 + [1] * 28, [1] * 40)  # -0.3
    decision = gate(loss, margin=0.05)
    assert not decision.promoted and decision.reason.startswith("refused: may be worse by more than 0.05")
    assert not gate(tie, margin=0.0).promoted  # no margin: a tie whose interval dips below zero is refused


def test_two_attempt_metrics_count_each_transition() -> None:
    # 10 episodes: 3 stay right, 2 go wrong→right, 1 right→wrong, 4 stay wrong
    pairs = [(True, True)] * 3 + [(False, True)] * 2 + [(True, False)] + [(False, False)] * 4
    m = two_attempts(pairs)
    assert (m.n, m.acc_t1, m.acc_t2) == (10, 0.4, 0.5)
    assert m.delta == pytest.approx(0.1) and (m.wrong_to_right, m.right_to_wrong) == (0.2, 0.1)
    assert m.delta == pytest.approx(m.wrong_to_right - m.right_to_wrong)
    assert two_attempts([]).n == 0
