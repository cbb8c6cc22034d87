"""SCoRe: a policy taught to correct itself by two-attempt reinforcement learning.

After SCoRe (Kumar et al., 2024, "Training Language Models to Self-Correct via Reinforcement
Learning"), on code episodes of up to two attempts, with the feedback an agent could see
between them (the visible tests, :mod:`environments.code.env`'s default; never the hidden ones).

Algorithm (:func:`prepare_score`):
    1. **Episodes.** Each selected episode gives its first submission ``y1`` (the task's
       prompt, then the answer) and, when the visible tests failed, its second ``y2`` (the
       prompt with ``y1`` and the feedback, then the answer). Its rewards ``r1`` and ``r2``
       are 1 when the attempt passed every hidden test, else 0 (``partial_credit``: the share
       that passed). An episode that stopped after one attempt keeps its answer: ``r2 = r1``,
       and it has no second turn to train. Collect several episodes a task with the policy
       being trained (``--samples 4 --set max_steps=2``; ``evolve`` does): the update is
       on-policy REINFORCE, and the baseline needs siblings.
    2. **Returns.** Stage I trains the second attempt alone on ``G2 = r2``; the first attempt
       is only held to the starting policy by a strong KL term (``kl_first``), so the policy
       learns to correct without learning to stop trying on the first attempt. Stage II trains
       both: ``G1 = r1 + r2`` (the first attempt is credited with what followed it) and
       ``G2 = r2 + alpha * (r2 - r1)``, the paper's shaping bonus, which pays a second attempt
       for turning wrong into right and fines it for the reverse; the bonus is on the second
       turn only, so a right first attempt is never fined for leaving nothing to fix.
    3. **Baseline.** Leave-one-out (:func:`leave_one_out`): each return minus the mean of the
       same turn's returns of the task's other episodes (RLOO); a task with one episode gets no
       signal from it.
    4. **Loss** (:func:`score_loss`), per trained turn: ``-A * log pi(y | prompt)`` (the sum over
       the answer's tokens) plus ``beta * mean over tokens of (log pi - log pi_ref)^2 / 2`` (the
       k2 estimate of KL to the starting policy, whose per-token log-probs are read once before
       training), ``beta = kl_first`` on stage I's first turns, else ``kl``.

Run it:
    autodidact run --suite bundled --split train --samples 4 --temperature 0.8 --set max_steps=2
    autodidact train --method score --run RUN [--set stage=2 alpha=10]

Example:
    >>> leave_one_out([1.0, 0.0, 0.0, 1.0], ["a", "a", "b", "b"])
    [1.0, -1.0, -1.0, 1.0]
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from transformers import Trainer, TrainingArguments

from autodidact.errors import ConfigError, NothingToTrainError
from autodidact.types import Step, Trajectory
from environments.code.env import SUBMIT_KINDS
from training.checkpoints import Checkpoint, DataSource
from training.data import DataFields, Examples, _Tally, acting_steps, answer_text, episodes, queries, tokenize_turns
from training.policy import (
    TrainFields,
    TrainJob,
    load_policy,
    lora_config,
    pad,
    reserve_name,
    run_job,
    token_batch,
    token_logps,
    trainer_dir,
)

if TYPE_CHECKING:
    from memory.base import TrajectoryStore

METHOD = "score"


# --- the pieces, each testable on its own ----------------------------------------------------


@dataclass(frozen=True)
class TwoAttempts:
    """One episode's attempts: each the messages it was sent and its answer, and the rewards."""

    task_id: str
    trajectory_id: str
    first: tuple[list[dict[str, str]], str]
    second: tuple[list[dict[str, str]], str] | None
    r1: float
    r2: float  # r1 when the episode stopped after one attempt


def two_attempts(
    traj: Trajectory, fields: DataFields, tally: _Tally, *, partial_credit: bool = False
) -> TwoAttempts | None:
    """The first two submissions of an episode (None when it submitted nothing usable)."""
    submitted = [s for s in acting_steps(traj, fields.roles, tally) if s.action and s.action.kind in SUBMIT_KINDS]
    if not submitted:
        return None

    def reward(step: Step) -> float:
        return step.reward if partial_credit else float(step.reward >= 1.0)

    def turn(step: Step) -> tuple[list[dict[str, str]], str]:
        return [m.model_dump() for m in step.messages], answer_text(step, fields.answers)

    first, second = submitted[0], submitted[1] if len(submitted) > 1 else None
    r1 = reward(first)
    return TwoAttempts(
        task_id=traj.task.id,
        trajectory_id=traj.id,
        first=turn(first),
        second=turn(second) if second is not None else None,
        r1=r1,
        r2=reward(second) if second is not None else r1,
    )


def returns(r1: float, r2: float, stage: int, alpha: float) -> tuple[float, float]:
    """``(G1, G2)``: what each attempt is trained towards (see the module docstring; stage I
    does not train the first attempt on reward, its ``G1`` is 0).

    Example:
        >>> returns(0.0, 1.0, 2, 10.0), returns(1.0, 0.0, 2, 10.0), returns(0.0, 1.0, 1, 10.0)
        ((1.0, 11.0), (1.0, -10.0), (0.0, 1.0))
    """
    if stage == 1:
        return 0.0, r2
    return r1 + r2, r2 + alpha * (r2 - r1)


