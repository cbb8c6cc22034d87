"""WebRL (training.webrl): returns, advantages, the beta rule, the actor loss, the critic, the
replay filter, the outcome reward model and a whole update on the embedded model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from agents.llm.hf_local import TransformersChatModel
from agents.roles.outcome import OutcomeJudge, transcript
from autodidact.errors import ConfigError, NothingToTrainError
from autodidact.types import Observation, Step, Trajectory
from memory.base import TrajectoryQuery, TrajectoryStore
from training.checkpoints import find_checkpoint
from training.data import DataFields, build_examples
from training.policy import run_job
from training.webrl import (
    BETA_FLOOR,
    BETA_HIGH,
    OutcomeRewardModel,
    TwinValueHeads,
    WebRLTrainConfig,
    actor_loss,
    adaptive_beta,
    advantages,
    answered,
    completion_logp,
    cross_fitted_values,
    load_critic,
    mc_returns,
    prepare_webrl,
    reference_actor_loss,
    reference_advantages,
    replay_keep,
    score_turns,
    train_critic,
)

from .test_sft import TINY, answer, episode, prompt


def test_mc_returns_discount_the_final_reward_back_to_each_turn() -> None:
    assert mc_returns(3, 1.0, 0.9) == pytest.approx([0.81, 0.9, 1.0])
    assert mc_returns(2, 0.0, 0.9) == [0.0, 0.0]
    assert mc_returns(1, 1.0, 0.5) == [1.0]


def test_advantages_are_one_step_and_clipped() -> None:
    v = torch.tensor([0.2, 0.6, 0.9])
    nv = torch.tensor([0.6, 0.9, 0.4])  # the last turn's next value is ignored: done
    r = torch.tensor([0.0, 0.0, 1.0])
    done = torch.tensor([0.0, 0.0, 1.0])
    a = advantages(v, nv, r, done, 0.9)
    assert a.tolist() == pytest.approx([0.9 * 0.6 - 0.2, 0.9 * 0.9 - 0.6, 1.0 - 0.9])
    clipped = advantages(torch.tensor([-3.0, 3.0]), torch.zeros(2), torch.zeros(2), torch.ones(2), 0.9)
    assert clipped.tolist() == [1.0, -1.0]


def test_beta_rule_each_branch_the_cap_and_the_floor() -> None:
    # (A >= 0, p_ref >= 0.8) -> high; (A >= 0, p_ref < 0.8) -> 1; (A < 0, p_ref < 0.9) -> high; (A < 0, p_ref >= 0.9) -> 1
    a = torch.tensor([0.5, 0.5, -0.5, -0.5])
    p = torch.tensor([0.85, 0.5, 0.5, 0.95])
    unmoved = torch.zeros(4)
    assert adaptive_beta(a, unmoved, p).tolist() == [BETA_HIGH, 1.0, BETA_HIGH, 1.0]
    # Capped at |A / log_ratio|: an action that moved far already is pushed less.
    moved = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert adaptive_beta(a, moved, p).tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5])
    # A = 0 would make beta 0 and the loss divide by 0: floored.
    assert adaptive_beta(torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([0.9])).item() == pytest.approx(
        BETA_FLOOR
    )


def test_actor_loss_pushes_good_actions_up_and_bad_ones_down() -> None:
    logp = torch.tensor([-5.0, -5.0], requires_grad=True)
    ref = torch.tensor([-5.0, -5.0])
    n = torch.tensor([5.0, 5.0])
    loss, stats = actor_loss(logp, ref, n, torch.tensor([0.8, -0.8]))
    loss.backward()
    assert logp.grad is not None
    assert logp.grad[0] < 0 < logp.grad[1]  # descent raises the good action's log-prob, lowers the bad one's
    # At log ratio 0 the loss is mean(A^2 / beta); p_ref = e^-1 < 0.8: beta 1 for the good, 5 for the bad.
    assert loss.item() == pytest.approx((0.64 / 1 + 0.64 / BETA_HIGH) / 2)
    assert stats["log_ratio"] == 0.0 and stats["beta"] == pytest.approx(3.0)


def test_reference_advantages_add_the_return_and_the_bias_then_binarise() -> None:
    v = torch.tensor([0.5, 0.5, 0.5, 0.9])
    nv = torch.tensor([0.52, 0.58, 0.0, 0.0])
    r = torch.tensor([0.0, 0.0, 0.0, 1.0])
    done = torch.tensor([0.0, 0.0, 1.0, 1.0])
    g = torch.tensor([0.0, 0.0, 0.0, 1.0])
    # 0.52 - 0.5 - 0.05 < 0; 0.58 - 0.5 - 0.05 >= 0; a failed last turn -0.55; a success 1 - 0.9 - 0.05 + 1
    assert reference_advantages(v, nv, r, done, g).tolist() == pytest.approx([-0.6, 1.0, -0.6, 1.0])


def test_reference_actor_loss_is_smooth_l1_on_the_per_token_ratio_of_positive_advantages_only() -> None:
    logp = torch.tensor([-3.0, -6.0, -3.0], requires_grad=True)
    ref = torch.tensor([-4.0, -6.0, -1.0])
    n = torch.tensor([2.0, 3.0, 4.0])
    a = torch.tensor([1.0, 1.0, -0.6])
    loss, stats = reference_actor_loss(logp, ref, n, a)
    # per-token ratios 0.5, 0, -0.5; beta 1, 1 (capped at |A/r| = 2 and inf) and the masked row's 1.2;
    # smooth-L1: 0.5 * 0.5^2 = 0.125 and |0 - 1| - 0.5 = 0.5; the negative row counts 0 in the mean.
    assert loss.item() == pytest.approx((0.125 + 0.5) / 3)
    assert stats["trained"] == 2 and stats["log_ratio"] == pytest.approx(0.0)
    loss.backward()
    assert logp.grad is not None
    assert logp.grad[0] < 0 and logp.grad[1] < 0 and logp.grad[2] == 0  # positives pushed up, the negative untouched
    assert float(logp.grad[1]) == pytest.approx(-1 / 3 / 3)  # d/dlogp of (|r - 1| - 0.5)/3 at r = 0, r = logp / 3


def test_replay_keeps_only_confidence_in_the_open_closed_band() -> None:
    assert replay_keep([0.2, 0.5, 0.51, 0.95, 0.96, 1.0]) == [False, False, True, True, False, False]
    assert replay_keep([0.3, 0.7], low=0.25, high=0.5) == [True, False]


def test_completion_logp_sums_only_the_masked_tokens() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0]])
    logp = torch.log_softmax(logits, -1)
    expected = [logp[0, 1, 3] + logp[0, 2, 4], logp[1, 0, 6]]
    assert completion_logp(logits, ids, mask).tolist() == pytest.approx([float(e) for e in expected])


def test_twin_heads_value_is_the_smaller_head_and_the_critic_learns_returns() -> None:
    heads = TwinValueHeads(3)
    x = torch.randn(5, 3)
    probs = heads(x).softmax(-1)[..., 1]
    assert heads(x).shape == (2, 5, 2)
    assert torch.equal(heads.value(x), probs.min(0).values)

    torch.manual_seed(1)
    feats = torch.randn(64, 8)
    targets = (feats[:, 0] > 0).float() * 0.9  # the return is readable from one feature
    fitted, m = train_critic(feats, targets)
    assert m["critic_loss_after"] < m["critic_loss_before"]
    v = fitted.value(feats)
    assert v[targets > 0].mean() > 0.7 > 0.2 > v[targets == 0].mean()


def test_cross_fitted_values_are_the_other_episodes_mean_on_a_shared_state() -> None:
    # Four episodes that start from the same state: two succeed. Out of fold, each one's value
    # is near the others' success rate, not its own outcome (which a fitted critic memorises).
    feats = torch.ones(4, 2)
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0])
    values = cross_fitted_values(feats, targets, [0, 1, 2, 3], 4, folds=4)
    assert values.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3], abs=0.05)


def test_orm_rows_and_transcripts_hide_the_final_verdict(store: TrajectoryStore) -> None:
    first = Step(
        index=0,
        role="solver",
        messages=prompt("x"),
        completion="```python\npass\n```",
        observation=Observation(text="0 of 3 tests passed"),
    )
    last = Step(
        index=1,
        role="solver",
        messages=prompt("x"),
        completion=answer("x"),
        observation=Observation(text="VERDICT: 3 of 3 tests passed"),
        terminated=True,
        reward=1.0,
    )
    store.append(episode("r1", "x", steps=(first, last), id="two-attempts"))
    store.append(episode("r1", "y", success=False, id="failed"))
    text = transcript(next(iter(store.query(TrajectoryQuery(run_id="r1", success=True)))))
    assert "0 of 3 tests passed" in text and "VERDICT" not in text and text.count("Action") == 2

    rows = build_examples(DataFields(run="r1", data=["orm"]), store).rows
    assert [(r["task_id"], r["messages"][-1]["content"]) for r in rows] == [("bundled/x", "YES"), ("bundled/y", "NO")]
    assert rows[0]["messages"][:-1] == [
        m.model_dump() for m in OutcomeJudge().messages(task="Write `x`.", transcript=text)
    ]
    assert OutcomeJudge().parse("no.").output.yes is False  # type: ignore[union-attr]
    assert OutcomeJudge().parse("maybe").output is None


def test_webrl_with_no_turns_is_nothing_to_train(store: TrajectoryStore) -> None:
    store.append(episode("r1", "x", error="sandbox crashed"))
    with pytest.raises(NothingToTrainError, match="no usable acting turns"):
        prepare_webrl(WebRLTrainConfig(run="r1", **TINY), store)


def fill_samples(store: TrajectoryStore, run: str) -> None:
    """Three samples of four tasks, some right and some wrong, as a sampled collection run gives."""
    for task in ("last", "first", "add", "rev"):
        for k in range(3):
            ok = (k + len(task)) % 2 == 0
            completion = answer(task) + ("" if ok else f"\n# wrong {k}")
            store.append(episode(run, task, success=ok, completion=completion, id=f"{run}-{task}-{k}"))


@pytest.mark.slow
def test_webrl_update_end_to_end_with_replay_and_critic(
    store: TrajectoryStore,
    embedded_model: TransformersChatModel,
    _isolated_home: Path,
) -> None:
    fill_samples(store, "old")
    fill_samples(store, "r1")
    cfg = WebRLTrainConfig(
        run="r1", replay_run="old", replay_confidence=(0.0, 1.0), replay_ratio=0.25, checkpoint_name="w1", **TINY
    )
    job = prepare_webrl(cfg, store)
    counts = job.examples.source.counts
    assert counts["new_turns"] == 12 and counts["replay_candidates"] == 5
    assert counts["replayed"] == 3 == len(job.examples.rows) - 12  # capped at replay_ratio x the new turns
    rows = job.examples.rows
    assert all(-1.0 <= r["advantage"] <= 1.0 for r in rows)
    # One-turn episodes: A = r - V(s) with V in (0, 1), so exactly the 5 successes are positive.
    assert sum(r["advantage"] > 0 for r in rows[:12]) == 5

    # ref_logp is the starting policy's: at the first step the log ratio is 0.
    batch = job.trainer.data_collator([rows[0]])
    out = job.trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logp = completion_logp(out.logits.float(), batch["input_ids"], batch["completion_mask"])
    assert logp.item() == pytest.approx(rows[0]["ref_logp"], abs=1e-3)
    assert rows[0]["n_tokens"] == sum(rows[0]["completion_mask"])

    ckpt = run_job(job)
    assert find_checkpoint("w1") == ckpt and ckpt.method == "webrl" and ckpt.metrics.steps == 2
    assert ckpt.metrics.tokens > 0 and "critic_mae_held_out" in ckpt.metrics.extra
    heads, features_from = load_critic("w1")
    assert features_from == "embedded" and isinstance(heads, TwinValueHeads)


def unparsed_episode(run: str) -> Trajectory:
    """A small model's most common failure: it answered, but not with an action."""
    step = Step(index=0, role="solver", messages=prompt("mid"), completion="The middle one.", error="parse: no code")
    return episode(run, "mid", success=False, steps=(step,), id=f"{run}-unparsed")


