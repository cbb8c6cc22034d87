"""`autodidact evolve` (training.evolve, training.report): the gate, the state, the report, and
resuming after kill -9 during collection and during training with the real embedded model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from autodidact.config import parse
from autodidact.errors import ConfigError
from environments.tasks import load_suite
from memory.base import TrajectoryQuery, open_store
from training.evolve import Evolution, EvolveConfig, resume_config, wilson
from training.report import PLOTS


def test_wilson_interval_brackets_the_rate() -> None:
    lo, hi = wilson(9, 20)
    assert lo < 0.45 < hi and (round(lo, 3), round(hi, 3)) == (0.258, 0.658)
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_config_rejects_unknown_methods_and_keys() -> None:
    with pytest.raises(ValueError, match="methods must list"):
        EvolveConfig(methods=["ppo"])
    with pytest.raises(ValueError, match="extra"):
        EvolveConfig.model_validate({"round": 3})


def test_a_stage_field_set_alone_keeps_the_other_defaults() -> None:
    cfg = parse(EvolveConfig, None, ["collect.concurrency=64", "collect.sampling.max_tokens=64", "evaluate.limit=5"])
    assert cfg.collect == {
        "split": "train",
        "limit": 40,
        "samples_per_task": 4,
        "concurrency": 64,
        "sampling": {"temperature": 0.8, "max_tokens": 64},
    }
    assert cfg.evaluate == {"split": "test", "concurrency": 16, "limit": 5, "sampling": {"max_tokens": 128}}
    assert EvolveConfig.model_validate(cfg.model_dump()) == cfg  # a resumed run reads back the same config


class Scripted:
    """Stands in for the stages that need a model: held-out success per run id, and training that
    names its checkpoint after the stage and records what it started from."""

    def __init__(self, evo: Evolution, held_out: dict[str, float]) -> None:
        self.held_out, self.trained, self.rolled = held_out, [], []
        self.stages: dict[str, dict[str, Any]] = {}
        evo.rollout = self.rollout  # type: ignore[method-assign]
        evo.train = self.train  # type: ignore[method-assign]

    def rollout(self, run_id: str, stage: dict[str, Any], model: str, roles: dict[str, str], k: int) -> dict[str, Any]:
        self.rolled.append((run_id, model, dict(roles)))
        self.stages[run_id] = stage
        rate = self.held_out.get(run_id, 0.3)
        n = 20
        return {
            "run": run_id,
            "model": model,
            "episodes": n,
            "successes": round(rate * n),
            "success": rate,
            "ci95": list(wilson(round(rate * n), n)),
            "mean_reward": rate,
            "suites": {"bundled": {"successes": round(rate * n), "episodes": n}},
            "roles": {"solver": {"calls": n, "ok": n}},
        }

    def train(self, method: str, name: str, **fields: Any) -> dict[str, Any]:
        self.trained.append((name, fields["model"], fields.get("data")))
        return {"checkpoint": name, "method": method, "examples": 10, "steps": 2, "loss_before": 1.0, "loss_after": 0.5}


def test_gate_refuses_a_worse_candidate_and_the_next_round_starts_from_the_incumbent(_isolated_home: Path) -> None:
    cfg = EvolveConfig(name="g", rounds=3, methods=["sft", "revision"], roles={"reviewer": ["reviewer"]})
    evo = Evolution(cfg, store=None, progress=False, log=lambda _: None)
    fake = Scripted(evo, {"g-r0-eval": 0.5, "g-r1-eval": 0.4, "g-r2-eval": 0.5, "g-r3-eval": 0.45})
    state = evo.run()

    gates = [state["stages"][f"r{k}/gate"] for k in (1, 2, 3)]
    assert [(g["before"], g["after"], g["promoted"]) for g in gates] == [
        (0.5, 0.4, False),  # worse: refused, both numbers kept
        (0.5, 0.5, True),  # not worse: promoted
        (0.5, 0.45, False),
    ]
    assert state["incumbent"] == {"model": "g-r2-sft", "roles": {"reviewer": "g-r2-reviewer"}}
    # Round 2 trained from the starting policy again (round 1's candidate was refused), round 3
    # from round 2's; the policy's data mixes success and revision rows; role adapters start from the base.
    assert fake.trained == [
        ("g-r1-sft", "embedded", ["success", "revision"]),
        ("g-r1-reviewer", "embedded", ["reviewer"]),
        ("g-r2-sft", "embedded", ["success", "revision"]),
        ("g-r2-reviewer", "embedded", ["reviewer"]),
        ("g-r3-sft", "g-r2-sft", ["success", "revision"]),
        ("g-r3-reviewer", "embedded", ["reviewer"]),
    ]
    # Collection uses the incumbent with its role adapters; evaluation the candidate with its own.
    assert ("g-r3-collect", "g-r2-sft", {"reviewer": "g-r2-reviewer"}) in fake.rolled
    assert ("g-r1-eval", "g-r1-sft", {"reviewer": "g-r1-reviewer"}) in fake.rolled

    where = _isolated_home / "evolve" / "g"
    page = (where / "report.html").read_text()
    assert "refused (regressed)" in page and "promoted" in page and "40.0%" in page and "50.0%" in page
    for name in PLOTS:
        assert (where / f"{name}.png").stat().st_size > 1000
    assert state["finished"] is True

    # Running it again does nothing: every stage is done.
    again = Evolution(cfg, store=None, progress=False, log=lambda _: None)
    fake2 = Scripted(again, {})
    again.run()
    assert fake2.rolled == [] and fake2.trained == []
    assert resume_config("g") == cfg


def test_fresh_tasks_draw_other_training_tasks_each_round(_isolated_home: Path) -> None:
    evo = Evolution(EvolveConfig(name="f", rounds=2, fresh_tasks=True), store=None, progress=False, log=lambda _: None)
    fake = Scripted(evo, {})
    evo.run()

    assert [fake.stages[f"f-r{k}-collect"].get("task_seed") for k in (1, 2)] == [1, 2]
    assert "task_seed" not in fake.stages["f-r1-eval"]  # the held-out split is evaluated whole
    first, second = (load_suite("bundled", split="train", limit=40, seed=k) for k in (1, 2))
    assert len(first) == 40 and all(t.split == "train" for t in first)
    assert {t.id for t in first} != {t.id for t in second}
    assert first != load_suite("bundled", split="train", limit=40)  # not the first 40
    assert load_suite("bundled", split="train", limit=40, seed=1) == first  # a resumed round draws the same


def test_a_round_that_trains_nothing_is_not_evaluated(_isolated_home: Path) -> None:
    evo = Evolution(EvolveConfig(name="n", rounds=1, methods=["webrl"]), store=None, log=lambda _: None)
    fake = Scripted(evo, {})
    fake.train = lambda method, name, **f: {"checkpoint": None, "skipped": "no successes"}  # type: ignore[method-assign]
    evo.train = fake.train  # type: ignore[method-assign]
    state = evo.run()
    gate = state["stages"]["r1/gate"]
    assert (gate["promoted"], gate["reason"]) == (False, "nothing was trained this round")
    assert "r1/evaluate" not in state["stages"] and state["incumbent"]["model"] == "embedded"


def test_same_name_with_another_config_is_a_clear_error(_isolated_home: Path) -> None:
    evo = Evolution(EvolveConfig(name="c", rounds=1), store=None, log=lambda _: None)
    evo.save()
    with pytest.raises(ConfigError, match=r"another config.*--resume c"):
        Evolution(EvolveConfig(name="c", rounds=2), store=None)
    with pytest.raises(ConfigError, match="no evolve run 'nope'"):
        resume_config("nope")


# --- kill -9 and resume, with the real model --------------------------------------------------------

TINY_EVOLVE = """
name: k
rounds: 1
collect: {split: train, limit: 4, samples_per_task: 2, concurrency: 2, sampling: {temperature: 0.8, max_tokens: 128}}
evaluate: {split: test, limit: 2, sampling: {max_tokens: 128}}
methods: [sft]
train: {max_steps: 6, save_steps: 1, per_device_train_batch_size: 2, gradient_accumulation_steps: 1, learning_rate: 1.0e-3, disable_tqdm: true}
"""


def start(home: Path, config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AUTODIDACT_HOME": str(home)}
    cmd = [sys.executable, "-m", "autodidact.cli", "evolve", "--config", str(config)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def kill_when(proc: subprocess.Popen[bytes], ready: Any, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"evolve ended before the kill: {proc.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stored(home: Path, run: str) -> list[str]:
    if not (home / "autodidact.db").exists():
        return []
    with open_store(str(home / "autodidact.db")) as st:
        return [t.id for t in st.query(TrajectoryQuery(run_id=run))]


@pytest.mark.slow
def test_kill_9_during_collection_and_training_then_resume_keeps_every_episode_once(_isolated_home: Path) -> None:
    home = _isolated_home
    config = home.parent / "evolve.yaml"
    config.write_text(TINY_EVOLVE)

    # 1. Killed in the middle of collection: some episodes of the run are stored, not all.
    proc = start(home, config)
    kill_when(proc, lambda: 2 <= len(stored(home, "k-r1-collect")) < 8)
    before = stored(home, "k-r1-collect")
    assert 2 <= len(before) < 8

    # 2. Resumed, then killed while training, after the trainer saved a state.
    proc = start(home, config)
    states = home / "checkpoints" / "k-r1-sft" / "trainer"
    kill_when(proc, lambda: states.is_dir() and any(p.name.startswith("checkpoint-") for p in states.iterdir()))
    after = stored(home, "k-r1-collect")
    assert len(after) == len(set(after)) == 8 and set(before) <= set(after)
    assert not (home / "checkpoints" / "k-r1-sft" / "checkpoint.json").exists()

    # 3. Resumed to the end.
    env = {**os.environ, "AUTODIDACT_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "autodidact.cli", "evolve", "--resume", "k"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round 1: held-out success" in done.stdout and "report:" in done.stdout
    for run, n in (("k-r0-eval", 2), ("k-r1-collect", 8), ("k-r1-eval", 2)):
        ids = stored(home, run)
        assert len(ids) == len(set(ids)) == n, run
    state = json.loads((home / "evolve" / "k" / "state.json").read_text())
    sft = state["stages"]["r1/train/sft"]
    assert sft["checkpoint"] == "k-r1-sft" and sft["steps"] == 6
    assert state["finished"] and (home / "evolve" / "k" / "report.html").is_file()


def test_curriculum_tasks_join_the_rounds_training_data(_isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.curriculum

    made: list[tuple[int, str]] = []

    def curriculum(evo: Evolution, k: int, model: str, roles: dict[str, str]) -> dict[str, Any]:
        made.append((k, model))
        return {"kept": 3, "run": f"cu-r{k}-curriculum"}

    monkeypatch.setattr(training.curriculum, "evolve_curriculum", curriculum)
    cfg = EvolveConfig(name="cu", rounds=1, methods=["sft"], curriculum={"enabled": True})  # type: ignore[arg-type]
    evo = Evolution(cfg, store=None, log=lambda _: None)
    runs: list[Any] = []
    fake = Scripted(evo, {})
    train = fake.train
    evo.train = lambda method, name, **f: runs.append(f["run"]) or train(method, name, **f)  # type: ignore[method-assign]
    state = evo.run()
    assert made == [(1, "embedded")] and runs == [["cu-r1-collect", "cu-r1-curriculum"]]
    assert state["stages"]["r1/curriculum"]["kept"] == 3


@pytest.mark.slow
@pytest.mark.xdist_group("vllm")  # beside the other vLLM server tests: one server at a time on 2 cores
def test_evolve_on_vllm_serves_each_rounds_adapter_from_one_server(
    _isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from agents.llm.vllm_server import PolicyServer, vllm_python
    from autodidact.errors import ModelLoadError

    try:
        vllm_python()
    except ModelLoadError:
        pytest.skip("vLLM is not installed (make vllm builds .venv-vllm)")
    seen: list[tuple[str, list[str], Any]] = []
    policy = PolicyServer.policy

    async def recorded(self: PolicyServer, spec: str, *, keep: Any = ()) -> Any:
        chat = await policy(self, spec, keep=keep)
        seen.append((spec, self.loaded(), self.chat.server))
        return chat

    monkeypatch.setattr(PolicyServer, "policy", recorded)
    raw = yaml.safe_load(TINY_EVOLVE)
    raw.update(name="v", engine="vllm", vllm={"max_model_len": 2048, "kv_cache_gb": 1, "startup_timeout_s": 600})
    raw["collect"].update(limit=4, samples_per_task=2, concurrency=8, sampling={"temperature": 0.8, "max_tokens": 64})
    raw["evaluate"].update(sampling={"max_tokens": 64})
    raw["train"].update(max_steps=2)
    with open_store(str(_isolated_home / "autodidact.db")) as store:
        evo = Evolution(EvolveConfig.model_validate(raw), store, progress=False, log=lambda _: None)
        state = evo.run()
        evaluated = [t for t in store.query(TrajectoryQuery(run_id="v-r1-eval")) if t.parent_id is None]
    assert state["stages"]["r1/train/sft"]["checkpoint"] == "v-r1-sft", state["stages"]["r1/train/sft"]
    # r0 evaluation and r1 collection on the base; r1's candidate from its adapter, loaded by name
    assert [(spec, loaded) for spec, loaded, _ in seen] == [
        ("embedded", []),
        ("embedded", []),
        ("v-r1-sft", ["v-r1-sft"]),
    ]
    server = seen[0][2]
    assert all(s is server for _, _, s in seen) and server.starts == 1  # one server, never restarted
    assert not server.alive() and evo._server is None  # stopped when evolve ended
    assert len(evaluated) == 2
    for t in evaluated:
        assert t.policy.model == "v-r1-sft" and t.policy.adapter == "v-r1-sft"
        assert t.policy.backend == "vllm-server:embedded+v-r1-sft"
        assert t.steps and all(s.error is None for s in t.steps) and t.steps[0].completion.strip()
