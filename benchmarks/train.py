"""Our SFT path against a plain TRL ``SFTTrainer`` call on the same rows: speed, memory, masks.

Run: ``.venv/bin/python benchmarks/train.py [--episodes 64] [--max-steps 6] [--batch-size 4]
[--repeats 2] [--quick] [--model DIR] [--padding]`` (``--quick``: 2 steps, 1 repeat, a smoke
run; ``--padding``: instead of TRL, our path with steps of 8 rows as one padded batch against
one row at a time with 8 accumulated, which is the CPU default). On 2 CPU cores the
defaults take ~5 minutes and ``--quick`` ~2 at ~75-80 training tokens/s; other work on the
cores can slow that to ~30 tokens/s (2.5x longer). Batch 8 of these rows needs ~11 GB RSS.

A synthetic run of ``--episodes`` one-step successful code episodes (system + user prompt, a
~100-300 token Python answer; deterministic) goes into a SQLite store under a temporary
``$AUTODIDACT_HOME``. Two trainers learn from it, with the embedded SmolLM2-135M on CPU:

- **ours**: :func:`training.sft.prepare_sft` — rows from :func:`training.data.build_examples`,
  tokenized by :func:`training.data.tokenize_turns` (``input_ids`` + ``completion_mask``);
- **TRL**: ``SFTTrainer`` on the same rows in TRL's conversational prompt-completion format
  (``{"prompt": messages[:-1], "completion": [messages[-1]]}``), TRL tokenizing them, with a
  model from ``load_model_and_tokenizer("embedded", trainable=True)``, the same LoRA config
  (:func:`training.policy.lora_config`) and the same ``SFTConfig`` settings (batch size, steps,
  learning rate, ``max_length``, ``completion_only_loss=True``, no gradient checkpointing).

Each measured trainer gets a freshly loaded model, built before the clock starts; the seed is
set before each trainer is built (the LoRA init) and again just before ``train()`` (the data
order, dropout), so both paths see the same batches and should log the same losses. First an
untimed warm-up (a throwaway TRL trainer, one step of batch 2) pays the process's one-time
costs, which would otherwise land on whichever path runs first. Then they alternate (ours,
TRL, ours, TRL, ...) for ``--repeats`` rounds; only ``trainer.train()`` is timed. Printed:

- the data (rows, tokens per row) and any ``SFTConfig`` field whose value differs between
  the two trainers;
- a mask check: per example of the first batch (rows in dataset order, through each trainer's
  own collator), the tokens that carry loss (label != -100), and over every row whether the
  ``input_ids`` and labels are identical; a difference is printed loudly (a bug in ours);
- per round, for each path: training tokens/s (TRL's own ``num_tokens`` counter, the
  non-padding tokens of the batches trained on: the same counter for both), wall seconds,
  peak RSS increase during ``train()`` (``/proc/self/status`` VmRSS sampled every 50 ms by a
  thread, over the RSS just before), peak RSS, and the final train loss (the mean over the
  run, and the last step's), the cores the process got (CPU s per wall s) and seconds per step;
- a summary: the median ratio ours/TRL of tokens/s (target >= 0.95) and of peak RSS increase.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import os
import random
import statistics
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autodidact.types import Message, PolicyRef, Step, Task, Trajectory
from memory.base import TrajectoryStore, open_store

RUN = "bench"
SEED = 42
SYSTEM = "You are a careful Python programmer. Answer with one ```python block."
VERBS = ("count", "merge", "filter", "scale", "group", "rank", "clip", "split", "score", "pack", "find", "sum")
NOUNS = ("items", "rows", "words", "pairs", "scores", "names", "points", "events", "values", "tokens", "keys")
OPS = ("<", ">", "<=", ">=", "==", "!=")
BLOCKS = (
    "    total = 0\n    for {x} in {arg}:\n        if {x} {op} {k}:\n            total += {x}\n",
    "    seen = set()\n    out = []\n    for {x} in {arg}:\n        if {x} not in seen:\n"
    "            seen.add({x})\n            out.append({x})\n",
    "    # Keep the {noun} whose value passes the threshold.\n    kept = [{x} for {x} in {arg} if {x} {op} {k}]\n",
    "    counts = {{}}\n    for {x} in {arg}:\n        counts[{x}] = counts.get({x}, 0) + 1\n",
    "    if not {arg}:\n        raise ValueError('{name} needs at least one of the {noun}')\n",
    "    best = None\n    for index, {x} in enumerate({arg}):\n"
    "        if best is None or {x} {op} best[1]:\n            best = (index, {x})\n",
    "    window = []\n    for {x} in {arg}:\n        window.append({x} * {k})\n"
    "        if len(window) > {m}:\n            window.pop(0)\n",
    "    result = sorted({arg}, key=lambda {x}: ({x} % {m}, -{x}))\n",
    "    pairs = list(zip({arg}, {arg}[1:]))\n    gaps = [b - a for a, b in pairs if b {op} a]\n",
)
RETURNS = ("total", "out", "kept", "counts", "best", "window", "result", "gaps", "len({arg})")


def code_answer(i: int, rng: random.Random) -> tuple[str, str]:
    """A task name and a fenced Python answer of a few blocks (~100-300 tokens), unique per ``i``."""
    verb, noun = VERBS[i % len(VERBS)], NOUNS[(i // len(VERBS) + i) % len(NOUNS)]
    name = f"{verb}_{noun}_{i}"
    arg, x = noun, noun.rstrip("s") or "x"
    fill = {"name": name, "noun": noun, "arg": arg, "x": x, "op": rng.choice(OPS)}
    body = []
    for block in rng.sample(BLOCKS, rng.randint(2, 7)):
        body.append(block.format(**fill, k=rng.randint(1, 99), m=rng.randint(2, 9)))
    doc = (
        f'    """{verb.capitalize()} the {noun} of ``{arg}`` (variant {i}).\n\n    Returns the {noun} kept.\n    """\n'
    )
    ret = f"    return {rng.choice(RETURNS).format(arg=arg)}\n"
    return name, f"```python\ndef {name}({arg}: list[int]) -> object:\n{doc}{''.join(body)}{ret}```"


def fill_store(store: TrajectoryStore, episodes: int) -> None:
    """``episodes`` one-step successful code episodes of run ``RUN``, as the code environment records them."""
    rng = random.Random(SEED)
    for i in range(episodes):
        name, answer = code_answer(i, rng)
        prompt = f"Write `{name}`: a function over a list of ints, as its docstring says."
        messages = (Message(role="system", content=SYSTEM), Message(role="user", content=prompt))
        store.append(
            Trajectory(
                run_id=RUN,
                task=Task(id=f"bench/{name}", suite="bench", prompt=prompt),
                env_id="code",
                policy=PolicyRef(model="embedded"),
                steps=(Step(index=0, role="solver", messages=messages, completion=answer),),
                reward=1.0,
                success=True,
                id=f"{RUN}-{i:04d}",
            )
        )


class RssSampler:
    """Samples this process's VmRSS (``/proc/self/status``) every ``interval`` s in a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.start = self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_mib())

    def __enter__(self) -> RssSampler:
        self.start = self.peak = rss_mib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_memory() -> None:
    gc.collect()
    # glibc keeps freed arenas mapped; hand them back so the next run's RSS increase starts clean.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Result:
    path: str
    tokens: int
    seconds: float
    rss_increase: float
    rss_peak: float
    loss: float
    last_loss: float
    cores: float  # process CPU seconds per wall second: under the thread count when other work took the cores
    steps: list[float]  # seconds per optimizer step (the first includes the trainer's setup inside train())

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def measure(path: str, trainer: Any) -> Result:
    """Time ``trainer.train()`` alone, sampling RSS, with the seed set just before."""
    from transformers import TrainerCallback, set_seed

    ends: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            ends.append(time.perf_counter())

    trainer.add_callback(StepTimes())
    free_memory()
    set_seed(SEED)
    with RssSampler() as rss:
        cpu = time.process_time()
        started = time.perf_counter()
        out = trainer.train()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    logs = trainer.state.log_history
    tokens = max((int(log["num_tokens"]) for log in logs if "num_tokens" in log), default=0)
    losses = [float(log["loss"]) for log in logs if "loss" in log]
    return Result(
        path,
        tokens,
        seconds,
        rss.peak - rss.start,
        rss.peak,
        float(out.metrics.get("train_loss", float("nan"))),
        losses[-1] if losses else float("nan"),
        cpu / seconds,
        [b - a for a, b in zip([started, *ends], ends, strict=False)],
    )


