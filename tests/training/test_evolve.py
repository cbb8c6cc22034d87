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
from autodidact.types import Action, Observation, PolicyRef, Step, Task, Trajectory
from environments.tasks import load_suite
from memory.base import TrajectoryQuery, open_store
from training.evaluation import SuiteEval, suite_numbers
from training.evolve import Evolution, EvolveConfig, overall, resume_config
from training.report import PLOTS
from training.stats import wilson


def test_config_rejects_unknown_methods_and_keys() -> None:
    with pytest.raises(ValueError, match="methods must list"):
        EvolveConfig(methods=["ppo"])
    with pytest.raises(ValueError, match="extra"):
        EvolveConfig.model_validate({"round": 3})


def test_a_stage_field_set_alone_keeps_the_other_defaults() -> None:
    cfg = parse(
        EvolveConfig, None, ["collect.concurrency=8", "collect.sampling.max_tokens=64", "evaluate.concurrency=4"]
    )
    assert cfg.collect == {
        "split": "train",
        "limit": 40,
        "samples_per_task": 4,
        "max_steps": 2,
        "concurrency": 8,
        "sampling": {"temperature": 0.8, "max_tokens": 64},
    }
    assert cfg.evaluate == {"max_steps": 2, "concurrency": 4, "sampling": {"max_tokens": 128}}
    assert [s.name for s in cfg.suites] == ["val", "test", "hard", "humaneval", "mbpp_plus"]
    assert (cfg.gate.suite, cfg.gate.metric, cfg.gate.margin) == ("val", "sampled", 0.05)
    assert EvolveConfig.model_validate(cfg.model_dump()) == cfg  # a resumed run reads back the same config


def test_a_web_run_keeps_the_web_defaults_and_is_measured_on_its_own_suite() -> None:
    cfg = parse(EvolveConfig, None, ["env=web", "suite=miniwob-seeds", "collect.limit=8"])
    assert [(s.name, s.split, s.suite) for s in cfg.suites] == [("val", "val", None), ("test", "test", None)]
    assert cfg.collect == {
        "split": "train",
        "limit": 8,
        "samples_per_task": 4,
        "concurrency": 64,
        "sampling": {"temperature": 0.8},
    }
    assert cfg.evaluate == {"concurrency": 64, "sampling": {}}
    # what a stage runs with: the web env's own steps and answer length, the suite named once
    collect, greedy = cfg.run_config(cfg.collect), cfg.run_config(cfg.evaluate, **cfg.suites[1].run_fields())
    assert (collect.suite, collect.max_steps, collect.sampling.max_tokens) == ("miniwob-seeds", 15, 64)
    assert (greedy.suite, greedy.split, greedy.sampling.stop) == ("miniwob-seeds", "test", ("\n\n",))
    set_steps = parse(EvolveConfig, None, ["env=web", "evaluate.max_steps=8"])
    assert set_steps.run_config(set_steps.evaluate).max_steps == 8
    code = EvolveConfig()
    assert code.run_config(code.evaluate, **code.suites[0].run_fields()).suite == "bundled"


def test_config_names_what_to_set_instead() -> None:
    with pytest.raises(ValueError, match=r"evaluate: \['limit', 'split'\] are set per suite"):
        parse(EvolveConfig, None, ["evaluate.split=test", "evaluate.limit=5"])
    with pytest.raises(ValueError, match=r"gate\.suite 'dev' is not one of suites"):
        EvolveConfig.model_validate({"gate": {"suite": "dev"}})
    with pytest.raises(ValueError, match="needs samples > 0 in suite 'val'"):
        EvolveConfig.model_validate({"suites": [{"name": "val", "split": "val", "samples": 0}]})
    with pytest.raises(ValueError, match="each with its own name"):
        EvolveConfig.model_validate({"suites": [{"name": "val"}, {"name": "val"}]})


