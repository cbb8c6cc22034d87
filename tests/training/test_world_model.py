"""The world model's next-observation accuracy on held-out transitions (training.world_model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents.llm.hf_local import TransformersChatModel
from memory.base import TrajectoryStore
from tests.agents.scripted import ScriptedModel
from training.evolve import Evolution, EvolveConfig
from training.world_model import evaluate_world_model, held_out_transitions, line_f1, score_predictions

from .test_data import FEEDBACK, W2, G, W, tree
from .test_evolve import Scripted


def test_line_f1_counts_lines_as_multisets() -> None:
    assert line_f1("a\nb", "a\nb") == 1.0
    assert line_f1("a\n  b  ", "a\nb\n") == 1.0  # whitespace does not count
    assert line_f1("a\nc", "a\nb") == 0.5
    assert line_f1("a\na", "a") == pytest.approx(2 / 3)  # precision 1/2, recall 1
    assert line_f1("", "") == 1.0 and line_f1("x", "") == 0.0


async def test_predictions_are_scored_exact_and_by_lines(store: TrajectoryStore) -> None:
    for t in tree():
        store.append(t)
    rows = held_out_transitions(store, ["t1"])
    real = [r["messages"][-1]["content"] for r in rows]
    assert sorted(real) == sorted([FEEDBACK[G], FEEDBACK[W], FEEDBACK[W2]])
    # Exactly right (with the role's label, which the parser drops); one line of two right; an error.
    model = ScriptedModel([f"Next page:\n{real[0]}", f"{real[1]}\nsomething else", "ERROR"])
    got = await score_predictions(model, rows, concurrency=1)  # type: ignore[arg-type]
    assert got == {"transitions": 3.0, "exact": pytest.approx(1 / 3), "line_f1": pytest.approx((1 + 2 / 3 + 0) / 3)}
    assert model.seen[0] and model.seen[0][-1].content.startswith("Now:")


def test_evolve_measures_a_new_world_model_against_the_incumbents(
    _isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.world_model

    asked: list[tuple[str, list[str]]] = []

    def measured(spec: str, store: Any, runs: list[str], *, limit: int | None = 64) -> dict[str, float]:
        asked.append((spec, runs))
        return {"transitions": 5.0, "exact": 0.2 if spec == "embedded" else 0.6, "line_f1": 0.5}

    monkeypatch.setattr(training.world_model, "evaluate_world_model", measured)
    cfg = EvolveConfig(name="wm", rounds=1, methods=["sft"], roles={"world_model": ["world_model"]})
    evo = Evolution(cfg, store=None, log=lambda _: None)
    scripted = Scripted(evo, {})
    state = evo.run()
    got = state["stages"]["r1/world_model"]
    assert asked == [("embedded", ["wm-r0-eval-val"]), ("wm-r1-world_model", ["wm-r0-eval-val"])]
    assert (got["before"]["exact"], got["after"]["exact"]) == (0.2, 0.6) and got["promoted"]
    page = (_isolated_home / "evolve" / "wm" / "report.html").read_text()
    assert "next-observation accuracy 20.0% → 60.0%" in page and "not worse on exact accuracy" in page
    # the candidate was measured with the new world model
    assert [roles for run, _, roles, _ in scripted.measured if run == "wm-r1-eval-val"] == [
        {"world_model": "wm-r1-world_model"}
    ]


def test_a_worse_world_model_is_not_used(_isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.world_model

    def measured(spec: str, store: Any, runs: list[str], *, limit: int | None = 64) -> dict[str, float]:
        return {"transitions": 5.0, "exact": 0.4, "line_f1": 0.7 if spec == "embedded" else 0.6}

    monkeypatch.setattr(training.world_model, "evaluate_world_model", measured)
    cfg = EvolveConfig(name="wm2", rounds=1, methods=["sft"], roles={"world_model": ["world_model"]})
    evo = Evolution(cfg, store=None, log=lambda _: None)
    scripted = Scripted(evo, {})
    state = evo.run()
    got = state["stages"]["r1/world_model"]
    assert not got["promoted"] and "not used" in got["reason"]
    # the candidate is measured (and would be promoted) without it: the incumbent had none
    assert [roles for run, _, roles, _ in scripted.measured if run == "wm2-r1-eval-val"] == [{}]


@pytest.mark.slow
def test_embedded_model_as_world_model_on_stored_transitions(
    store: TrajectoryStore, embedded_model: TransformersChatModel
) -> None:
    for t in tree():
        store.append(t)
    got = evaluate_world_model("embedded", store, ["t1"], limit=2)
    assert got["transitions"] == 2.0 and 0.0 <= got["exact"] <= got["line_f1"] + 1e-9 <= 1.0 + 1e-9
