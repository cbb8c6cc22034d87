"""REINFORCE with a leave-one-out baseline and a KL term: the update SCoRe and CoMAS share.

A method gives :func:`reinforce_job` the turns to train — each the messages a call was sent,
the answer, its advantage and the weight of its KL term — and gets back a prepared
:class:`~training.policy.TrainJob`: the policy loaded (a new LoRA adapter, or a checkpoint's
own), the turns tokenized (longer than ``max_length``: dropped and counted), the starting
policy's per-token log-probs read once, and a ``Trainer`` whose loss is :func:`reinforce_loss`.

Example:
    >>> leave_one_out([1.0, 0.0, 0.0, 1.0], ["a", "a", "b", "b"])
    [1.0, -1.0, -1.0, 1.0]
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Trainer

from autodidact.errors import NothingToTrainError
from training.checkpoints import DataSource
from training.data import Examples, _Tally, tokenize_turns
from training.policy import TrainJob, load_policy, lora_config, pad, token_batch, token_logps, trainer_dir


@dataclass(frozen=True)
class Turn:
    """A model call to train: what it was sent, its answer, and how to weigh it."""

    messages: list[dict[str, str]]
    answer: str
    advantage: float
    beta: float  # the KL term's weight on this turn
    task_id: str
    trajectory_id: str


def leave_one_out(values: Sequence[float], groups: Sequence[str]) -> list[float]:
    """Each value minus the mean of the other values in its group (0 for a group of one)."""
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for v, g in zip(values, groups, strict=True):
        total[g] += v
        count[g] += 1
    return [0.0 if count[g] == 1 else v - (total[g] - v) / (count[g] - 1) for v, g in zip(values, groups, strict=True)]


def reinforce_loss(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, advantage: torch.Tensor, beta: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over turns of ``-A * sum(logp) + beta * sum((logp - ref_logp)^2 / 2)``, both sums
    over the turn's answer tokens: the k2 estimate of the answer's KL to the starting policy,
    a sequence-level KL on the same scale as the policy term (a per-token mean would weaken it
    by the answer's length); ``logp``, ``ref_logp`` and ``mask`` are ``[turns, tokens]``.

    Example:
        >>> loss, _ = reinforce_loss(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.0, -1.0]]),
        ...                          torch.tensor([[1.0, 1.0]]), torch.tensor([0.5]), torch.tensor([2.0]))
        >>> round(float(loss), 4)  # -0.5 * -3 + 2 * (0 + 0.5)
        2.5
    """
    mask = mask.to(logp.dtype)
    pg = -advantage * (logp * mask).sum(-1)
    kl = ((logp - ref_logp) ** 2 / 2 * mask).sum(-1)
    loss = (pg + beta * kl).mean()
    return loss, {
        "pg": float(pg.detach().mean()),
        "kl": float(kl.detach().mean()),
        "advantage": float(advantage.mean()),
    }


def collate(pad_id: int) -> Any:
    def fn(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            **token_batch(rows, pad_id),
            "ref_logp": pad([r["ref_logp"] for r in rows], 0.0, torch.float32),
            "advantage": torch.tensor([r["advantage"] for r in rows], dtype=torch.float32),
            "beta": torch.tensor([r["beta"] for r in rows], dtype=torch.float32),
        }

    return fn


class StatsTrainer(Trainer):
    """A ``Trainer`` whose ``compute_loss`` measures more than the loss: what it passes to
    :meth:`keep` on a training step is logged beside the loss, under ``prefix/``."""

    def __init__(self, *args: Any, prefix: str = "rl", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prefix = prefix
        self._stats: dict[str, float] = {}

    def keep(self, model: Any, stats: dict[str, float]) -> None:
        if model.training:
            self._stats = stats

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._stats and "loss" in logs:
            logs.update({f"{self.prefix}/{k}": round(v, 4) for k, v in self._stats.items()})
        super().log(logs, *args, **kwargs)


class ReinforceTrainer(StatsTrainer):
    """``Trainer`` whose loss is :func:`reinforce_loss` on rows with ``advantage``, ``beta`` and
    the starting policy's per-token ``ref_logp`` beside the tokens."""

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        logp = token_logps(out.logits.float(), inputs["input_ids"], inputs["completion_mask"])
        mask = inputs["completion_mask"][:, 1:]
        ref = inputs["ref_logp"][:, : logp.shape[1]]
        loss, stats = reinforce_loss(logp, ref, mask, inputs["advantage"], inputs["beta"])
        self.keep(model, stats)
        return (loss, out) if return_outputs else loss


def reference_logps(model: Any, tokenized: Sequence[dict[str, list[int]]]) -> list[list[float]]:
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


def reinforce_job(
    config: Any,
    name: str,
    method: str,
    turns: Sequence[Turn],
    tally: _Tally,
    source: DataSource,
    extra: dict[str, float],
) -> TrainJob:
    """Load the policy ``config`` names, tokenize ``turns``, read the reference log-probs and
    build the trainer (``config``: a method's config with :class:`~training.policy.TrainFields`,
    ``TrainingArguments`` and ``max_length``). ``source.counts`` gains ``turns_too_long`` and
    ``examples``.

    Raises:
        NothingToTrainError: every turn is longer than ``max_length``.
        ModelLoadError: the model cannot be loaded.
    """
    args = dataclasses.replace(config, checkpoint_name=name, output_dir=trainer_dir(name))
    model, tokenizer, base_model, parent, kind, new_adapter = load_policy(args)
    if new_adapter:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(args))  # type: ignore[assignment]  # B = 0: the starting policy
    tokenized = [
        tokenize_turns(
            tokenizer, [*t.messages, {"role": "assistant", "content": t.answer}], [False] * len(t.messages) + [True]
        )
        for t in turns
    ]
    keep = [len(x["input_ids"]) <= config.max_length and 1 in x["completion_mask"] for x in tokenized]
    tally.counts["turns_too_long"] = keep.count(False)
    kept = [(t, x) for t, x, ok in zip(turns, tokenized, keep, strict=True) if ok]
    if not kept:
        raise NothingToTrainError(f"every turn is longer than max_length={config.max_length}; raise it")
    ref = reference_logps(model, [x for _, x in kept])
    rows = [
        {
            **x,
            "ref_logp": r,
            "advantage": t.advantage,
            "beta": t.beta,
            "task_id": t.task_id,
            "trajectory_id": t.trajectory_id,
        }
        for (t, x), r in zip(kept, ref, strict=True)
    ]

    import datasets

    counts = {**source.counts, "turns_too_long": tally.counts["turns_too_long"], "examples": len(rows)}
    trainer = ReinforceTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        data_collator=collate(tokenizer.pad_token_id),
        processing_class=tokenizer,
        prefix=method,
    )
    return TrainJob(
        name=name,
        method=method,
        trainer=trainer,
        examples=Examples(rows=rows, source=source.model_copy(update={"counts": counts})),
        base_model=base_model,
        parent=parent,
        kind=kind,
        extra={**extra, "advantage_nonzero": float(sum(r["advantage"] != 0.0 for r in rows))},
    )
