"""Supervised fine-tuning on the agent's own successful episodes (rejection-sampling SFT, as in STaR).

Algorithm:
    1. Select the episodes of the given run(s) (and suite) that succeeded: ``success`` is set
       (or, with ``min_reward``, ``reward >= min_reward``) and the episode has no error.
    2. Every step of an acting role (``roles``, default ``solver``) that has a completion and
       no error gives one example: the messages the model was sent are the prompt, its raw
       completion is the answer. Examples are deduplicated by (prompt, completion) and sorted
       by task, prompt and completion, so the same data gives the same dataset however the
       episodes were interleaved when they were stored.
    3. Fine-tune the policy with TRL's ``SFTTrainer`` on the conversational prompt-completion
       rows: negative log-likelihood on the completion tokens only (the assistant turn plus its
       end-of-turn token). The prompt is rendered by the tokenizer's own chat template with the
       generation prompt, exactly as :class:`agents.llm.hf_local.TransformersChatModel` renders
       it at inference. By default a LoRA adapter on every linear layer is trained; a
       checkpoint given as ``model`` continues training its adapter.
    4. Measure the mean loss on the training examples before and after (one no-grad pass
       each), save the adapter (or the full model) and the tokenizer, and register a
       checkpoint with its lineage, data sources, config and metrics.

Run it:
    autodidact train --method sft --run RUN [--model embedded|CHECKPOINT] [key=value ...]

or from Python:
    >>> from memory.base import open_store
    >>> ckpt = train_sft(SFTTrainConfig(run="abc123"), open_store())  # doctest: +SKIP
    >>> ckpt.name, ckpt.metrics.loss_before, ckpt.metrics.loss_after  # doctest: +SKIP
    ('sft-20261122-103000-ab12', 0.93, 0.41)

Speed on 2 CPU cores, embedded 135M model, LoRA, batch 8 of short code answers (~500 tokens a
step): ~115 tokens/s on idle cores (ENVIRONMENT.md), ~30 tokens/s (17 s a step) when shared with
other work; peak memory ~3.7 GB (TRL computes the loss without materialising full logits).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trl import SFTConfig

from autodidact.errors import ConfigError, NothingToTrainError
from memory.base import TrajectoryQuery, TrajectoryStore
from training.checkpoints import (
    RECORD_FILE,
    WEIGHTS_DIR,
    Checkpoint,
    DataSource,
    Kind,
    TrainMetrics,
    checkpoint_dir,
    find_checkpoint,
    new_checkpoint_name,
    register_checkpoint,
)

if TYPE_CHECKING:
    import datasets
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import SFTTrainer

METHOD = "sft"
TRAINER_DIR = "trainer"  # under the checkpoint dir: trainer states when save_strategy saves any
LORA_LEARNING_RATE = 2e-4
FULL_LEARNING_RATE = 2e-5


@dataclass
class SFTTrainConfig(SFTConfig):
    """How to fine-tune on successful episodes: TRL's ``SFTConfig`` plus what to learn from.

    Every ``transformers.TrainingArguments`` / ``SFTConfig`` field works too (set it in the
    YAML file or as ``key=value``). Defaults here suit a small model on CPU; ``bf16`` turns on
    by itself on a GPU that supports it.
    """

    model: str = field(default="embedded", metadata={"help": "'embedded', a model dir, an HF id or a checkpoint name"})
    run: str | list[str] | None = field(default=None, metadata={"help": "run id(s) (or unique prefixes); None: all"})
    suite: str | None = field(default=None, metadata={"help": "only episodes of this task suite"})
    min_reward: float | None = field(
        default=None, metadata={"help": "keep episodes with reward >= this instead of those marked successful"}
    )
    roles: list[str] = field(default_factory=lambda: ["solver"], metadata={"help": "acting roles to learn from"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: str | list[str] = field(
        default="all-linear", metadata={"help": "'all-linear' or module names such as ['q_proj', 'v_proj']"}
    )
    full_finetune: bool = field(default=False, metadata={"help": "train every weight instead of a LoRA adapter"})
    checkpoint_name: str | None = field(default=None, metadata={"help": "name to register; None: generated"})

    # TrainingArguments / SFTConfig fields whose defaults differ here.
    learning_rate: float | None = field(  # type: ignore[assignment]
        default=None, metadata={"help": f"None: {LORA_LEARNING_RATE} for LoRA, {FULL_LEARNING_RATE} for full"}
    )
    num_train_epochs: float = 2.0
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    logging_steps: float = 1
    save_strategy: str = "no"  # type: ignore[assignment]
    report_to: str | list[str] | None = "none"
    bf16: bool | None = None  # type: ignore[assignment]
    dataloader_pin_memory: bool | None = None  # type: ignore[assignment]
    # Off (TRL turns it on): a small model on CPU needs no rematerialization, and it costs ~20-30% speed.
    gradient_checkpointing: bool | None = None  # type: ignore[assignment]
    max_length: int | None = 1024
    completion_only_loss: bool | None = True
    assistant_only_loss: bool = False

    def __post_init__(self) -> None:
        import torch

        if self.learning_rate is None:
            self.learning_rate = FULL_LEARNING_RATE if self.full_finetune else LORA_LEARNING_RATE
        if self.bf16 is None:
            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()) and not self.fp16
        if self.dataloader_pin_memory is None:  # pinning only helps copies to a GPU; on CPU it warns
            self.dataloader_pin_memory = torch.cuda.is_available()
        if isinstance(self.run, str):
            self.run = [self.run]
        if not self.roles:
            raise ValueError("roles must name at least one acting role, e.g. roles=[solver]")
        super().__post_init__()


@dataclass(frozen=True)
class SFTExamples:
    """The rows of an SFT dataset and how they were selected."""

    rows: list[dict[str, Any]]
    source: DataSource


def collect_sft_examples(
    store: TrajectoryStore,
    query: TrajectoryQuery | Sequence[TrajectoryQuery],
    *,
    min_reward: float | None = None,
    roles: Sequence[str] = ("solver",),
) -> SFTExamples:
    """Select successful episodes and turn their acting steps into prompt-completion rows.

    Each row is ``{"prompt": [messages...], "completion": [{"role": "assistant", "content": ...}],
    "task_id": ..., "trajectory_id": ...}``. The query's own ``success`` filter is replaced:
    episodes count as successful by their ``success`` flag, or by ``reward >= min_reward``
    when ``min_reward`` is given; episodes with an error never count.

    Raises:
        NothingToTrainError: no example survives; the message names the runs and the counts.

    Example:
        >>> ex = collect_sft_examples(store, TrajectoryQuery(run_id="abc123"))  # doctest: +SKIP
        >>> ex.source.counts  # doctest: +SKIP
        {'trajectories': 12, 'selected': 5, 'examples': 5, 'duplicates': 0, 'skipped_steps': 0}
    """
    queries = [query] if isinstance(query, TrajectoryQuery) else list(query)
    acting = set(roles)
    total = selected = duplicates = skipped = 0
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for q in queries:
        total += store.count(q.model_copy(update={"success": None}))
        wanted = q.model_copy(update={"success": True if min_reward is None else None})
        for traj in store.query(wanted):
            ok = traj.success if min_reward is None else traj.reward >= min_reward
            if not ok or traj.error is not None:
                continue
            selected += 1
            for step in traj.steps:
                if step.role not in acting or (step.action is not None and step.observation is None):
                    continue  # another role, or a candidate the graph did not act on
                if step.error is not None or not step.completion or not step.messages:
                    skipped += 1
                    continue
                prompt = [m.model_dump() for m in step.messages]
                key = (json.dumps(prompt, sort_keys=True), step.completion)
                kept = by_key.get(key)
                if kept is not None:
                    duplicates += 1
                    # Keep the smallest id, so the row does not depend on the order episodes were stored in.
                    if traj.id < kept["trajectory_id"]:
                        kept.update(task_id=traj.task.id, trajectory_id=traj.id)
                    continue
                by_key[key] = {
                    "prompt": prompt,
                    "completion": [{"role": "assistant", "content": step.completion}],
                    "task_id": traj.task.id,
                    "trajectory_id": traj.id,
                }
    rows = list(by_key.values())
    rows.sort(key=lambda r: (r["task_id"], json.dumps(r["prompt"], sort_keys=True), r["completion"][0]["content"]))
    runs = tuple(q.run_id for q in queries if q.run_id is not None)
    suites = {q.suite for q in queries}
    source = DataSource(
        runs=runs,
        suite=suites.pop() if len(suites) == 1 else None,
        filters={"min_reward": min_reward, "roles": sorted(acting), "success": min_reward is None},
        counts={
            "trajectories": total,
            "selected": selected,
            "examples": len(rows),
            "duplicates": duplicates,
            "skipped_steps": skipped,
        },
    )
    if not rows:
        raise NothingToTrainError(_nothing_message(source))
    return SFTExamples(rows=rows, source=source)


def build_sft_dataset(
    store: TrajectoryStore,
    query: TrajectoryQuery | Sequence[TrajectoryQuery],
    *,
    min_reward: float | None = None,
    roles: Sequence[str] = ("solver",),
) -> datasets.Dataset:
    """The SFT dataset of successful episodes, in TRL's conversational prompt-completion format.

    See :func:`collect_sft_examples` for what is selected and the row layout.

    Raises:
        NothingToTrainError: no example survives the filters.

    Example:
        >>> ds = build_sft_dataset(store, TrajectoryQuery(run_id="abc123"))  # doctest: +SKIP
        >>> ds[0]["completion"]  # doctest: +SKIP
        [{'role': 'assistant', 'content': '```python\\ndef last(xs): ...'}]
    """
    import datasets

    examples = collect_sft_examples(store, query, min_reward=min_reward, roles=roles)
    return datasets.Dataset.from_list(examples.rows)


@dataclass
class SFTJob:
    """A prepared SFT run: the trainer (model, tokenized data, collator) and what to record."""

    name: str
    trainer: SFTTrainer
    examples: SFTExamples
    base_model: str
    parent: str | None
    kind: Kind


def prepare_sft(config: SFTTrainConfig, store: TrajectoryStore) -> SFTJob:
    """Check the name, select the data, load the policy and build the ``SFTTrainer``; train nothing.

    Checks the checkpoint name and the data before loading the model, so a mistake costs
    seconds, not a model load.

    Raises:
        ConfigError: the checkpoint name is taken or malformed, or a run is not in the store.
        NothingToTrainError: the selected runs have no usable successful episodes.
        ModelLoadError: the model cannot be loaded.

    Example:
        >>> job = prepare_sft(SFTTrainConfig(run="abc123"), open_store())  # doctest: +SKIP
        >>> batch = next(iter(job.trainer.get_train_dataloader()))  # doctest: +SKIP
    """
    name = config.checkpoint_name or new_checkpoint_name(METHOD)
    where = checkpoint_dir(name)
    if (where / RECORD_FILE).exists():
        raise ConfigError(f"checkpoint {name!r} already exists at {where}; choose another checkpoint_name")
    examples = collect_sft_examples(store, _queries(config, store), min_reward=config.min_reward, roles=config.roles)
    args = dataclasses.replace(config, checkpoint_name=name, output_dir=str(where / TRAINER_DIR))
    model, tokenizer, base_model, parent, kind, new_adapter = _load_policy(args)

    import datasets
    from trl import SFTTrainer

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(examples.rows),
        processing_class=tokenizer,
        peft_config=_lora_config(args) if new_adapter else None,
    )
    return SFTJob(name=name, trainer=trainer, examples=examples, base_model=base_model, parent=parent, kind=kind)


def run_sft(job: SFTJob) -> Checkpoint:
    """Train a prepared job, measuring the loss before and after; save and register the checkpoint.

    Example:
        >>> ckpt = run_sft(prepare_sft(SFTTrainConfig(run="abc123"), open_store()))  # doctest: +SKIP
    """
    trainer = job.trainer
    args = trainer.args
    before = _evaluate(trainer)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    seconds = time.perf_counter() - started
    after = _evaluate(trainer)

    weights = checkpoint_dir(job.name) / WEIGHTS_DIR
    shutil.rmtree(weights, ignore_errors=True)  # leftovers of a crashed run under the same name
    trainer.save_model(str(weights))  # the adapter (or full model), plus the tokenizer
    _remove_if_empty(checkpoint_dir(job.name) / TRAINER_DIR)  # holds something only if states were saved
    accuracy = {
        "token_accuracy_before": before.get("eval_mean_token_accuracy"),
        "token_accuracy_after": after.get("eval_mean_token_accuracy"),
    }
    metrics = TrainMetrics(
        loss_before=before.get("eval_loss"),
        loss_after=after.get("eval_loss"),
        train_loss=result.metrics.get("train_loss"),
        examples=len(job.examples.rows),
        tokens=_tokens_trained(trainer),
        steps=result.global_step,
        seconds=round(seconds, 3),
        extra={k: float(v) for k, v in accuracy.items() if v is not None},
    )
    return register_checkpoint(
        job.name,
        weights,
        kind=job.kind,
        base_model=job.base_model,
        parent=job.parent,
        method=METHOD,
        datasets=[job.examples.source],
        config=args.to_dict(),
        metrics=metrics,
    )


def train_sft(config: SFTTrainConfig, store: TrajectoryStore) -> Checkpoint:
    """Fine-tune ``config.model`` on the successful episodes in ``store`` and register a checkpoint.

    The same as ``run_sft(prepare_sft(config, store))``.

    Raises:
        ConfigError: the checkpoint name is taken or malformed, or a run is not in the store.
        NothingToTrainError: the selected runs have no usable successful episodes.
        ModelLoadError: the model cannot be loaded.

    Example:
        >>> ckpt = train_sft(SFTTrainConfig(run="abc123", max_steps=10), open_store())  # doctest: +SKIP
        >>> resolve_model(ckpt.name).build()  # doctest: +SKIP
    """
    return run_sft(prepare_sft(config, store))


def _queries(config: SFTTrainConfig, store: TrajectoryStore) -> list[TrajectoryQuery]:
    if not config.run:
        return [TrajectoryQuery(suite=config.suite)]
    queries = []
    for run in config.run:
        found = store.get_run(run)
        if found is None:
            raise ConfigError(
                f"run {run!r} is not in the store {store.url} (or the prefix is ambiguous); "
                "see `autodidact trajectories list`"
            )
        queries.append(TrajectoryQuery(run_id=found.run.id, suite=config.suite))
    return queries


def _nothing_message(source: DataSource) -> str:
    c = source.counts
    if not source.runs:
        what = "the store has"
    elif len(source.runs) == 1:
        what = f"run {source.runs[0]} has"
    else:
        what = f"runs {', '.join(source.runs)} have"
    if source.suite is not None:
        what += f" (suite {source.suite})"
    if c["selected"] == 0:
        kind = "successful" if source.filters["min_reward"] is None else f"reward >= {source.filters['min_reward']}"
        return (
            f"{what} 0 {kind} trajectories (of {c['trajectories']}); nothing to train on — "
            "collect more episodes or lower the bar with --set min_reward=0.5"
        )
    return (
        f"{what} {c['selected']} successful trajectories but no usable step of role(s) "
        f"{', '.join(source.filters['roles'])} (a completion and no error); nothing to train on — check --set roles=[solver]"
    )


def _load_policy(
    config: SFTTrainConfig,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str, str | None, Kind, bool]:
    """Load what training starts from: ``(model, tokenizer, base_model, parent, kind, new_adapter)``.

    A LoRA checkpoint continues training its own adapter (same rank and targets), or is merged
    into its base for a full fine-tune; a full checkpoint is a base model like any other.
    """
    from agents.llm.hf_local import load_model_and_tokenizer

    kind: Kind = "full" if config.full_finetune else "lora"
    parent = find_checkpoint(config.model) if config.model != "embedded" else None
    if parent is None:
        model, tok = load_model_and_tokenizer(config.model, trainable=True)
        return model, tok, config.model, None, kind, not config.full_finetune
    path, adapter = parent.load_spec()
    model, tok = load_model_and_tokenizer(path, adapter, trainable=True)
    if adapter is None:  # a full checkpoint: its weights are the base
        return model, tok, path, parent.name, kind, not config.full_finetune
    if config.full_finetune:
        model = model.merge_and_unload()  # type: ignore[operator]
        model.requires_grad_(True)  # PEFT froze the base weights; a full fine-tune trains them all
        return model, tok, parent.base_model, parent.name, kind, False
    return model, tok, parent.base_model, parent.name, kind, False


def _lora_config(config: SFTTrainConfig) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def _evaluate(trainer: SFTTrainer) -> dict[str, float]:
    """Mean completion-token loss over the (already tokenized) training set, without gradients."""
    return trainer.evaluate(eval_dataset=trainer.train_dataset, metric_key_prefix="eval")


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):  # not empty, or already gone
        path.rmdir()


def _tokens_trained(trainer: SFTTrainer) -> int:
    # TRL logs a running count of the non-padding tokens it trained on.
    counts = [int(log["num_tokens"]) for log in trainer.state.log_history if "num_tokens" in log]
    return max(counts, default=0)
