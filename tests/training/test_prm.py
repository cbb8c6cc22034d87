"""ReST-MCTS* (training.prm): inferred step values on hand-made trees, a process reward model
fitted on the embedded model's features, the checkpoint it makes, and the data it filters."""

from __future__ import annotations

from pathlib import Path as FsPath

import pytest

from agents.llm.base import resolve_model
from agents.llm.hf_local import TransformersChatModel
from autodidact.errors import ConfigError, NothingToTrainError
from autodidact.types import PolicyRef, Step, Task, Trajectory
from memory.base import TrajectoryStore
from training.agent_r import Path
from training.checkpoints import find_checkpoint
from training.data import DataFields, _Tally, build_examples
from training.prm import PRMTrainConfig, ProcessRewardModel, inferred_values, loaded, train_prm, tree_nodes

from .test_data import A0, C0, W2, G, W, path, tree


def tpath(answers: list[str], reward: float) -> Path:
    steps = tuple(Step(index=i, role="solver", completion=a) for i, a in enumerate(answers))
    traj = Trajectory(
        run_id="r",
        task=Task(id="t", suite="s", prompt="?"),
        env_id="code",
        policy=PolicyRef(model="m"),
        steps=steps,
        reward=reward,
    )
    return Path(traj, steps)


def test_inferred_values_climb_towards_a_correct_end_and_fall_where_every_rollout_failed() -> None:
    tree_ = [tpath(["a", "b", "c"], 1.0), tpath(["a", "x"], 0.0), tpath(["a", "b", "y"], 0.0), tpath(["z"], 0.0)]
    good, side, late, never = inferred_values(tree_)
    # a: 2 steps from the correct end, w = (1 - 0) / 3; b: 1 step, w = (1 - 1/3) / 2; c: w = (1 - 2/3) / 1
    assert good == pytest.approx([1 / 3, 2 / 3, 1.0])
    # x: no correct end below it, 0 steps to its end: w = -(1 - 1/3) / 1, floored at 0
    assert side == pytest.approx([1 / 3, 0.0])
    # y leaves a good prefix at 2/3: w = -(1 - 2/3) / 1 = -1/3
    assert late == pytest.approx([1 / 3, 2 / 3, 1 / 3])
    assert never == [0.0]
    # the threshold of a correct path
    assert inferred_values([tpath(["a"], 0.5)], alpha=0.5) == [[1.0]]
    assert inferred_values([tpath(["a"], 0.5)], alpha=1.0) == [[0.0]]


def test_tree_nodes_are_the_distinct_steps_with_their_values(store: TrajectoryStore) -> None:
    for t in tree():  # good: A0 → G; late: A0 → W; early: C0 → W2
        store.append(t)
    tally = _Tally()
    nodes = tree_nodes(store, PRMTrainConfig(run="t1"), tally)
    by_answer = {n.answer: n.value for n in nodes}
    assert len(nodes) == 5 and tally.counts["trees"] == 1 and tally.counts["correct_trees"] == 1  # A0 once
    assert by_answer == pytest.approx({A0: 0.5, G: 1.0, W: 0.0, C0: 0.0, W2: 0.0})


def test_prm_with_no_trees_is_nothing_to_train(store: TrajectoryStore) -> None:
    store.append(path("t1", "only", [W]).model_copy(update={"steps": ()}))
    with pytest.raises(NothingToTrainError, match="collect trees with --graph mcts"):
        train_prm(PRMTrainConfig(run="t1"), store)


@pytest.mark.slow
def test_a_prm_fits_the_inferred_values_is_a_value_checkpoint_and_filters_success_rows(
    store: TrajectoryStore, embedded_model: TransformersChatModel, _isolated_home: FsPath
) -> None:
    for run in ("t1", "t2"):
        for t in [*tree(run), path(run, f"{run}-good2", [C0, G], parent=f"{run}-good")]:
            store.append(t)
    ckpt = train_prm(PRMTrainConfig(run=["t1", "t2"], checkpoint_name="prm1", folds=2), store)
    assert find_checkpoint("prm1") == ckpt and ckpt.kind == "value" and ckpt.method == "prm"
    extra = ckpt.metrics.extra
    assert ckpt.metrics.examples == 12 and extra["critic_loss_after"] < extra["critic_loss_before"]
    assert {"mae_held_out", "mae_of_the_mean", "value_mean"} <= set(extra)
    with pytest.raises(ConfigError, match="is a value model"):
        resolve_model("prm1")

    prm = loaded("prm1")
    good = tree("t1")[0]
    [a0, g] = good.steps
    late_w = tree("t1")[1].steps[1]
    scores = prm.values([([m.model_dump() for m in s.messages], s.completion or "") for s in (a0, g, late_w)])
    assert all(0.0 <= v <= 1.0 for v in scores)
    assert scores[1] > scores[2]  # the right answer over the wrong one, from the same state
    with pytest.raises(ConfigError, match="not a process reward model"):
        ProcessRewardModel.load("nope")

    # Filtering success rows (A0, G and C0, G of the good paths): a threshold between the two
    # best scores keeps only the best-scored row.
    plain = build_examples(DataFields(run="t1", data=["success"]), store)
    values = prm.values([(r["messages"][:-1], r["messages"][-1]["content"]) for r in plain.rows])
    cut = sum(sorted(values)[-2:]) / 2
    kept = build_examples(DataFields(run="t1", data=["success"], prm="prm1", prm_min=cut), store)
    assert kept.rows == [r for r, v in zip(plain.rows, values, strict=True) if v >= cut] and len(kept.rows) == 1
    assert kept.source.counts["below_prm_min"] == len(plain.rows) - 1 == 3
    assert kept.source.filters["prm"] == "prm1"

    # On CPU the PRM never computes beside generation (both on all cores would oversubscribe
    # them): scoring waits while the policy holds the model lock, and goes on once it is free.
    import threading

    if embedded_model.device.type != "cpu":
        return  # on a GPU each model has a lock of its own
    asked = [([m.model_dump() for m in g.messages], g.completion or "")]
    done: list[list[float]] = []
    scorer = threading.Thread(target=lambda: done.append(prm.values(asked)))
    with embedded_model._lock:
        scorer.start()
        scorer.join(timeout=1.0)
        assert scorer.is_alive() and not done
    scorer.join(timeout=60)
    assert len(done) == 1 and done[0] == pytest.approx([scores[1]], abs=1e-4)


def test_a_prm_asked_from_many_threads_at_once_is_loaded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    import training.prm

    calls: list[str] = []

    def slow_load(name: str) -> object:
        calls.append(name)
        time.sleep(0.05)
        return object()

    monkeypatch.setattr(training.prm.ProcessRewardModel, "load", staticmethod(slow_load))
    monkeypatch.setattr(training.prm, "_LOADED", {})
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(loaded("p"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["p"] and len(got) == 4 and all(g is got[0] for g in got)