def test_webrl_refuses_an_unknown_actor_or_reference(store: TrajectoryStore) -> None:
    fill_samples(store, "r1")
    with pytest.raises(ConfigError, match="actor is one of paper, reference"):
        prepare_webrl(WebRLTrainConfig(run="r1", actor="ppo", **TINY), store)
    with pytest.raises(ConfigError, match="reference one of collector, start"):
        prepare_webrl(WebRLTrainConfig(run="r1", reference="sft", **TINY), store)


@pytest.mark.slow
def test_webrl_unparseable_turns_are_negatives_the_collector_is_the_reference_and_the_reference_form_trains(
    store: TrajectoryStore, embedded_model: TransformersChatModel, _isolated_home: Path
) -> None:
    fill_samples(store, "r1")
    store.append(unparsed_episode("r1"))
    job = prepare_webrl(WebRLTrainConfig(run="r1", checkpoint_name="w1", **TINY), store)
    rows, counts = job.examples.rows, job.examples.source.counts
    assert counts["unparsed_steps"] == 1 and len(rows) == 13
    [bad] = [r for r in rows if r["trajectory_id"] == "r1-unparsed"]
    assert bad["advantage"] == -1.0  # trained as a negative, whatever the critic says
    run_job(job)

    # From w1, on episodes the embedded model collected: pi_ref is the embedded model, not w1.
    collected_by = {tuple(r["input_ids"]): r["ref_logp"] for r in rows}
    ref_job = prepare_webrl(
        WebRLTrainConfig(run="r1", model="w1", actor="reference", checkpoint_name="w2", **TINY), store
    )
    ref_rows, ref_counts = ref_job.examples.rows, ref_job.examples.source.counts
    assert ref_counts["turns_collected_by_another_policy"] == 13
    assert all(r["advantage"] == 1.0 for r in ref_rows)  # only positive advantages are trained
    # One-turn episodes: a success's A = 1 - V(s) - 0.05 + 1 > 0, a failure's -V(s) - 0.05 < 0.
    assert len(ref_rows) == 5 and ref_counts["negative_turns_left_out"] == 8
    assert all(r["trajectory_id"] != "r1-unparsed" for r in ref_rows)
    for r in ref_rows:
        assert r["ref_logp"] == pytest.approx(collected_by[tuple(r["input_ids"])], abs=1e-3)
    batch = ref_job.trainer.data_collator(ref_rows[:1])
    with torch.no_grad():
        out = ref_job.trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    w1_logp = completion_logp(out.logits.float(), batch["input_ids"], batch["completion_mask"]).item()
    assert abs(w1_logp - ref_rows[0]["ref_logp"]) > 1e-3  # w1 has moved away from its collector
    ckpt = run_job(ref_job)
    assert ckpt.metrics.steps == 2 and ckpt.metrics.train_loss is not None and math.isfinite(ckpt.metrics.train_loss)

    start_job = prepare_webrl(
        WebRLTrainConfig(run="r1", model="w1", reference="start", checkpoint_name="w3", **TINY), store
    )
    first = start_job.examples.rows[0]
    assert first["ref_logp"] != pytest.approx(collected_by[tuple(first["input_ids"])], abs=1e-3)