def quiet(trainer: Any) -> Any:
    """Without the log line per step that ``disable_tqdm`` turns on."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def ours(config: Any, store: TrajectoryStore) -> Any:
    from transformers import set_seed

    from training.sft import prepare_sft

    set_seed(SEED)  # the LoRA init
    return quiet(prepare_sft(config, store).trainer)


def trl_baseline(config: Any, rows: list[dict[str, Any]], out_dir: str) -> Any:
    """A plain TRL call: conversational prompt-completion rows, TRL tokenizes them."""
    import datasets
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from agents.llm.hf_local import load_model_and_tokenizer
    from training.policy import lora_config

    model, tok = load_model_and_tokenizer(config.model, trainable=True)
    data = datasets.Dataset.from_list([{"prompt": r["messages"][:-1], "completion": [r["messages"][-1]]} for r in rows])
    args = SFTConfig(
        output_dir=out_dir,
        per_device_train_batch_size=config.per_device_train_batch_size,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        max_length=config.max_length,
        completion_only_loss=True,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=SEED,
        bf16=config.bf16,
        dataloader_pin_memory=config.dataloader_pin_memory,
        disable_tqdm=True,
    )
    set_seed(SEED)  # the LoRA init
    return quiet(
        SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=lora_config(config))
    )


def differing_settings(a: Any, b: Any) -> list[str]:
    """The ``SFTConfig`` fields whose values differ between two trainers' args (paths and names aside)."""
    from trl import SFTConfig

    skip = {"output_dir", "logging_dir", "run_name", "hub_model_id"}
    return [
        f"{f.name}: ours {getattr(a, f.name)!r} vs TRL {getattr(b, f.name)!r}"
        for f in dataclasses.fields(SFTConfig)
        if f.name not in skip and getattr(a, f.name, None) != getattr(b, f.name, None)
    ]


