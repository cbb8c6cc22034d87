"""SCoRe (training.score): returns, the leave-one-out baseline and the loss against hand-computed
cases; attempts read from two-try code episodes; an update end to end on the embedded model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from agents.llm.hf_local import TransformersChatModel
from autodidact.errors import ConfigError, NothingToTrainError
from autodidact.types import Trajectory
from memory.base import TrajectoryStore
from training.checkpoints import WEIGHTS_DIR, checkpoint_dir, find_checkpoint
from training.data import DataFields, _Tally
from training.policy import run_job, token_logps
from training.reinforce import leave_one_out, reinforce_loss
from training.score import SCoReTrainConfig, prepare_score, returns, two_attempts

from .test_data import FEEDBACK, W2, G, W, path
from .test_sft import TINY


def tries(run: str, id: str, answers: Sequence[str], task: str = "last") -> Trajectory:
    """A code episode of up to two submissions, as the code environment records it."""
    return path(run, id, answers, tries=True, task=task)


def test_returns_follow_the_stage_and_the_bonus_is_on_the_second_attempt_only() -> None:
    # (r1, r2): wrong -> right, right -> wrong, right -> right, wrong -> wrong
    cases = [(0.0, 1.0), (1.0, 0.0), (1.0, 1.0), (0.0, 0.0)]
    assert [returns(r1, r2, 1, 10.0) for r1, r2 in cases] == [(0.0, 1.0), (0.0, 0.0), (0.0, 1.0), (0.0, 0.0)]
    assert [returns(r1, r2, 2, 10.0) for r1, r2 in cases] == [(1.0, 11.0), (1.0, -10.0), (2.0, 1.0), (0.0, 0.0)]
    assert returns(0.0, 1.0, 2, 0.0) == (1.0, 1.0)  # no bonus: the sum of both attempts' rewards


def test_leave_one_out_subtracts_the_mean_of_the_task_s_other_episodes() -> None:
    values = [11.0, 1.0, 0.0, 1.0, 1.0, 5.0]
    groups = ["a", "a", "a", "b", "b", "c"]
    # a: 11 - (1 + 0)/2, 1 - (11 + 0)/2, 0 - (11 + 1)/2; b: equal, so 0; c alone: 0
    assert leave_one_out(values, groups) == [10.5, -4.5, -6.0, 0.0, 0.0, 0.0]
    assert sum(leave_one_out(values, groups)[:3]) == 0.0


def test_reinforce_loss_against_a_hand_computed_case_and_its_gradients() -> None:
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, 9.0], [-0.5, 0.0, 9.0]])  # 9: a padded position, masked out
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = torch.tensor([2.0, -1.0])
    beta = torch.tensor([1.0, 0.5])
    loss, stats = reinforce_loss(logp, ref, mask, adv, beta)
    # turn 0: -2 * (-3) + 1 * (0.5^2 + 1^2) / 2 = 6.625; turn 1: -(-1) * (-0.5) + 0 = -0.5
    assert float(loss.detach()) == pytest.approx((6.625 - 0.5) / 2)
    assert stats["pg"] == pytest.approx((6.0 - 0.5) / 2) and stats["kl"] == pytest.approx(0.625 / 2)
    loss.backward()
    assert logp.grad is not None
    # d/dlogp: (-A + beta * (logp - ref)) / turns on answer tokens, 0 elsewhere
    expected = torch.tensor([[(-2.0 + 0.5) / 2, (-2.0 - 1.0) / 2, 0.0], [(1.0 + 0.0) / 2, 0.0, 0.0]])
    assert torch.allclose(logp.grad, expected)


def test_token_logps_are_zero_off_the_answer_and_sum_to_the_answer_log_prob() -> None:
    logits = torch.log_softmax(torch.randn(1, 4, 5), -1)
    ids = torch.tensor([[1, 2, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1]])
    out = token_logps(logits, ids, mask)
    assert out.shape == (1, 3) and out[0, 0] == 0.0
    assert float(out[0, 1]) == pytest.approx(float(logits[0, 1, 3])) and float(out[0, 2]) == pytest.approx(
        float(logits[0, 2, 4])
    )


def test_two_attempts_read_both_tries_and_the_feedback_between_them() -> None:
    fields, tally = DataFields(), _Tally()
    fixed = two_attempts(tries("r", "fixed", [W, G]), fields, tally)
    assert fixed is not None and (fixed.r1, fixed.r2) == (0.0, 1.0)
    msgs, answer = fixed.second  # type: ignore[misc]
    assert answer == G and msgs[-2]["content"] == fixed.first[1] == W and FEEDBACK[W] in msgs[-1]["content"]
    once = two_attempts(tries("r", "once", [G]), fields, tally)
    assert once is not None and once.second is None and (once.r1, once.r2) == (1.0, 1.0)
    partial = two_attempts(tries("r", "p", [W, W2]), fields, tally, partial_credit=True)
    assert partial is not None and (partial.r1, partial.r2) == (pytest.approx(1 / 3), 0.0)


def test_bad_settings_and_no_signal_are_clear_errors(store: TrajectoryStore) -> None:
    with pytest.raises(ConfigError, match="stage must be 1 or 2"):
        SCoReTrainConfig(stage=3, **TINY)  # type: ignore[arg-type]
    for k in range(2):  # two episodes of one task, both right at once: every advantage is 0
        store.append(tries("same", f"same-{k}", [G]))
    with pytest.raises(NothingToTrainError, match="same outcome"):
        prepare_score(SCoReTrainConfig(run="same", **TINY), store)  # type: ignore[arg-type]


@pytest.mark.slow
def test_score_update_end_to_end_changes_the_adapter(
    store: TrajectoryStore, embedded_model: TransformersChatModel, _isolated_home: Path
) -> None:
    """Stage II on two tasks of three episodes each: the rows' advantages are the hand-computed
    leave-one-out ones, the reference log-probs are the starting policy's (KL 0 before the first
    step), and two steps move the LoRA adapter away from the starting policy."""
    for task, answers in (("last", [[W, G], [G], [W, W2]]), ("first", [[W, W2], [W, W2], [G]])):
        for k, a in enumerate(answers):
            store.append(tries("r1", f"{task}-{k}", a, task))
    cfg = SCoReTrainConfig(run="r1", stage=2, alpha=10.0, checkpoint_name="sc1", **TINY)  # type: ignore[arg-type]
    job = prepare_score(cfg, store)
    rows = job.examples.rows
    # task last: G1 = (1, 2, 0) -> LOO (0, 1.5, -1.5); G2 = (11, 1, 0) -> (10.5, -4.5, -6)
    # task first: G1 = (0, 0, 2) -> (-1, -1, 2); G2 = (0, 0, 1) -> (-0.5, -0.5, 1)
    advantages = sorted(r["advantage"] for r in rows)
    assert advantages == sorted([0.0, 10.5, 1.5, -1.5, -6.0, -1.0, -0.5, -1.0, -0.5, 2.0])
    assert len(rows) == 10 and job.examples.source.counts["second_attempts"] == 4
    assert job.extra["acc_t1"] == pytest.approx(2 / 6) and job.extra["acc_t2"] == pytest.approx(3 / 6)

    batch = job.trainer.data_collator([rows[0]])
    out = job.trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logp = token_logps(out.logits.float(), batch["input_ids"], batch["completion_mask"])
    assert torch.allclose(logp, batch["ref_logp"], atol=1e-3)

    ckpt = run_job(job)
    assert find_checkpoint("sc1") == ckpt and ckpt.method == "score" and ckpt.metrics.steps == 2
    weights = load_file(str(checkpoint_dir("sc1") / WEIGHTS_DIR / "adapter_model.safetensors"))
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert lora_b and any(float(w.abs().max()) > 0 for w in lora_b)  # B starts at 0: the update moved it
