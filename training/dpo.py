"""Direct preference optimisation on what agents lived through: success over failure, same prefix.

Algorithm:
    1. Build preference pairs (:func:`training.data.dpo_rows`): at one task and the exact same
       prompt (the messages an acting step was sent, so the same prefix of the episode), a
       completion from a successful episode is ``chosen`` and one from a failed episode
       ``rejected``; at most ``max_pairs_per_prompt`` pairs a prompt. Samples of one task share
       their first prompt; an ``mcts`` tree's paths share every prompt up to where they part.
    2. Fine-tune with TRL's ``DPOTrainer`` (sigmoid loss, ``beta`` 0.1 by default). The
       reference policy is the one training starts from: a new LoRA adapter is measured against
       the base with the adapter off; a checkpoint's adapter against a frozen copy of itself
       (TRL's ``ref`` adapter); a full fine-tune against a frozen copy of the model.
    3. :func:`training.policy.run_job`: DPO loss and reward accuracy before and after, save,
       register the checkpoint (``method="dpo"``, ``parent`` when started from one).

Run it:
    autodidact train --method dpo --run RUN [--model CHECKPOINT] [--set beta=0.2 max_steps=50]

Example:
    >>> ckpt = train_dpo(DPOTrainConfig(run="abc123", max_steps=20), open_store())  # doctest: +SKIP
    >>> ckpt.metrics.extra["rewards_accuracies_after"]  # doctest: +SKIP
    0.75
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from trl import DPOConfig

from training.checkpoints import Checkpoint
from training.data import DataFields, build_examples
from training.policy import TrainFields, TrainJob, load_policy, lora_config, reserve_name, run_job, trainer_dir

if TYPE_CHECKING:
    from memory.base import TrajectoryStore

METHOD = "dpo"


@dataclass
class DPOTrainConfig(TrainFields, DataFields, DPOConfig):  # type: ignore[misc]  # TrainFields retypes some defaults
    """How to train on preferences: TRL's ``DPOConfig``, plus the policy
    (:class:`~training.policy.TrainFields`) and the data (:class:`~training.data.DataFields`;
    ``data`` is not used: the rows are always preference pairs)."""

    learning_rates: ClassVar[tuple[float, float]] = (5e-5, 1e-6)


def prepare_dpo(config: DPOTrainConfig, store: TrajectoryStore) -> TrainJob:
    """Check the name, build the pairs, load the policy and build the ``DPOTrainer``; train nothing.

    Raises:
        ConfigError: the checkpoint name is taken or malformed, or a run is not in the store.
        NothingToTrainError: no prompt has both a successful and a failed completion.
        ModelLoadError: the model cannot be loaded.
    """
    import datasets
    from trl import DPOTrainer

    name = reserve_name(config, METHOD)
    examples = build_examples(config, store, "dpo")
    args = dataclasses.replace(config, checkpoint_name=name, output_dir=trainer_dir(name))
    model, tokenizer, base_model, parent, kind, new_adapter = load_policy(args)
    ref = copy.deepcopy(model).eval().requires_grad_(False) if args.full_finetune else None
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in examples.rows]
    trainer = DPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(args) if new_adapter else None,
    )
    return TrainJob(
        name=name, method=METHOD, trainer=trainer, examples=examples, base_model=base_model, parent=parent, kind=kind
    )


def train_dpo(config: DPOTrainConfig, store: TrajectoryStore) -> Checkpoint:
    """Train ``config.model`` on preference pairs from ``store`` and register a checkpoint.

    The same as ``run_job(prepare_dpo(config, store))``.
    """
    return run_job(prepare_dpo(config, store))
