"""What every trainer shares: the policy to start from, LoRA or full weights, and the run that
trains, measures, saves and registers a checkpoint.

A trainer (:mod:`training.sft`, :mod:`training.dpo`) is a TRL config subclass that also
inherits :class:`TrainFields` (what to train) and :class:`~training.data.DataFields` (what to
learn from), a ``prepare_*`` function that builds the TRL trainer into a :class:`TrainJob`,
and :func:`run_job`, which runs it:

1. the mean loss on the training rows before (one no-grad pass);
2. ``trainer.train()`` — a progress bar, and resumable: with ``save_strategy=steps`` the
   trainer's states go to ``<checkpoint dir>/trainer/``; run the same command again with
   ``resume_from_checkpoint=true`` (and the same ``checkpoint_name``) after a crash: it goes on
   from the last state saved whole (:func:`resume_point`);
3. the mean loss after, then the adapter (or the full model) and tokenizer are saved to
   ``<checkpoint dir>/model/`` and registered with lineage, data sources, config and metrics.

Example:
    >>> job = prepare_sft(SFTTrainConfig(run="abc123"), store)  # doctest: +SKIP
    >>> ckpt = run_job(job)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from autodidact.errors import ConfigError
from training.checkpoints import (
    RECORD_FILE,
    WEIGHTS_DIR,
    Checkpoint,
    Kind,
    TrainMetrics,
    checkpoint_dir,
    find_checkpoint,
    new_checkpoint_name,
    register_checkpoint,
)

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

    from training.data import Examples

TRAINER_DIR = "trainer"  # under the checkpoint dir: trainer states when save_strategy saves any


@dataclass
class TrainFields:
    """The policy to train and how; with the defaults of ``TrainingArguments`` fields that differ here.

    Defaults suit a small model on CPU; ``bf16`` turns on by itself on a GPU that supports it.
    Every other ``TrainingArguments`` field works too (YAML or ``key=value``).
    """

    # (LoRA, full fine-tune) learning rates when learning_rate is None; a trainer may change them
    learning_rates: ClassVar[tuple[float, float]] = (2e-4, 2e-5)

    model: str = field(default="embedded", metadata={"help": "'embedded', a model dir, an HF id or a checkpoint name"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: str | list[str] = field(
        default="all-linear", metadata={"help": "'all-linear' or module names such as ['q_proj', 'v_proj']"}
    )
    full_finetune: bool = field(default=False, metadata={"help": "train every weight instead of a LoRA adapter"})
    checkpoint_name: str | None = field(default=None, metadata={"help": "name to register; None: generated"})

    learning_rate: float | None = field(  # type: ignore[assignment]
        default=None, metadata={"help": "None: 2e-4 for LoRA, 2e-5 for a full fine-tune (SFT)"}
    )
    num_train_epochs: float = 2.0
    # A step is 8 rows. On CPU one row at a time (8 accumulated): rows vary in length and
    # padding a batch of 8 to its longest made training 1.9x slower (benchmarks/train.py --padding).
    per_device_train_batch_size: int | None = field(  # type: ignore[assignment]
        default=None, metadata={"help": "None: 8 on a GPU, 1 on CPU"}
    )
    gradient_accumulation_steps: int | None = field(  # type: ignore[assignment]
        default=None, metadata={"help": "None: 8 // per_device_train_batch_size (a step is 8 rows)"}
    )
    per_device_eval_batch_size: int | None = field(  # type: ignore[assignment]
        default=None, metadata={"help": "None: per_device_train_batch_size"}
    )
    logging_steps: float = 1
    save_strategy: str = "no"
    report_to: str | list[str] | None = "none"
    bf16: bool | None = None
    dataloader_pin_memory: bool | None = None
    loss_rows: int | None = field(
        default=32, metadata={"help": "loss before/after: the mean over this many rows spread over the data; None: all"}
    )
    # Off (TRL turns it on): a small model on CPU needs no rematerialization, and it costs ~20-30% speed.
    gradient_checkpointing: bool | None = None

    def __post_init__(self) -> None:
        import torch

        if self.learning_rate is None:
            lora, full = self.learning_rates
            self.learning_rate = full if self.full_finetune else lora
        if self.per_device_train_batch_size is None:
            self.per_device_train_batch_size = 8 if torch.cuda.is_available() else 1
        if self.gradient_accumulation_steps is None:
            self.gradient_accumulation_steps = max(1, 8 // self.per_device_train_batch_size)
        if self.per_device_eval_batch_size is None:
            self.per_device_eval_batch_size = self.per_device_train_batch_size
        if self.bf16 is None:
            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()) and not self.fp16  # type: ignore[attr-defined]
        if self.dataloader_pin_memory is None:  # pinning only helps copies to a GPU; on CPU it warns
            self.dataloader_pin_memory = torch.cuda.is_available()
        if distributed() and not torch.cuda.is_available():
            self.use_cpu = True  # several processes without GPUs: data parallel over gloo
        check = getattr(self, "check_data", None)
        if check is not None:
            check()
        super().__post_init__()  # type: ignore[misc]


@dataclass
class TrainJob:
    """A prepared training run: the TRL trainer (model, data, collator) and what to record."""

    name: str
    method: str
    trainer: Trainer
    examples: Examples
    base_model: str
    parent: str | None
    kind: Kind
    extra: dict[str, float] = field(default_factory=dict)


def trainer(method: str) -> tuple[Callable[..., Checkpoint], type[Any]]:
    """The registered trainer ``method`` (``sft``, ``dpo``, ``webrl``…) and its config class
    (the type of its ``config`` parameter)."""
    import inspect

    from autodidact import registry

    fn = registry.load("trainer", method)
    hint = inspect.signature(fn).parameters["config"].annotation
    return fn, fn.__globals__[hint] if isinstance(hint, str) else hint


def distributed() -> bool:
    """Whether this process is one of several training together (``accelerate launch``, ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def reserve_name(config: TrainFields, method: str) -> str:
    """The checkpoint name to train into (given or generated); a taken name is a ConfigError.

    Launched as several processes, the first one chooses and checks the name and tells the others.
    """
    if not distributed():
        return _reserve_name(config, method)
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    getattr(config, "device", None)  # the trainer's arguments set up the process group (gloo on CPU)
    box: list[Any] = [None]
    if PartialState().is_main_process:
        try:
            box = [_reserve_name(config, method)]
        except ConfigError as e:
            box = [e]
    broadcast_object_list(box)
    if isinstance(box[0], ConfigError):
        raise box[0]
    return str(box[0])


def _reserve_name(config: TrainFields, method: str) -> str:
    name = config.checkpoint_name or new_checkpoint_name(method)
    where = checkpoint_dir(name)
    if (where / RECORD_FILE).exists():
        raise ConfigError(f"checkpoint {name!r} already exists at {where}; choose another checkpoint_name")
    return name


def trainer_dir(name: str) -> str:
    """Where the trainer keeps its states (``output_dir``) for checkpoint ``name``."""
    return str(checkpoint_dir(name) / TRAINER_DIR)


def load_policy(
    config: TrainFields,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str, str | None, Kind, bool]:
    """Load what training starts from: ``(model, tokenizer, base_model, parent, kind, new_adapter)``.

    A LoRA checkpoint continues training its own adapter (same rank and targets), or is merged
    into its base for a full fine-tune; a full checkpoint is a base model like any other.

    Raises:
        ModelLoadError: the model cannot be loaded.
    """
    from agents.llm.hf_local import load_model_and_tokenizer

    kind: Kind = "full" if config.full_finetune else "lora"
    device = _device()
    parent = find_checkpoint(config.model) if config.model != "embedded" else None
    if parent is None:
        model, tok = load_model_and_tokenizer(config.model, device=device, trainable=True)
        return model, tok, config.model, None, kind, not config.full_finetune
    path, adapter = parent.load_spec()
    model, tok = load_model_and_tokenizer(path, adapter, device=device, trainable=True)
    if adapter is None:  # a full checkpoint: its weights are the base
        return model, tok, path, parent.name, kind, not config.full_finetune
    if config.full_finetune:
        model = model.merge_and_unload()  # type: ignore[operator]
        model.requires_grad_(True)  # PEFT froze the base weights; a full fine-tune trains them all
        return model, tok, parent.base_model, parent.name, kind, False
    return model, tok, parent.base_model, parent.name, kind, False


def _device() -> str:
    """Where this process loads the policy: its own GPU when launched as one of several."""
    import torch

    if distributed() and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu" if distributed() else "auto"


def lora_config(config: TrainFields) -> LoraConfig:
    """The LoRA adapter a new run trains."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def run_job(job: TrainJob) -> Checkpoint:
    """Train a prepared job, measuring the loss before and after; save and register the checkpoint."""
    trainer = job.trainer
    args = trainer.args
    before = _evaluate(trainer)
    started = time.perf_counter()
    resume = args.resume_from_checkpoint
    if resume is True or (isinstance(resume, str) and resume.lower() == "true"):
        resume = resume_point(job.name)  # None: nothing complete was saved, so it starts over
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    after = _evaluate(trainer)

    weights = checkpoint_dir(job.name) / WEIGHTS_DIR
    main = trainer.is_world_process_zero()  # launched as several processes, the first one writes
    if main:
        shutil.rmtree(weights, ignore_errors=True)  # leftovers of a crashed run under the same name
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(weights))  # the adapter (or full model), plus the tokenizer; every process takes part
    if not main:
        trainer.accelerator.wait_for_everyone()  # for the first one to register the checkpoint
        found = find_checkpoint(job.name)
        assert found is not None, f"checkpoint {job.name} was not registered by the main process"
        return found
    _remove_if_empty(checkpoint_dir(job.name) / TRAINER_DIR)  # holds something only if states were saved
    extra = dict(job.extra)
    if args.world_size > 1:
        extra["processes"] = float(args.world_size)  # trained together (accelerate launch, torchrun)
    for key in ("mean_token_accuracy", "rewards/accuracies", "rewards/margins"):
        for when, values in (("before", before), ("after", after)):
            value = values.get(f"eval_{key}")
            if value is not None:
                extra[f"{key.replace('/', '_')}_{when}"] = float(value)
    metrics = TrainMetrics(
        loss_before=before.get("eval_loss"),
        loss_after=after.get("eval_loss"),
        train_loss=result.metrics.get("train_loss"),
        examples=len(job.examples.rows),
        tokens=_tokens_trained(trainer),
        steps=result.global_step,
        seconds=round(seconds, 3),
        extra=extra,
    )
    ckpt = register_checkpoint(
        job.name,
        weights,
        kind=job.kind,
        base_model=job.base_model,
        parent=job.parent,
        method=job.method,
        datasets=[job.examples.source],
        config=args.to_dict(),
        metrics=metrics,
    )
    if distributed():
        trainer.accelerator.wait_for_everyone()
    return ckpt


def resume_point(name: str) -> str | None:
    """The last complete trainer state saved for checkpoint ``name``, or None.

    The trainer writes ``trainer_state.json`` last; a state dir without a readable one was cut
    off by a crash while saving, and is removed (resuming from it would fail).
    """
    import json

    states = checkpoint_dir(name) / TRAINER_DIR
    if not states.is_dir():
        return None
    complete = []
    for d in states.glob("checkpoint-*"):
        try:
            json.loads((d / "trainer_state.json").read_text())
            complete.append((int(d.name.rsplit("-", 1)[1]), d))
        except (OSError, ValueError):
            shutil.rmtree(d, ignore_errors=True)
    return str(max(complete)[1]) if complete else None


def _evaluate(trainer: Trainer) -> dict[str, float]:
    """Mean loss over (``loss_rows`` rows spread over) the tokenized training set, without gradients."""
    data: Any = trainer.train_dataset
    rows = getattr(trainer.args, "loss_rows", None)
    if rows is not None and len(data) > rows:
        picked = [i * len(data) // rows for i in range(rows)]
        data = data.select(picked) if hasattr(data, "select") else [data[i] for i in picked]
    return trainer.evaluate(eval_dataset=data, metric_key_prefix="eval")


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):  # not empty, or already gone
        path.rmdir()


def _tokens_trained(trainer: Trainer) -> int:
    # TRL logs a running count of the non-padding tokens it trained on; a plain Trainer does with
    # include_num_input_tokens_seen.
    counts = [
        int(log.get("num_tokens", log.get("num_input_tokens_seen", 0)))
        for log in trainer.state.log_history
        if "num_tokens" in log or "num_input_tokens_seen" in log
    ]
    return max(counts, default=0)


def pad(seqs: Sequence[Sequence[float]], value: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rows of different lengths as one tensor, right-padded with ``value``."""
    import torch

    width = max(len(s) for s in seqs)
    return torch.tensor([list(s) + [value] * (width - len(s)) for s in seqs], dtype=dtype)


def token_batch(rows: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``completion_mask`` of tokenized rows, right-padded:
    what a trainer's collator gives the model (the method adds its own columns)."""
    return {
        "input_ids": pad([r["input_ids"] for r in rows], pad_id),
        "attention_mask": pad([[1] * len(r["input_ids"]) for r in rows], 0),
        "completion_mask": pad([r["completion_mask"] for r in rows], 0),
    }


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """``[rows, length - 1]``: the log-prob of each answer token (where ``completion_mask`` is 1,
    at the position that predicts it), 0 elsewhere; only those positions are normalized, so the
    full vocabulary's log-softmax is never materialized for the prompt."""
    import torch

    mask = completion_mask[:, 1:].bool()
    picked = logits[:, :-1][mask]  # [n, vocab]
    targets = input_ids[:, 1:][mask]
    out = torch.zeros(mask.shape, dtype=logits.dtype, device=logits.device)
    out[mask] = picked.gather(-1, targets[:, None]).squeeze(-1) - picked.logsumexp(-1)
    return out