@pytest.mark.slow
def test_outcome_reward_model_reads_yes_against_no(
    store: TrajectoryStore,
    embedded_model: TransformersChatModel,
) -> None:
    store.append(episode("r1", "x", id="a"))
    store.append(episode("r1", "y", success=False, id="b"))
    trajs = sorted(store.query(TrajectoryQuery(run_id="r1")), key=lambda t: t.id)
    orm = OutcomeRewardModel(embedded_model.model, embedded_model.tokenizer)
    probs = orm.probabilities(trajs)
    assert len(probs) == 2 and all(0.0 < p < 1.0 for p in probs)
    # The probability is the softmax of the two logits at the answer's first token.
    tok = embedded_model.tokenizer
    text = tok.apply_chat_template(
        [m.model_dump() for m in orm.prompt(trajs[0])], tokenize=False, add_generation_prompt=True
    )
    with torch.no_grad():
        logits = embedded_model.model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, -1]
    expected = 1 / (1 + math.exp(float(logits[orm.no] - logits[orm.yes])))
    assert probs[0] == pytest.approx(expected, abs=1e-4)
    assert orm.judge(trajs) == [p > 0.5 for p in probs]


def test_score_turns_batches_by_length_and_answers_in_the_given_order(embedded_model: TransformersChatModel) -> None:
    tok = embedded_model.tokenizer
    asks = ["Hi.", "Name three fruits, one per line, and say which one is the sweetest and why.", "2+2?"]
    turns = [
        answered(tok, [{"role": "user", "content": q}], a) for q, a in zip(asks, ["Hello!", "Apple", "4"], strict=True)
    ]
    alone = [score_turns(embedded_model.model, tok, [t])[0] for t in turns]
    batched = score_turns(embedded_model.model, tok, turns, batch_size=2)  # the two short ones together
    for a, b in zip(alone, batched, strict=True):
        assert a.n_tokens == b.n_tokens and math.isclose(a.logp, b.logp, abs_tol=1e-3)
        assert torch.allclose(a.features, b.features, atol=1e-3)
    assert len({round(s.logp, 3) for s in batched}) == 3
