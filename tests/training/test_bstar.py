"""B-STaR's balance score (training.bstar) on a constructed table of samples."""

from __future__ import annotations

import pytest

from training.bstar import Sample, balance_score, choose, exploitation, exploration, samples_needed, task_balance


def S(text: str, reward: float, correct: bool) -> Sample:
    return Sample(text, reward, correct)


# Two tasks sampled at two temperatures. Cold: the same right answer again and again (little
# exploration). Hot: different right answers, but also partly right wrong ones with reward 0.5.
COLD = [
    [S("return a+b", 1.0, True)] * 4,
    [S("return x[0]", 1.0, True), S("return x[0]", 1.0, True), S("return x", 0.0, False), S("pass", 0.0, False)],
]
HOT = [
    [S("return a+b", 1.0, True), S("return b+a", 1.0, True), S("return a - -b", 1.0, True), S("return a", 0.5, False)],
    [S("return x[0]", 1.0, True), S("return x[:1][0]", 1.0, True), S("return x[1]", 0.5, False), S("", 0.0, False)],
]


def test_the_balance_score_by_hand() -> None:
    # cold, threshold 1: task 1 has 1 distinct correct of 4 selected, all correct: min(1/2, 1) * 1 = 0.5;
    # task 2: 1 distinct, 2 selected, both correct: 0.5 * 1 = 0.5
    assert balance_score(COLD, threshold=1.0, n_star=2) == 0.5
    # hot, threshold 1: task 1: 3 distinct (capped at n_star=2): 1 * 3/3; task 2: 2 distinct: 1 * 2/2
    assert balance_score(HOT, threshold=1.0, n_star=2) == 1.0
    # hot, threshold 0.5: the partly right answers are selected too: task 1: 1 * 3/4; task 2: 1 * 2/3
    assert balance_score(HOT, threshold=0.5, n_star=2) == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert task_balance([S("a", 0.0, False)], threshold=1.0, n_star=2) == 0.0  # nothing selected
    assert task_balance([S("f(x)", 1.0, True), S(" f(x) ", 1.0, True)], 1.0, 2) == 0.5  # whitespace aside: one answer
    assert balance_score([], 1.0, 2) == 0.0
    with pytest.raises(ValueError, match="n_star"):
        balance_score(COLD, 1.0, 0)


def test_exploration_and_exploitation_curves() -> None:
    assert exploration(COLD) == {"pass_at_n": 1.0, "distinct_correct": 1.0}
    assert exploration(HOT) == {"pass_at_n": 1.0, "distinct_correct": 2.5}
    assert exploitation(HOT, threshold=1.0) == 1.0
    assert exploitation(HOT, threshold=0.5) == pytest.approx(5 / 7)  # 7 selected, 5 correct
    assert exploitation([[S("x", 0.0, False)]], threshold=1.0) == 1.0  # nothing selected, nothing wrong


def test_choose_prefers_the_temperature_and_threshold_with_the_best_balance() -> None:
    best = choose({0.4: COLD, 1.0: HOT}, thresholds=[0.5, 1.0], n_star=2)
    assert (best.temperature, best.threshold, best.score) == (1.0, 1.0, 1.0)
    # where exploration is not needed (n_star=1) both temperatures score 1 at threshold 1: the cooler one wins
    assert choose({0.4: COLD, 1.0: HOT}, thresholds=[1.0], n_star=1).temperature == 0.4
    with pytest.raises(ValueError, match="at least one"):
        choose({}, thresholds=[1.0], n_star=2)


def test_samples_per_task_stop_where_new_correct_answers_stop() -> None:
    # Task 1 finds a new right answer in each of its first 4 samples, then repeats them; task 2
    # repeats one right answer. With n_star=4: k=2 -> (2/4 + 1/4)/2, k=4 and k=8 -> (4/4 + 1/4)/2.
    one = [S(f"return {i}", 1.0, True) for i in range(4)] * 2
    same = [S("return 0", 1.0, True)] * 8
    k, scores = samples_needed([one, same], threshold=1.0, n_star=4, options=[2, 4, 8])
    assert scores == {2: 0.375, 4: 0.625, 8: 0.625} and k == 4  # 8 adds only duplicates
    # a looser tolerance settles for fewer samples: 0.375 is within 40% of 0.625
    assert samples_needed([one, same], 1.0, 4, [2, 4, 8], tolerance=0.4)[0] == 2
    # nothing correct anywhere: the most samples, the only way to find an answer
    wrong = [[S("pass", 0.0, False)] * 8]
    assert samples_needed(wrong, 1.0, 4, [2, 4, 8]) == (8, {2: 0.0, 4: 0.0, 8: 0.0})
    with pytest.raises(ValueError, match="at least 1"):
        samples_needed([one], 1.0, 4, [0, 2])