def leave_one_out(values: Sequence[float], groups: Sequence[str]) -> list[float]:
    """Each value minus the mean of the other values in its group (0 for a group of one)."""
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for v, g in zip(values, groups, strict=True):
        total[g] += v
        count[g] += 1
    return [0.0 if count[g] == 1 else v - (total[g] - v) / (count[g] - 1) for v, g in zip(values, groups, strict=True)]


def score_loss(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, advantage: torch.Tensor, beta: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over turns of ``-A * sum(logp) + beta * mean((logp - ref_logp)^2 / 2)`` over each
    turn's answer tokens; ``logp``, ``ref_logp`` and ``mask`` are ``[turns, tokens]``.

    Example:
        >>> loss, _ = score_loss(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.0, -1.0]]),
        ...                      torch.tensor([[1.0, 1.0]]), torch.tensor([0.5]), torch.tensor([2.0]))
        >>> round(float(loss), 4)  # -0.5 * -3 + 2 * (0 + 0.5) / 2
        2.0
    """
    mask = mask.to(logp.dtype)
    n = mask.sum(-1).clamp_min(1)
    pg = -advantage * (logp * mask).sum(-1)
    kl = ((logp - ref_logp) ** 2 / 2 * mask).sum(-1) / n
    loss = (pg + beta * kl).mean()
    return loss, {
        "pg": float(pg.detach().mean()),
        "kl": float(kl.detach().mean()),
        "advantage": float(advantage.mean()),
    }


# --- the trainer -------------------------------------------------------------------------------


@dataclass
class SCoReTrainConfig(TrainFields, DataFields, TrainingArguments):  # type: ignore[misc]  # TrainFields retypes some defaults
    """How to run a SCoRe update: ``TrainingArguments``, the policy
    (:class:`~training.policy.TrainFields`), the episodes (:class:`~training.data.DataFields`;
    ``data`` is not used) and SCoRe's own settings."""

    learning_rates: ClassVar[tuple[float, float]] = (5e-5, 1e-6)

    stage: int = field(
        default=1, metadata={"help": "1: train the second attempt, hold the first; 2: both, with the bonus"}
    )
    alpha: float = field(
        default=10.0, metadata={"help": "stage II's shaping bonus alpha * (r2 - r1) on the second attempt"}
    )
    kl_first: float = field(default=1.0, metadata={"help": "stage I: KL weight holding the first attempt to the start"})
    kl: float = field(default=0.01, metadata={"help": "KL weight on every other trained turn"})
    partial_credit: bool = field(default=False, metadata={"help": "reward = share of hidden tests passed, not 0/1"})
    max_length: int = field(default=1024, metadata={"help": "turns longer than this many tokens are dropped"})
    num_train_epochs: float = 1.0  # on-policy: one pass over the episodes the policy just collected
    remove_unused_columns: bool = False
    prediction_loss_only: bool = True
    label_names: list[str] | None = field(default_factory=lambda: ["advantage"])
    include_num_input_tokens_seen: str | bool = "non_padding"

    def check_score(self) -> None:
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {self.stage}")
        if self.alpha < 0 or self.kl < 0 or self.kl_first < 0:
            raise ConfigError(f"alpha, kl and kl_first must be >= 0 (got {self.alpha}, {self.kl}, {self.kl_first})")

    def __post_init__(self) -> None:
        self.check_score()
        super().__post_init__()


def collate(pad_id: int) -> Any:
    def fn(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            **token_batch(rows, pad_id),
            "ref_logp": pad([r["ref_logp"] for r in rows], 0.0, torch.float32),
            "advantage": torch.tensor([r["advantage"] for r in rows], dtype=torch.float32),
            "beta": torch.tensor([r["beta"] for r in rows], dtype=torch.float32),
        }

    return fn


class SCoReTrainer(Trainer):
    """``Trainer`` whose loss is :func:`score_loss` on rows with ``advantage``, ``beta`` and the
    starting policy's per-token ``ref_logp`` beside the tokens."""

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        logp = token_logps(out.logits.float(), inputs["input_ids"], inputs["completion_mask"])
        mask = inputs["completion_mask"][:, 1:]
        ref = inputs["ref_logp"][:, : logp.shape[1]]
        loss, stats = score_loss(logp, ref, mask, inputs["advantage"], inputs["beta"])
        if model.training:
            self._stats = stats
        return (loss, out) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        stats = getattr(self, "_stats", None)
        if stats and "loss" in logs:
            logs.update({f"score/{k}": round(v, 4) for k, v in stats.items()})
        super().log(logs, *args, **kwargs)