class Scripted:
    """Stands in for the stages that need a model: pass@1 per evaluation run id (on 20 tasks, the
    first ones solved), and training that names its checkpoint after the stage and records what
    it started from."""

    def __init__(self, evo: Evolution, held_out: dict[str, float]) -> None:
        self.held_out, self.trained, self.rolled, self.measured = held_out, [], [], []
        self.stages: dict[str, dict[str, Any]] = {}
        evo.rollout = self.rollout  # type: ignore[method-assign]
        evo.train = self.train  # type: ignore[method-assign]
        evo.measure = self.measure  # type: ignore[method-assign]
        self.evo = evo

    def rollout(self, run_id: str, stage: dict[str, Any], model: str, roles: dict[str, str], k: int) -> dict[str, Any]:
        self.rolled.append((run_id, model, dict(roles)))
        self.stages[run_id] = stage
        rate, n = 0.3, 20
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

    def measure(self, suite: SuiteEval, model: str, roles: dict[str, str], k: int) -> dict[str, Any]:
        run_id = f"{self.evo.name}-r{k}-eval-{suite.name}"
        self.measured.append((run_id, model, dict(roles), suite))
        rate, n = self.held_out.get(run_id, 0.3), 20
        solved = round(rate * n)
        greedy = [
            Trajectory(
                run_id=run_id,
                task=_task(i),
                env_id="code",
                policy=_POLICY,
                success=i < solved,
                reward=float(i < solved),
            )
            for i in range(n)
        ]
        return {"model": model, "runs": [run_id], **suite_numbers(greedy, greedy * 2 if suite.samples else [])}

    def train(self, method: str, name: str, **fields: Any) -> dict[str, Any]:
        self.trained.append((name, fields["model"], fields.get("data")))
        return {"checkpoint": name, "method": method, "examples": 10, "steps": 2, "loss_before": 1.0, "loss_after": 0.5}


_POLICY = PolicyRef(model="scripted", backend="scripted")


def _task(i: int) -> Task:
    return Task(id=f"t/{i}", suite="t", prompt="p", payload={})


def test_gate_refuses_a_worse_candidate_and_the_next_round_starts_from_the_incumbent(_isolated_home: Path) -> None:
    cfg = EvolveConfig(name="g", rounds=3, methods=["sft", "revision"], roles={"reviewer": ["reviewer"]})
    evo = Evolution(cfg, store=None, progress=False, log=lambda _: None)
    fake = Scripted(evo, {"g-r0-eval-val": 0.5, "g-r1-eval-val": 0.4, "g-r2-eval-val": 0.5, "g-r3-eval-val": 0.45})
    state = evo.run()

    gates = [state["stages"][f"r{k}/gate"] for k in (1, 2, 3)]
    assert [(g["before"], g["after"], g["promoted"], g["significant"]) for g in gates] == [
        (0.5, 0.4, False, False),  # two tasks lost: may be worse by more than the margin, refused
        (0.5, 0.5, True, False),  # the same tasks solved: not worse, promoted, no significant gain
        (0.5, 0.45, False, False),
    ]
    assert gates[0]["paired"]["val"]["sampled"]["mean"] == pytest.approx(-0.1)
    assert gates[0]["paired"]["test"]["greedy"]["mean"] == 0.0  # every suite is compared, only val decides
    assert state["incumbent"] == {"model": "g-r2-sft", "roles": {"reviewer": "g-r2-reviewer"}, "round": 2}
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
    # Collection uses the incumbent with its role adapters; evaluation the candidate with its own,
    # on every suite, the gate's first.
    assert ("g-r3-collect", "g-r2-sft", {"reviewer": "g-r2-reviewer"}) in fake.rolled
    r1 = [(run, model, roles) for run, model, roles, _ in fake.measured if run.startswith("g-r1-")]
    assert r1[0] == ("g-r1-eval-val", "g-r1-sft", {"reviewer": "g-r1-reviewer"})
    assert [run for run, _, _ in r1] == [f"g-r1-eval-{s}" for s in ("val", "test", "hard", "humaneval", "mbpp_plus")]
    assert [fake.stages[f"g-r{k}-collect"]["task_seed"] for k in (1, 2, 3)] == [1, 2, 3]  # a fresh draw each round

    where = _isolated_home / "evolve" / "g"
    page = (where / "report.html").read_text()
    assert "refused: may be worse by more than 0.05" in page and "promoted: not worse" in page
    assert "40.0%" in page and "50.0%" in page
    for name in PLOTS:
        assert (where / f"{name}.png").stat().st_size > 1000
    assert state["finished"] is True
    assert evo.summary()[0].startswith("round 1: val sampled pass@1 50.0% → 40.0% (refused)")
    assert "Overall: round 2's policy against round 0" in page and overall(state)[0] == 2

    # Running it again does nothing: every stage is done.
    again = Evolution(cfg, store=None, progress=False, log=lambda _: None)
    fake2 = Scripted(again, {})
    again.run()
    assert fake2.rolled == [] and fake2.trained == [] and fake2.measured == []
    assert resume_config("g") == cfg


