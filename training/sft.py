"""Supervised fine-tuning on what agents lived through: successes, Agent-R revisions, role data.

Algorithm:
    1. Build the rows of the kinds in ``data`` (default ``success``; see :mod:`training.data`):
       ``success`` (rejection-sampling SFT, as in STaR), ``revision`` (Agent-R,
       :mod:`training.agent_r`), ``reviewer``, ``refiner``, ``world_model`` (one adapter per
       role: train each on its own kind, from the same episodes). Kinds listed together are
       mixed, as Agent-R mixes revision and successful trajectories.
    2. Tokenize each row with the tokenizer's chat template (:func:`training.data.tokenize_turns`):
       the prompt of every assistant turn is rendered exactly as
       :class:`agents.llm.hf_local.TransformersChatModel` renders it at inference, and only the
       trained turns (their tokens and end-of-turn marker) carry loss — an Agent-R row's bad
       turns do not.
    3. Fine-tune with TRL's ``SFTTrainer`` on those ids and masks (negative log-likelihood on
       the masked tokens). By default a LoRA adapter on every linear layer is trained; a
       checkpoint given as ``model`` continues training its adapter.
    4. :func:`training.policy.run_job`: loss before and after, save, register the checkpoint.

Run it:
    autodidact train --method sft --run RUN [--model embedded|CHECKPOINT] [--set data=[revision,success]]

or from Python:
    >>> ckpt = train_sft(SFTTrainConfig(run="abc123"), open_store())  # doctest: +SKIP
    >>> ckpt.name, ckpt.metrics.loss_before, ckpt.metrics.loss_after  # doctest: +SKIP
    ('sft-20261122-103000-ab12', 0.93, 0.41)

Speed on 2 CPU cores, embedded 135M model, LoRA, batch 8 of short code answers (~500 tokens a
step): ~115 tokens/s on idle cores (ENVIRONMENT.md), ~30 tokens/s (17 s a step) when shared with
other work; peak memory ~3.7 GB (TRL computes the loss without materialising full logits).
``benchmarks/train.py`` measures this path against a plain TRL ``SFTTrainer`` call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trl import SFTConfig

from training.checkpoints import Checkpoint
from training.data import DataFields, Examples, build_examples, tokenize_turns
from training.policy import TrainFields, TrainJob, load_policy, lora_config, reserve_name, run_job, trainer_dir

if TYPE_CHECKING:
    import datasets

    from agents.llm.base import ChatModel
    from memory.base import TrajectoryStore

METHOD = "sft"


@dataclass
class SFTTrainConfig(TrainFields, DataFields, SFTConfig):  # type: ignore[misc]  # TrainFields retypes some defaults
    """How to fine-tune: TRL's ``SFTConfig``, plus the policy (:class:`~training.policy.TrainFields`)
    and the data (:class:`~training.data.DataFields`)."""

    max_length: int | None = 1024
    completion_only_loss: bool | None = True
    assistant_only_loss: bool = False


def tokenized(
    examples: Examples, tokenizer: object, max_length: int | None = None
) -> tuple[datasets.Dataset, dict[str, float]]:
    """The rows as ``input_ids`` and ``completion_mask`` (see :func:`training.data.tokenize_turns`),
    and what fitting them to ``max_length`` did: a revision row that is too long is cut in its
    bad part (:func:`training.agent_r.fit_row`); what is still too long the trainer truncates."""
    import datasets

    from training.agent_r import fit_row

    rows, cut = [], 0
    for r in examples.rows:
        x = tokenize_turns(tokenizer, r["messages"], r["train"])
        if max_length and len(x["input_ids"]) > max_length and r.get("bad"):
            fitted = fit_row(tokenizer, r["messages"], r["train"], r["bad"], max_length)
            if fitted is not None:
                x, cut = tokenize_turns(tokenizer, *fitted), cut + 1
        rows.append(x)
    longer = sum(len(x["input_ids"]) > max_length for x in rows) if max_length else 0
    return datasets.Dataset.from_list(rows), {"rows_cut_in_bad_part": float(cut), "rows_truncated": float(longer)}


def prepare_sft(config: SFTTrainConfig, store: TrajectoryStore, *, verifier: ChatModel | None = None) -> TrainJob:
    """Check the name, build the data, load the policy and build the ``SFTTrainer``; train nothing.

    Checks the checkpoint name and builds the data before loading the model, so a mistake costs
    seconds, not a model load. ``verifier`` replaces the model ``revision`` data asks.

    Raises:
        ConfigError: the checkpoint name is taken or malformed, or a run is not in the store.
        NothingToTrainError: the selected runs give no rows of the chosen kinds.
        ModelLoadError: the model cannot be loaded.

    Example:
        >>> job = prepare_sft(SFTTrainConfig(run="abc123"), open_store())  # doctest: +SKIP
        >>> batch = next(iter(job.trainer.get_train_dataloader()))  # doctest: +SKIP
    """
    name = reserve_name(config, METHOD)
    examples = build_examples(config, store, verifier=verifier)
    args = dataclasses.replace(config, checkpoint_name=name, output_dir=trainer_dir(name))
    model, tokenizer, base_model, parent, kind, new_adapter = load_policy(args)
    data, fitting = tokenized(examples, tokenizer, args.max_length)

    from trl import SFTTrainer

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(args) if new_adapter else None,
    )
    return TrainJob(
        name=name,
        method=METHOD,
        trainer=trainer,
        examples=examples,
        base_model=base_model,
        parent=parent,
        kind=kind,
        extra=fitting,
    )


def train_sft(config: SFTTrainConfig, store: TrajectoryStore) -> Checkpoint:
    """Fine-tune ``config.model`` on the selected episodes in ``store`` and register a checkpoint.

    The same as ``run_job(prepare_sft(config, store))``.

    Raises:
        ConfigError: the checkpoint name is taken or malformed, or a run is not in the store.
        NothingToTrainError: the selected runs give no rows of the chosen kinds.
        ModelLoadError: the model cannot be loaded.

    Example:
        >>> ckpt = train_sft(SFTTrainConfig(run="abc123", max_steps=10), open_store())  # doctest: +SKIP
        >>> resolve_model(ckpt.name).build()  # doctest: +SKIP
    """
    return run_job(prepare_sft(config, store))