def _reference_logps(model: Any, tokenizer: Any, tokenized: Sequence[dict[str, list[int]]]) -> list[list[float]]:
    """The starting policy's per-token log-probs of each turn (aligned with ``input_ids[1:]``)."""
    device = next(model.parameters()).device
    out: list[list[float]] = []
    model.eval()
    with torch.no_grad():
        for x in tokenized:
            ids = torch.tensor([x["input_ids"]], device=device)
            mask = torch.tensor([x["completion_mask"]], device=device)
            logits = model(input_ids=ids).logits.float()
            out.append(token_logps(logits, ids, mask)[0].tolist())
    model.train()
    return out


def prepare_score(config: SCoReTrainConfig, store: TrajectoryStore) -> TrainJob:
    """Check the name, gather the episodes' attempts, compute returns and leave-one-out
    advantages, read the starting policy's log-probs and build the trainer; train not yet.

    Raises:
        ConfigError: the checkpoint name is taken or malformed, or a run is not in the store.
        NothingToTrainError: no episode has a submission, or no task's episodes differ in
            outcome (every advantage is 0: nothing to learn from).
        ModelLoadError: the model cannot be loaded.
    """
    name = reserve_name(config, METHOD)
    tally = _Tally()
    pairs = [
        p
        for t in episodes(store, queries(config, store), tally)
        if (p := two_attempts(t, config, tally, partial_credit=config.partial_credit)) is not None
    ]
    if not pairs:
        raise NothingToTrainError(
            f"no submitted attempts in runs {config.run or 'all'} ({tally.trajectories} trajectories); "
            "collect code episodes with max_steps=2 first"
        )
    groups = [p.task_id for p in pairs]
    g = [returns(p.r1, p.r2, config.stage, config.alpha) for p in pairs]
    a1 = leave_one_out([x[0] for x in g], groups)
    a2 = leave_one_out([x[1] for x in g], groups)
    turns: list[tuple[TwoAttempts, tuple[list[dict[str, str]], str], float, float]] = []
    for p, adv1, adv2 in zip(pairs, a1, a2, strict=True):
        turns.append((p, p.first, adv1, config.kl_first if config.stage == 1 else config.kl))
        if p.second is not None:
            turns.append((p, p.second, adv2, config.kl))
    if all(adv == 0.0 for _, _, adv, _ in turns):
        raise NothingToTrainError(
            f"every task's {len(pairs)} episodes in runs {config.run or 'all'} have the same outcome: "
            "no advantage to learn from; sample more episodes per task (--samples 4)"
        )

    args = dataclasses.replace(config, checkpoint_name=name, output_dir=trainer_dir(name))
    model, tokenizer, base_model, parent, kind, new_adapter = load_policy(args)
    if new_adapter:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(args))  # type: ignore[assignment]  # B = 0: the starting policy
    tokenized = [
        tokenize_turns(tokenizer, [*msgs, {"role": "assistant", "content": answer}], [False] * len(msgs) + [True])
        for _, (msgs, answer), _, _ in turns
    ]
    keep = [len(x["input_ids"]) <= config.max_length and 1 in x["completion_mask"] for x in tokenized]
    tally.counts["turns_too_long"] = keep.count(False)
    kept = [(t, x) for t, x, ok in zip(turns, tokenized, keep, strict=True) if ok]
    if not kept:
        raise NothingToTrainError(f"every turn is longer than max_length={config.max_length}; raise it")
    ref = _reference_logps(model, tokenizer, [x for _, x in kept])
    rows = [
        {**x, "ref_logp": r, "advantage": adv, "beta": beta, "task_id": p.task_id, "trajectory_id": p.trajectory_id}
        for ((p, _, adv, beta), x), r in zip(kept, ref, strict=True)
    ]

    import datasets

    n = len(pairs)
    acc1, acc2 = sum(p.r1 for p in pairs) / n, sum(p.r2 for p in pairs) / n
    source = DataSource(
        kind=METHOD,
        runs=tuple(q.run_id for q in queries(config, store) if q.run_id is not None),
        suite=config.suite,
        filters={"stage": config.stage, "alpha": config.alpha, "partial_credit": config.partial_credit},
        counts={
            "trajectories": tally.trajectories,
            "episodes": n,
            "second_attempts": sum(p.second is not None for p in pairs),
            "tasks": len(set(groups)),
            **dict(sorted(tally.counts.items())),
            "examples": len(rows),
        },
    )
    trainer = SCoReTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        data_collator=collate(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )
    extra = {
        "acc_t1": acc1,
        "acc_t2": acc2,
        "delta_t1_t2": acc2 - acc1,
        "advantage_nonzero": float(sum(r["advantage"] != 0.0 for r in rows)),
    }
    return TrainJob(
        name=name,
        method=METHOD,
        trainer=trainer,
        examples=Examples(rows=rows, source=source),
        base_model=base_model,
        parent=parent,
        kind=kind,
        extra=extra,
    )


def train_score(config: SCoReTrainConfig, store: TrajectoryStore) -> Checkpoint:
    """Run a SCoRe update on the selected episodes and register the policy as a checkpoint.
    The same as ``run_job(prepare_score(config, store))``."""
    return run_job(prepare_score(config, store))