def test_a_significant_gain_is_promoted_and_said_so(_isolated_home: Path) -> None:
    evo = Evolution(EvolveConfig(name="s", rounds=1, methods=["sft"]), store=None, log=lambda _: None)
    Scripted(evo, {"s-r0-eval-val": 0.2, "s-r1-eval-val": 0.7})
    evo.report = lambda: Path()  # type: ignore[method-assign]  # no plots: not what this test checks
    state = evo.run()
    gate = state["stages"]["r1/gate"]
    assert gate["promoted"] and gate["significant"] and "the gain is significant" in gate["reason"]
    assert gate["paired"]["val"]["sampled"]["p_value"] < 0.05
    # the final incumbent against the start, on every suite
    k, per_suite = overall(state)
    val = per_suite["val"]["greedy"]
    assert k == 1 and (val["before"], val["after"], val["n"]) == (0.2, 0.7, 20) and val["mean"] == pytest.approx(0.5)
    assert val["low"] > 0 and per_suite["test"]["sampled"]["mean"] == 0.0
    assert evo.summary()[-1].startswith(
        "overall: the policy of round 1 against round 0: val greedy 20.0% → 70.0%, +0.500"
    )


def test_search_trees_are_collected_for_revision_data_when_asked(_isolated_home: Path) -> None:
    cfg = EvolveConfig(name="t", rounds=1, methods=["sft", "revision"], trees={"graph_options": {"simulations": 4}})
    evo = Evolution(cfg, store=None, log=lambda _: None)
    fake = Scripted(evo, {})
    runs: list[Any] = []
    train = fake.train
    evo.train = lambda method, name, **f: runs.append(f["run"]) or train(method, name, **f)  # type: ignore[method-assign]
    evo.report = lambda: Path()  # type: ignore[method-assign]  # no plots: not what this test checks
    evo.run()
    trees = fake.stages["t-r1-trees"]
    assert trees["graph"] == "mcts" and trees["samples_per_task"] == 1 and trees["graph_options"] == {"simulations": 4}
    assert trees["task_seed"] == fake.stages["t-r1-collect"]["task_seed"] == 1  # the same tasks as the collection
    assert runs == [["t-r1-collect", "t-r1-trees"]]  # the sft stage learns from both
    # without revision among the methods, no trees are searched
    plain = Evolution(cfg.model_copy(update={"name": "u", "methods": ["sft"]}), store=None, log=lambda _: None)
    fake2 = Scripted(plain, {})
    plain.report = lambda: Path()  # type: ignore[method-assign]
    plain.run()
    assert "u-r1-trees" not in fake2.stages


def test_retraining_from_the_base_uses_every_rounds_data(_isolated_home: Path) -> None:
    evo = Evolution(
        EvolveConfig(name="b", rounds=3, methods=["sft"], train_from="base"), store=None, log=lambda _: None
    )
    fake = Scripted(evo, {"b-r1-eval-val": 0.3, "b-r2-eval-val": 0.3})
    runs: list[Any] = []
    train = fake.train
    evo.train = lambda method, name, **f: runs.append(f["run"]) or train(method, name, **f)  # type: ignore[method-assign]
    evo.report = lambda: Path()  # type: ignore[method-assign]  # no plots: not what this test checks
    evo.run()
    assert [m for _, m, _ in fake.trained] == ["embedded"] * 3  # never from the incumbent
    assert runs == [
        ["b-r1-collect"],
        ["b-r1-collect", "b-r2-collect"],
        ["b-r1-collect", "b-r2-collect", "b-r3-collect"],
    ]


def test_score_trains_on_its_round_s_own_collection_stage_one_then_two(_isolated_home: Path) -> None:
    """SCoRe is on-policy: after SFT it still reads only the round's collection, by the
    incumbent that collected it; stage I in round 1, stage II after."""
    evo = Evolution(EvolveConfig(name="sc", rounds=2, methods=["sft", "score"]), store=None, log=lambda _: None)
    fake = Scripted(evo, {"sc-r1-eval-val": 0.3, "sc-r2-eval-val": 0.3})
    calls: list[tuple[str, Any, Any]] = []
    train = fake.train
    evo.train = lambda method, name, **f: calls.append((method, f["run"], f.get("stage"))) or train(method, name, **f)  # type: ignore[method-assign]
    evo.report = lambda: Path()  # type: ignore[method-assign]  # no plots: not what this test checks
    evo.run()
    assert calls == [
        ("sft", ["sc-r1-collect"], None),
        ("score", ["sc-r1-collect"], 1),
        ("sft", ["sc-r2-collect"], None),
        ("score", ["sc-r2-collect"], 2),
    ]
    assert [m for _, m, _ in fake.trained][1] == "sc-r1-sft"  # score continues the round's SFT checkpoint