@dataclass
class Seen:
    """What a trainer's prepared dataset holds: per row ``input_ids`` and labels; the first batch's loss tokens."""

    ids: list[list[int]]
    labels: list[list[int]]
    first_batch: list[int]


def seen(trainer: Any, batch_size: int) -> Seen:
    ds = trainer.train_dataset
    ids, labels = list(ds["input_ids"]), list(ds["labels"])
    batch = trainer.data_collator(
        [{"input_ids": ids[i], "labels": labels[i]} for i in range(min(batch_size, len(ids)))]
    )
    return Seen(ids, labels, [int(n) for n in (batch["labels"] != -100).sum(dim=1)])


def check_masks(a: Seen, b: Seen, tok: Any) -> None:
    print("first batch (rows 0.., dataset order), loss tokens per example:")
    print(f"  ours {a.first_batch}")
    print(f"  TRL  {b.first_batch}")
    bad_ids = [i for i, (x, y) in enumerate(zip(a.ids, b.ids, strict=True)) if x != y]
    bad_labels = [i for i, (x, y) in enumerate(zip(a.labels, b.labels, strict=True)) if x != y]
    if a.first_batch == b.first_batch and not bad_ids and not bad_labels:
        print(f"masks: SAME — input_ids and labels identical on all {len(a.ids)} rows")
        return
    print("!" * 100)
    print(f"!!! MASK MISMATCH: first batch {'same' if a.first_batch == b.first_batch else 'DIFFERS'}; ")
    print(
        f"!!! input_ids differ on {len(bad_ids)} rows {bad_ids[:10]}, labels on {len(bad_labels)} rows {bad_labels[:10]}"
    )
    for i in (bad_ids or bad_labels)[:2]:
        for name, s in (("ours", a), ("TRL ", b)):
            trained = [t for t, lab in zip(s.ids[i], s.labels[i], strict=True) if lab != -100]
            print(f"!!! row {i} {name}: {len(s.ids[i])} ids, loss on {tok.decode(trained)[-120:]!r}")
    print("!" * 100)


