"""SFT on successful episodes (training.sft) and the checkpoint registry (training.checkpoints).

Dataset selection and the registry run without a model. Everything that tokenizes, trains,
saves or loads uses the real embedded SmolLM2-135M-Instruct on CPU (``slow``), with a
handful of short rows and two optimizer steps so the file stays near a minute or two.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from agents.llm.base import TransformersConfig, resolve_model
from agents.llm.hf_local import TransformersChatModel, load_model_and_tokenizer
from agents.roles import solver
from autodidact.errors import ConfigError, ModelLoadError, NothingToTrainError
from autodidact.types import Message, Observation, PolicyRef, SamplingParams, Step, Task, Trajectory
from memory.base import TrajectoryStore, open_store
from training.checkpoints import (
    Checkpoint,
    DataSource,
    TrainMetrics,
    find_checkpoint,
    list_checkpoints,
    new_checkpoint_name,
    register_checkpoint,
)
from training.data import DataFields, Examples, build_examples
from training.policy import run_job
from training.sft import SFTTrainConfig, prepare_sft, train_sft

SYSTEM = "You are a careful Python programmer. Answer with one ```python block."


def prompt(task: str) -> tuple[Message, ...]:
    return (Message(role="system", content=SYSTEM), Message(role="user", content=f"Write `{task}`."))


def answer(task: str) -> str:
    return f"```python\ndef {task}(xs):\n    return xs[-1]\n```"


def episode(
    run: str,
    task: str,
    *,
    success: bool = True,
    completion: str | None = None,
    reward: float | None = None,
    steps: tuple[Step, ...] | None = None,
    id: str | None = None,
    error: str | None = None,
) -> Trajectory:
    """A one-step code episode, as the code environment records it."""
    if steps is None:
        steps = (Step(index=0, role="solver", messages=prompt(task), completion=completion or answer(task)),)
    extra = {"id": id} if id is not None else {}
    return Trajectory(
        run_id=run,
        task=Task(id=f"bundled/{task}", suite="bundled", prompt=f"Write `{task}`."),
        env_id="code",
        policy=PolicyRef(model="embedded"),
        steps=steps,
        reward=(1.0 if success else 0.0) if reward is None else reward,
        success=success,
        error=error,
        **extra,
    )


def sft(store: TrajectoryStore, run: str, **fields: Any) -> Examples:
    return build_examples(DataFields(run=run, **fields), store)


def mixed_run(run: str) -> list[Trajectory]:
    """Successes, failures, a duplicate, non-acting and errored steps, an errored episode."""
    review = Step(index=1, role="reviewer", messages=prompt("beta"), completion="Looks right.")
    bad = Step(index=0, role="solver", messages=prompt("gamma"), completion="```python\nde", error="parse error")
    good = Step(index=1, role="solver", messages=prompt("gamma"), completion=answer("gamma"))
    empty = Step(index=2, role="solver", messages=prompt("gamma"), completion=None)
    beta = Step(index=0, role="solver", messages=prompt("beta"), completion=answer("beta"))
    return [
        episode(run, "beta", steps=(beta, review), id=f"{run}-b"),
        episode(run, "alpha", id=f"{run}-a2"),
        episode(run, "alpha", id=f"{run}-a1"),  # the same prompt and completion again
        episode(run, "delta", success=False, completion="```python\npass\n```", reward=0.5, id=f"{run}-d"),
        episode(run, "gamma", steps=(bad, good, empty), id=f"{run}-g"),
        episode(run, "eps", error="sandbox crashed", id=f"{run}-e"),
    ]


# --- (a) the dataset builder -----------------------------------------------------------------------


def test_dataset_keeps_successful_acting_steps_dedups_and_sorts(store: TrajectoryStore) -> None:
    for t in mixed_run("r1"):
        store.append(t)
    store.append(episode("r2", "zeta"))  # another run: not selected

    ds = sft(store, "r1").rows

    assert [(r["task_id"], r["messages"][-1]["content"]) for r in ds] == [
        ("bundled/alpha", answer("alpha")),
        ("bundled/beta", answer("beta")),
        ("bundled/gamma", answer("gamma")),
    ]
    row = ds[0]
    assert row["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Write `alpha`."},
        {"role": "assistant", "content": answer("alpha")},
    ]
    assert row["train"] == [False, False, True] and row["origin"] == "success"
    assert row["trajectory_id"] == "r1-a1"  # of two duplicates, the smaller id is kept

    ex = sft(store, "r1")
    assert ex.source.runs == ("r1",) and ex.source.kind == "success"
    assert ex.source.counts == {
        "trajectories": 6,
        "selected": 5,  # every episode but eps (episode error)
        "successes": 4,  # beta, alpha twice, gamma; not delta (failed)
        "examples": 3,
        "duplicates": 1,
        "skipped_steps": 2,  # gamma's errored and empty solver steps
    }


def test_code_answers_train_as_the_code_block_the_environment_ran(store: TrajectoryStore) -> None:
    chatty = (
        "Sure! Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nThis adds. Or:\n```python\ndef add(*a"
    )
    action = solver.parse_code_action(chatty).action
    step = Step(
        index=0,
        role="solver",
        messages=prompt("add"),
        completion=chatty,
        action=action,
        observation=Observation(text="ok"),
        terminated=True,  # the final submission, as the code environment records it
    )
    store.append(episode("r1", "add", steps=(step,)))
    clean = "```python\ndef add(a, b):\n    return a + b\n```"

    assert [r["messages"][-1]["content"] for r in sft(store, "r1").rows] == [clean]
    assert solver.parse_code_action(clean).action == action  # the answer reads back as the same action
    assert [r["messages"][-1]["content"] for r in sft(store, "r1", answers="raw").rows] == [chatty]
    with pytest.raises(ConfigError, match="answers must be one of parsed, raw"):
        sft(store, "r1", answers="clean")


def test_cpu_trains_one_row_at_a_time_eight_rows_a_step(tmp_path: Path) -> None:
    cfg = SFTTrainConfig(output_dir=str(tmp_path))
    gpu = torch.cuda.is_available()
    assert cfg.per_device_train_batch_size == (8 if gpu else 1) == cfg.per_device_eval_batch_size
    assert cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps == 8
    mine = SFTTrainConfig(output_dir=str(tmp_path), per_device_train_batch_size=2)
    assert (mine.gradient_accumulation_steps, mine.per_device_eval_batch_size) == (4, 2)


def test_loss_before_and_after_is_measured_on_rows_spread_over_the_data(tmp_path: Path) -> None:
    import datasets

    from training.policy import _evaluate

    class Seen:
        def __init__(self, rows: int | None) -> None:
            self.args = SimpleNamespace(loss_rows=rows)
            self.train_dataset = datasets.Dataset.from_list([{"x": i} for i in range(100)])

        def evaluate(self, eval_dataset: Any, metric_key_prefix: str) -> dict[str, Any]:
            return {"rows": list(eval_dataset["x"])}

    assert _evaluate(Seen(8))["rows"] == [0, 12, 25, 37, 50, 62, 75, 87]  # type: ignore[arg-type]
    assert _evaluate(Seen(None))["rows"] == list(range(100))  # type: ignore[arg-type]
    assert SFTTrainConfig(output_dir=str(tmp_path)).loss_rows == 32


def test_dataset_is_the_same_whatever_the_insertion_order(tmp_path: Path) -> None:
    episodes = mixed_run("r1")
    rows = []
    for name, order in (("fwd", episodes), ("rev", episodes[::-1])):
        with open_store(str(tmp_path / f"{name}.db")) as s:
            for t in order:
                s.append(t)
            rows.append(sft(s, "r1").rows)
    assert rows[0] == rows[1]


def test_dataset_roles_and_min_reward_select_other_rows(store: TrajectoryStore) -> None:
    for t in mixed_run("r1"):
        store.append(t)
    reviews = sft(store, "r1", roles=["reviewer"]).rows
    assert [r["messages"][-1]["content"] for r in reviews] == ["Looks right."]
    # With min_reward the reward decides: delta (failed, reward 0.5) is in, eps (episode error) stays out.
    half = sft(store, "r1", min_reward=0.5).rows
    assert [r["task_id"] for r in half] == ["bundled/alpha", "bundled/beta", "bundled/delta", "bundled/gamma"]


def test_run_without_successes_is_nothing_to_train_with_counts(store: TrajectoryStore) -> None:
    for task in ("a", "b", "c"):
        store.append(episode("r3", task, success=False))
    with pytest.raises(
        NothingToTrainError,
        match=r"run r3 has 0 successful episodes \(trajectories 3, selected 3, successes 0, examples 0\)",
    ) as e:
        sft(store, "r3")
    assert "\n" not in str(e.value) and "--set min_reward=" in str(e.value)
    with pytest.raises(
        NothingToTrainError, match=r"successes 1, examples 0\): no usable acting step.*roles=\[...\] \(now refiner\)"
    ):
        store.append(episode("r4", "a"))
        sft(store, "r4", roles=["refiner"])


def test_train_sft_fails_fast_on_bad_run_or_empty_data(store: TrajectoryStore, _isolated_home: Path) -> None:
    store.append(episode("r3", "a", success=False))
    with pytest.raises(ConfigError, match="run 'nope' is not in the store"):
        train_sft(SFTTrainConfig(run="nope"), store)
    with pytest.raises(NothingToTrainError, match=r"run r3 has 0 successful episodes"):
        train_sft(SFTTrainConfig(run="r3"), store)
    with pytest.raises(ConfigError, match="data must list SFT data kinds"):
        SFTTrainConfig(run="r3", data=["succes"])
    assert list_checkpoints() == [] and not (_isolated_home / "checkpoints").exists()


def test_config_defaults_and_parsing() -> None:
    from autodidact.config import parse

    cfg = parse(SFTTrainConfig, None, ["run=abc", "lora_r=8", "roles=[solver, refiner]", "max_steps=3"])
    assert cfg.run == ["abc"] and cfg.lora_r == 8 and cfg.roles == ["solver", "refiner"] and cfg.max_steps == 3
    assert cfg.learning_rate == 2e-4 and cfg.bf16 is False and cfg.gradient_checkpointing is False
    assert cfg.completion_only_loss is True and cfg.report_to == [] and cfg.max_length == 1024
    assert parse(SFTTrainConfig, None, ["full_finetune=true"]).learning_rate == 2e-5
    with pytest.raises(ConfigError, match="unknown key"):
        parse(SFTTrainConfig, None, ["lora_rank=8"])


# --- (f) the registry --------------------------------------------------------------------------------


def fake_weights(where: Path, marker: str = "adapter_config.json") -> Path:
    where.mkdir(parents=True)
    (where / marker).write_text("{}")
    return where


def test_registry_register_find_list_and_errors(tmp_path: Path) -> None:
    a = register_checkpoint(
        "sft-a1",
        fake_weights(tmp_path / "a"),
        kind="lora",
        base_model="embedded",
        datasets=[DataSource(runs=("r1",), counts={"examples": 3})],
        config={"lora_r": 16, "out": tmp_path},  # a Path becomes a string
        metrics=TrainMetrics(loss_before=1.0, loss_after=0.5, steps=2),
    )
    b = register_checkpoint("sft-b1", fake_weights(tmp_path / "b"), kind="lora", base_model="embedded", parent="sft-a1")

    assert find_checkpoint("sft-a1") == a and find_checkpoint("sft-b") == b  # exact name, unique prefix
    assert a.config == {"lora_r": 16, "out": str(tmp_path)}
    assert [c.name for c in list_checkpoints()] == ["sft-b1", "sft-a1"]  # newest first
    assert find_checkpoint("sft-zzz") is None and find_checkpoint("./sft-a1") is None
    assert find_checkpoint("http://x/v1") is None
    with pytest.raises(ConfigError, match="ambiguous"):
        find_checkpoint("sft-")
    with pytest.raises(ConfigError, match="already exists"):
        register_checkpoint("sft-a1", tmp_path / "b", kind="lora", base_model="embedded")
    with pytest.raises(ConfigError, match="not registered"):
        register_checkpoint("sft-c1", tmp_path / "b", kind="lora", base_model="embedded", parent="nobody")
    with pytest.raises(ConfigError, match=r"no config\.json"):
        register_checkpoint("sft-c1", tmp_path / "b", kind="full", base_model="embedded")
    with pytest.raises(ConfigError, match="invalid"):
        register_checkpoint("../evil", tmp_path / "b", kind="lora", base_model="embedded")
    assert find_checkpoint("sft-c1") is None  # nothing half-registered


def test_registry_record_inside_home_moves_with_it(tmp_path: Path, _isolated_home: Path, monkeypatch: Any) -> None:
    name = new_checkpoint_name("sft")
    assert name.startswith("sft-") and len(name) == len("sft-20261122-103000-ab12")
    weights = fake_weights(_isolated_home / "checkpoints" / name / "model", "config.json")
    register_checkpoint(name, weights, kind="full", base_model="embedded")
    assert json.loads((weights.parent / "checkpoint.json").read_text())["path"] == "model"

    moved = tmp_path / "elsewhere"
    shutil.copytree(_isolated_home, moved)
    monkeypatch.setenv("AUTODIDACT_HOME", str(moved))
    ckpt = find_checkpoint(name)
    assert ckpt is not None and ckpt.path == (moved / "checkpoints" / name / "model").absolute()
    assert ckpt.load_spec() == (str(ckpt.path), None)  # a full checkpoint loads by itself


def test_malformed_record_is_a_clear_error_and_skipped_in_listings(_isolated_home: Path) -> None:
    bad = _isolated_home / "checkpoints" / "sft-bad"
    bad.mkdir(parents=True)
    (bad / "checkpoint.json").write_text('{"name": "sft-bad"}')
    with pytest.raises(ModelLoadError, match="malformed"):
        find_checkpoint("sft-bad")
    assert list_checkpoints() == []


# --- (b)-(e) with the real embedded model ----------------------------------------------------------

TINY = {
    "max_steps": 2,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "per_device_eval_batch_size": 4,
    "learning_rate": 1e-3,
    "lora_dropout": 0.0,
    "disable_tqdm": True,
}


def fill(store: TrajectoryStore, run: str = "r1") -> None:
    for task in ("last", "first", "add", "rev"):
        store.append(episode(run, task))
    store.append(episode(run, "fails", success=False))


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_loss_is_on_completion_tokens_only_and_prompt_is_the_inference_prompt(
    store: TrajectoryStore, embedded_model: TransformersChatModel
) -> None:
    fill(store)
    job = prepare_sft(SFTTrainConfig(run="r1", **TINY), store)
    tok = job.trainer.processing_class
    rows = {r["task_id"]: r for r in job.examples.rows}
    # The prompt of every row, tokenized as the inference backend renders it.
    inference = {
        tid: tok(
            embedded_model.chat_prompt([Message(**m) for m in r["messages"][:-1]]), add_special_tokens=False
        ).input_ids
        for tid, r in rows.items()
    }
    batches = list(job.trainer.get_train_dataloader())  # the trainer's own dataset, sampler and collator
    seen = set()
    for batch in batches:
        assert set(batch) >= {"input_ids", "labels", "attention_mask"}
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
            ids, labels, n = ids.tolist(), labels.tolist(), int(mask.sum())
            [tid] = [t for t, p in inference.items() if ids[: len(p)] == p]  # prompt == what the solver saw
            start = len(inference[tid])
            seen.add(tid)
            assert labels[:start] == [-100] * start  # no loss on any prompt token
            assert labels[start:n] == ids[start:n]  # loss on every completion token
            assert labels[n:] == [-100] * (len(labels) - n)  # nor on padding
            completion = rows[tid]["messages"][-1]["content"]
            assert tok.decode(ids[start:n]) == completion + "<|im_end|>\n"  # the answer and its end of turn
    assert seen == set(rows) and len(rows) == 4


@dataclass
class Trained:
    home: Path
    store_path: Path
    ckpt: Checkpoint
    before: dict[str, torch.Tensor]
    after: dict[str, torch.Tensor]


# The tests below share one LoRA run: keep the module on one xdist worker so it trains once.
pytestmark = pytest.mark.xdist_group("sft")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """One short LoRA run on the embedded model, shared by the tests below (its own home)."""
    root = tmp_path_factory.mktemp("sft")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTODIDACT_HOME", str(root / "home"))
        with open_store(str(root / "t.db")) as store:
            fill(store)
            job = prepare_sft(SFTTrainConfig(run="r1", checkpoint_name="sft-first", **TINY), store)
            before = trainable(job.trainer.model)
            ckpt = run_job(job)
            after = trainable(job.trainer.model)
    yield Trained(root / "home", root / "t.db", ckpt, before, after)


@pytest.mark.slow
def test_training_changes_the_adapter_lowers_the_loss_and_registers(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTODIDACT_HOME", str(trained.home))
    assert trained.before and all("lora_" in n for n in trained.before)
    for name, old in trained.before.items():
        assert not torch.equal(old, trained.after[name]), f"{name} did not change"

    ckpt = trained.ckpt
    m = ckpt.metrics
    assert m.loss_before is not None and m.loss_after is not None and m.loss_after < m.loss_before
    assert m.steps == 2 and m.examples == 4 and m.tokens > 0 and m.seconds > 0

    assert find_checkpoint("sft-first") == ckpt
    record = json.loads((trained.home / "checkpoints" / "sft-first" / "checkpoint.json").read_text())
    assert record["kind"] == "lora" and record["base_model"] == "embedded" and record["parent"] is None
    assert record["method"] == "sft" and record["path"] == "model"
    assert record["datasets"][0]["runs"] == ["r1"] and record["datasets"][0]["counts"]["examples"] == 4
    assert record["config"]["lora_r"] == 16 and record["config"]["max_steps"] == 2
    assert (ckpt.path / "adapter_config.json").is_file() and (ckpt.path / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_saved_adapter_loads_and_generates(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTODIDACT_HOME", str(trained.home))
    ckpt = trained.ckpt
    model, tok = load_model_and_tokenizer("embedded", adapter=str(ckpt.path))
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert loaded.keys() == trained.after.keys()
    assert all(torch.equal(loaded[n], trained.after[n]) for n in loaded)  # saved exactly what was trained
    base_tok = load_model_and_tokenizer("embedded")[1]
    assert tok.chat_template == base_tok.chat_template  # inference renders prompts as training did

    cfg = resolve_model(ckpt.name)
    assert cfg == TransformersConfig(path="embedded", adapter=str(ckpt.path))
    chat = cfg.build()
    [c] = chat.generate_sync([prompt("last")], SamplingParams(max_tokens=12))  # type: ignore[attr-defined]
    assert c.error is None and c.text.strip() and c.token_ids


@pytest.mark.slow
def test_training_on_a_checkpoint_continues_its_adapter_and_sets_parent(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTODIDACT_HOME", str(trained.home))
    with open_store(str(trained.store_path)) as store:
        cfg = SFTTrainConfig(run="r1", model="sft-fi", checkpoint_name="sft-second", **{**TINY, "max_steps": 1})
        job = prepare_sft(cfg, store)
        start = trainable(job.trainer.model)
        # The new run starts from the parent's trained adapter, not from a fresh one.
        assert {n: torch.equal(p, trained.after[n]) for n, p in start.items()} == dict.fromkeys(trained.after, True)
        child = run_job(job)
        with pytest.raises(ConfigError, match="already exists"):
            prepare_sft(cfg, store)  # the name is taken now
    assert child.parent == "sft-first" and child.base_model == "embedded" and child.kind == "lora"
    assert child.metrics.loss_before == pytest.approx(trained.ckpt.metrics.loss_after, abs=1e-4)
    assert find_checkpoint("sft-second") == child
    assert [c.name for c in list_checkpoints()] == ["sft-second", "sft-first"]


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_saved_state(store: TrajectoryStore, _isolated_home: Path) -> None:
    fill(store)
    saving: dict[str, Any] = {**TINY, "save_strategy": "steps", "save_steps": 1, "checkpoint_name": "res"}
    first = prepare_sft(SFTTrainConfig(run="r1", **{**saving, "max_steps": 1}), store)
    first.trainer.train()  # then the process dies: nothing is registered
    states = _isolated_home / "checkpoints" / "res" / "trainer"
    assert (states / "checkpoint-1" / "trainer_state.json").is_file() and find_checkpoint("res") is None
    cut_off = states / "checkpoint-2"  # a crash in the middle of the next save: no trainer_state.json yet
    cut_off.mkdir()
    (cut_off / "adapter_model.safetensors").write_bytes(b"\0" * 10)

    job = prepare_sft(SFTTrainConfig(run="r1", resume_from_checkpoint=True, **saving), store)  # type: ignore[arg-type]
    ran: list[int] = []
    step = job.trainer.training_step

    def counted(*args: Any, **kwargs: Any) -> Any:
        ran.append(job.trainer.state.global_step)
        return step(*args, **kwargs)

    job.trainer.training_step = counted  # type: ignore[method-assign]
    ckpt = run_job(job)
    assert ran == [1]  # only the second step ran: the first came back from the last whole saved state
    assert (cut_off / "trainer_state.json").is_file()  # removed, then saved whole by the resumed run
    assert ckpt.metrics.steps == 2 and find_checkpoint("res") == ckpt