def test_bstar_probe_chooses_the_round_temperature_by_balance(_isolated_home: Path) -> None:
    cfg = EvolveConfig(name="bs", rounds=1, methods=["sft"], bstar={"enabled": True, "probe_tasks": 2})  # type: ignore[arg-type]
    evo = Evolution(cfg, store=None, log=lambda _: None)
    fake = Scripted(evo, {})

    def answers(run_id: str) -> list[Trajectory]:
        # 0.4: one answer, always right (no exploration); 0.8: four distinct right answers;
        # 1.2: distinct answers, half of them wrong but passing half the tests (poor precision at 0.5)
        texts = {
            "t0.4": [("a", 1.0)] * 4,
            "t0.8": [(c, 1.0) for c in "abcd"],
            "t1.2": [("a", 1.0), ("b", 1.0), ("x", 0.5), ("y", 0.5)],
        }
        out = []
        for task in range(2):
            for text, reward in texts[run_id.rsplit("-", 1)[1]]:
                step = Step(
                    index=0,
                    role="solver",
                    action=Action(kind="submit", text=text),
                    observation=Observation(text="ok"),
                    reward=reward,
                )
                out.append(
                    Trajectory(
                        run_id=run_id,
                        task=_task(task),
                        env_id="code",
                        policy=_POLICY,
                        steps=(step,),
                        reward=reward,
                        success=reward >= 1.0,
                    )
                )
        return out

    evo.episodes = answers  # type: ignore[method-assign]
    state = evo.run()
    probe = state["stages"]["r1/bstar"]
    assert (probe["temperature"], probe["threshold"]) == (0.8, 1.0) and probe["score"] == 1.0
    by_t = {c["temperature"]: c for c in probe["curves"]}
    assert by_t[0.4]["distinct_correct"] == 1 and by_t[0.4]["balance"]["1"] == 0.25
    assert by_t[1.2]["exploitation"]["0.5"] == 0.5 and by_t[1.2]["exploitation"]["1"] == 1.0
    assert fake.stages["bs-r1-collect"]["sampling"]["temperature"] == 0.8  # the round collects at the choice
    # at 0.8 each task has four distinct right answers: two samples find half, four all of them
    assert probe["balance_by_samples"] == {"2": 0.5, "4": 1.0, "8": 1.0} and probe["samples_per_task"] == 4
    assert fake.stages["bs-r1-collect"]["samples_per_task"] == 4
    assert fake.stages["bs-r1-probe-t0.8"]["samples_per_task"] == 8  # the probe takes the most candidates
    probes = [run for run, _, _ in fake.rolled if "probe" in run]
    assert probes == ["bs-r1-probe-t0.4", "bs-r1-probe-t0.8", "bs-r1-probe-t1.2"]
    assert fake.stages["bs-r1-probe-t0.4"]["max_steps"] == 1 and fake.stages["bs-r1-probe-t0.4"]["task_seed"] == 1001
    assert (_isolated_home / "evolve" / "bs" / "bstar.png").stat().st_size > 1000


def test_fresh_tasks_draw_other_training_tasks_each_round() -> None:
    first, second = (load_suite("bundled", split="train", limit=40, seed=k) for k in (1, 2))
    assert len(first) == 40 and all(t.split == "train" for t in first)
    assert {t.id for t in first} != {t.id for t in second}
    assert first != load_suite("bundled", split="train", limit=40)  # not the first 40
    assert load_suite("bundled", split="train", limit=40, seed=1) == first  # a resumed round draws the same
    assert len({t.id for k in range(1, 4) for t in load_suite("bundled", split="train", limit=40, seed=k)}) > 60


def test_a_round_that_trains_nothing_is_not_evaluated(_isolated_home: Path) -> None:
    evo = Evolution(EvolveConfig(name="n", rounds=1, methods=["webrl"]), store=None, log=lambda _: None)
    fake = Scripted(evo, {})
    fake.train = lambda method, name, **f: {"checkpoint": None, "skipped": "no successes"}  # type: ignore[method-assign]
    evo.train = fake.train  # type: ignore[method-assign]
    evo.report = lambda: Path()  # type: ignore[method-assign]  # no plots: not what this test checks
    state = evo.run()
    gate = state["stages"]["r1/gate"]
    assert (gate["promoted"], gate["reason"]) == (False, "nothing was trained this round")
    assert not any(k.startswith("r1/eval/") for k in state["stages"]) and state["incumbent"]["model"] == "embedded"
    assert evo.summary() == [
        "round 1: nothing was trained this round",
        "overall: no round was promoted; the policy is the starting one",
    ]


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
engine: transformers
collect: {split: train, limit: 4, samples_per_task: 2, max_steps: 1, concurrency: 2, sampling: {temperature: 0.8, max_tokens: 64}}
evaluate: {max_steps: 1, sampling: {max_tokens: 64}}
suites: [{name: val, split: val, limit: 2, samples: 2}]
methods: [sft]
train: {max_steps: 4, save_steps: 1, per_device_train_batch_size: 2, gradient_accumulation_steps: 1, learning_rate: 1.0e-3, disable_tqdm: true,
        min_reward: 0.0}