def table(results: list[Result]) -> None:
    print(
        f"  {'path':<11} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'+RSS MiB':>9} {'peak MiB':>9} {'loss':>7} {'last':>7} {'cores':>5}  seconds per step"
    )
    for r in results:
        print(
            f"  {r.path:<11} {r.tokens:>7} {r.seconds:>8.1f} {r.tokens_per_s:>9.1f} {r.rss_increase:>9.0f} "
            f"{r.rss_peak:>9.0f} {r.loss:>7.4f} {r.last_loss:>7.4f} {r.cores:>5.2f}  "
            + " ".join(f"{t:.1f}" for t in r.steps)
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="rounds of (ours, TRL)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 steps, 1 repeat")
    ap.add_argument("--model", default="embedded", help="a model dir, e.g. random weights of the same shape")
    ap.add_argument(
        "--padding",
        action="store_true",
        help="instead of TRL: ours with steps of 8 rows as one padded batch of 8 vs 8 rows one at a time",
    )
    args = ap.parse_args()
    if args.quick:
        args.max_steps, args.repeats = 2, 1

    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' v6 renames, once per trainer
    with tempfile.TemporaryDirectory(prefix="autodidact-bench-train-") as tmp:
        os.environ["AUTODIDACT_HOME"] = str(Path(tmp) / "home")
        from training.data import build_examples
        from training.sft import SFTTrainConfig

        def config(i: int, batch: int = args.batch_size, accumulate: int = 1) -> SFTTrainConfig:
            return SFTTrainConfig(
                run=RUN,
                model=args.model,
                max_steps=args.max_steps,
                per_device_train_batch_size=batch,
                gradient_accumulation_steps=accumulate,
                checkpoint_name=f"sft-bench-{i}",
                disable_tqdm=True,
                seed=SEED,
            )

        with open_store(str(Path(tmp) / "t.db")) as store:
            fill_store(store, args.episodes)
            rows = build_examples(config(0), store).rows
            cfg = config(0)
            print(
                f"{len(rows)} rows from {args.episodes} episodes | {args.max_steps} steps of batch {args.batch_size}, "
                f"lr {cfg.learning_rate}, LoRA r {cfg.lora_r} | torch {torch.__version__}, "
                f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
            )
            warm = trl_baseline(dataclasses.replace(cfg, max_steps=1, per_device_train_batch_size=2), rows, tmp)
            print(f"warm-up (untimed): 1 step of batch 2 in {measure('warm', warm).seconds:.1f} s")
            del warm
            free_memory()
            if args.padding:
                padding(args, config, store)
                return
            rounds: list[list[Result]] = []
            for rep in range(args.repeats):
                results = []
                for path in ("ours", "TRL"):
                    if path == "ours":
                        trainer = ours(config(rep), store)
                    else:
                        trainer = trl_baseline(cfg, rows, str(Path(tmp) / f"trl-{rep}"))
                    if rep == 0:
                        got = seen(trainer, args.batch_size)
                        if path == "ours":
                            ours_seen, ours_args = got, trainer.args
                            lengths = [len(ids) for ids in got.ids]
                            trained = [sum(lab != -100 for lab in labels) for labels in got.labels]
                            print(
                                f"tokens per row: min {min(lengths)}, mean {statistics.mean(lengths):.0f}, "
                                f"max {max(lengths)}; trained (answer) tokens per row: min {min(trained)}, "
                                f"mean {statistics.mean(trained):.0f}, max {max(trained)}"
                            )
                        else:
                            diff = differing_settings(ours_args, trainer.args)
                            print("SFTConfig settings that differ: " + ("; ".join(diff) or "none"))
                            check_masks(ours_seen, got, trainer.processing_class)
                            del ours_seen, ours_args
                    results.append(measure(path, trainer))
                    del trainer
                    free_memory()
                print(f"round {rep + 1}/{args.repeats}:")
                table(results)
                rounds.append(results)

    speed = statistics.median(o.tokens_per_s / t.tokens_per_s for o, t in rounds)
    memory = statistics.median(o.rss_increase / max(t.rss_increase, 1.0) for o, t in rounds)
    same_tokens = all(o.tokens == t.tokens for o, t in rounds)
    print(
        f"summary over {len(rounds)} round(s): ours/TRL tokens/s median {speed:.3f} "
        f"({'ok' if speed >= 0.95 else 'BELOW'} target >= 0.95); peak RSS increase median {memory:.2f}x; "
        f"tokens trained {'equal' if same_tokens else 'DIFFER'} between paths"
    )


def padding(args: Any, config: Any, store: TrajectoryStore) -> None:
    """Steps of 8 rows: one padded batch of 8 against 8 rows one at a time (accumulated), alternating."""
    ratios = []
    for rep in range(args.repeats):
        results = []
        for label, batch, accumulate in (("batch 8", 8, 1), ("8 x batch 1", 1, 8)):
            results.append(measure(label, ours(config(100 + 2 * rep + accumulate // 8, batch, accumulate), store)))
            free_memory()
        print(f"round {rep + 1}/{args.repeats}:")
        table(results)
        ratios.append(results[1].tokens_per_s / results[0].tokens_per_s)
    print(f"summary: one row at a time / padded batch of 8, tokens/s median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