"""
# min_reward 0: every parsed answer is a training row, so the sft stage trains (and can be killed
# while it does) whether or not the sampled answers pass; with successes only, 8 failed samples
# made it skip training and the run end before the kill (a CI failure).


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
@pytest.mark.timeout(1500)  # three evolve processes (the last one alone may take 900 s on a loaded 2-core machine)
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
    assert "round 1: val sampled pass@1" in done.stdout and "report:" in done.stdout
    for run, n in (("k-r0-eval-val", 2), ("k-r0-eval-val-sampled", 4), ("k-r1-collect", 8), ("k-r1-eval-val", 2)):
        ids = stored(home, run)
        assert len(ids) == len(set(ids)) == n, run
    state = json.loads((home / "evolve" / "k" / "state.json").read_text())
    sft = state["stages"]["r1/train/sft"]
    assert sft["checkpoint"] == "k-r1-sft" and sft["steps"] == 4
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
    evo.report = lambda: Path()  # type: ignore[method-assign]  # no plots: not what this test checks
    state = evo.run()
    assert made == [(1, "embedded")] and runs == [["cu-r1-collect", "cu-r1-curriculum"]]
    assert state["stages"]["r1/curriculum"]["kept"] == 3


@pytest.mark.slow
@pytest.mark.xdist_group("vllm")  # beside the other vLLM server tests: one server at a time on 2 cores
def test_evolve_on_vllm_merged_serves_each_policy_from_its_merged_weights(
    _isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """engine: vllm-merged (auto's choice on CPUs): r0's evaluation and r1's collection on one server
    of the base; the server stopped for training; the candidate served from its merged weights."""
    import yaml

    from agents.llm.vllm_server import MergedPolicyServer, serving_dtype, vllm_python
    from autodidact.errors import ModelLoadError

    try:
        vllm_python()
    except ModelLoadError:
        pytest.skip("vLLM is not installed (make vllm builds .venv-vllm)")
    seen: list[tuple[str, Any, Any]] = []
    policy = MergedPolicyServer.policy

    async def recorded(self: MergedPolicyServer, spec: str, *, keep: Any = ()) -> Any:
        chat = await policy(self, spec, keep=keep)
        seen.append((spec, self, chat.server))
        return chat

    monkeypatch.setattr(MergedPolicyServer, "policy", recorded)
    raw = yaml.safe_load(TINY_EVOLVE)
    raw.update(name="v", engine="auto", vllm={"max_model_len": 2048, "kv_cache_gb": 1, "enforce_eager": True})
    raw["collect"].update(limit=4, samples_per_task=2, concurrency=8, sampling={"temperature": 0.8, "max_tokens": 64})
    raw["evaluate"].update(sampling={"max_tokens": 64})
    raw.update(suites=[{"name": "val", "split": "val", "limit": 2, "samples": 0}], gate={"metric": "greedy"})
    raw["train"].update(max_steps=2)
    with open_store(str(_isolated_home / "autodidact.db")) as store:
        evo = Evolution(EvolveConfig.model_validate(raw), store, progress=False, log=lambda _: None)
        state = evo.run()
        evaluated = [t for t in store.query(TrajectoryQuery(run_id="v-r1-eval-val")) if t.parent_id is None]
    assert state["engine"] == "vllm-merged"  # auto on a machine with vLLM and no GPU
    assert state["stages"]["r1/train/sft"]["checkpoint"] == "v-r1-sft", state["stages"]["r1/train/sft"]
    assert [spec for spec, _, _ in seen] == ["embedded", "embedded", "v-r1-sft"]
    (_, first, base), (_, same, again), (_, second, tuned) = seen
    assert first is same and again is base and first.starts == 1  # r0 eval and r1 collection: one server
    assert second is not first and second.starts == 1  # stopped for training, one start for the candidate
    assert not base.alive() and not tuned.alive() and evo._server is None  # all stopped when evolve ended
    assert tuned.weights.name == f"model-merged-{serving_dtype('auto')}" and tuned.weights.parent.name == "v-r1-sft"
    assert len(evaluated) == 2
    for t in evaluated:
        assert t.policy.model == "v-r1-sft" and t.policy.backend == "vllm-server:v-r1-sft"
        assert t.steps and all(s.error is None for s in t.steps) and t.steps[0].completion.strip()
