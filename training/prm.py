"""ReST-MCTS*: process rewards inferred from search trees, and a process reward model.

After Zhang et al., 2024, "ReST-MCTS*: LLM Self-Training via Process Reward Guided Tree
Search". An ``mcts`` episode stores every explored path of its tree (:mod:`agents.graphs.mcts`);
from those paths this module infers how good each *step* was, without anyone labelling steps,
and fits a process reward model (PRM) on the inferred values. The PRM then guides search
(``graph_options.prm`` of the ``mcts`` graph: value-guided selection, early pruning) and filters
self-training data (``--set prm=NAME prm_min=0.5`` on ``success`` rows).

Algorithm:
    1. **Trees.** Paths of one task in one run that start from the same prompt
       (:func:`training.agent_r.trees`); a node is a prefix of steps, shared by every path that
       takes the same answers up to it.
    2. **Inferred values** (:func:`inferred_values`, the paper's Eq. for ``v_k``): along a path,
       ``v_0 = 0`` and ``v_k = max(v_{k-1} + w_k, 0)`` with
       ``w_k = (1 - v_{k-1}) / (m_k + 1) * (1 - 2 r_k)``, where ``r_k`` is 0 when some path below
       the node reaches a correct answer (reward >= ``alpha``) and 1 otherwise, and ``m_k`` is
       the number of steps from the node to the nearest correct end below it (to the nearest
       end, when there is none). A step on the way to a correct answer climbs towards 1, the
       more the closer it is; a step from which every rollout failed falls to 0.
    3. **PRM** (:func:`train_prm`, ``--method prm``): two value heads (the WebRL critic's
       :class:`~training.webrl.TwinValueHeads`) on the frozen policy's last hidden state at the
       end of the step's answer, fitted to the inferred values with a soft cross-entropy. Its
       held-out error is measured by fitting without each tree's own nodes (5 folds by tree).
       Saved as a ``value`` checkpoint: ``value_heads.pt`` plus the model spec whose features
       it reads.

Where this differs from the paper: its PRM is a whole fine-tuned LM regressing the values
(MSE); ours is two linear heads on a frozen policy, cheap on a CPU. Its search is MCTS* with the
PRM's value as each node's reward; ours keeps the environment's terminal reward in backups and
uses the PRM as the value of unvisited children and to prune (see :mod:`agents.graphs.mcts`).

Run it:
    autodidact run --graph mcts --split train --set graph_options.simulations=8   # trees
    autodidact train --method prm --run TREES --name prm1
    autodidact run --graph mcts --split train --set graph_options.prm=prm1        # guided search

Example:
    >>> ckpt = train_prm(PRMTrainConfig(run="trees", checkpoint_name="prm1"), open_store())  # doctest: +SKIP
    >>> ProcessRewardModel.load("prm1").values([(messages, answer)])  # doctest: +SKIP
    [0.73]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from agents.llm.hf_local import forward_lock
from autodidact.errors import ConfigError, NothingToTrainError
from training.agent_r import Path, trees
from training.checkpoints import (
    VALUE_FILE,
    WEIGHTS_DIR,
    Checkpoint,
    DataSource,
    TrainMetrics,
    checkpoint_dir,
    find_checkpoint,
    register_checkpoint,
)
from training.data import DataFields, _Tally, answer_text, episodes, queries
from training.policy import reserve_name
from training.webrl import TwinValueHeads, answered, cross_fitted_values, load_lm, score_turns, train_critic

if TYPE_CHECKING:
    from memory.base import TrajectoryStore

METHOD = "prm"


def inferred_values(tree: Sequence[Path], alpha: float = 1.0) -> list[list[float]]:
    """Each path's per-step inferred values ``v_1..v_K`` (see the module docstring, step 2).

    Example:
        >>> from autodidact.types import Step, Trajectory, Task, PolicyRef
        >>> def p(answers, reward):
        ...     steps = tuple(Step(index=i, role="solver", completion=a) for i, a in enumerate(answers))
        ...     t = Trajectory(run_id="r", task=Task(id="t", suite="s", prompt="?"), env_id="code",
        ...                    policy=PolicyRef(model="m"), steps=steps, reward=reward)
        ...     return Path(t, steps)
        >>> inferred_values([p(["a", "b"], 1.0), p(["a", "c"], 0.0), p(["d"], 0.0)])
        [[0.5, 1.0], [0.5, 0.0], [0.0]]
    """
    keys = [[_key(p.steps[: k + 1]) for k in range(len(p.steps))] for p in tree]
    correct: dict[tuple[Any, ...], int] = {}  # node -> steps to the nearest correct end below it
    anywhere: dict[tuple[Any, ...], int] = {}  # node -> steps to the nearest end below it
    for p, ks in zip(tree, keys, strict=True):
        for k, key in enumerate(ks):
            left = len(ks) - 1 - k
            anywhere[key] = min(anywhere.get(key, left), left)
            if p.reward >= alpha:
                correct[key] = min(correct.get(key, left), left)
    out = []
    for ks in keys:
        v, values = 0.0, []
        for key in ks:
            good = key in correct
            m = correct[key] if good else anywhere[key]
            v = max(v + (1.0 - v) / (m + 1) * (1.0 if good else -1.0), 0.0)
            values.append(v)
        out.append(values)
    return out


def _key(steps: Sequence[Any]) -> tuple[Any, ...]:
    return tuple((s.completion, s.action.model_dump_json() if s.action is not None else None) for s in steps)


@dataclass
class PRMTrainConfig(DataFields):
    """How to fit a process reward model: which trees (:class:`~training.data.DataFields`;
    ``data`` is not used), whose features, and the fit."""

    model: str = field(default="embedded", metadata={"help": "the policy whose features the heads read"})
    checkpoint_name: str | None = field(default=None, metadata={"help": "name to register; None: generated"})
    alpha: float = field(default=1.0, metadata={"help": "a path is correct when its reward is at least this"})
    epochs: int = field(default=200, metadata={"help": "full-batch steps fitting the heads"})
    lr: float = field(default=1e-2, metadata={"help": "the heads' learning rate"})
    folds: int = field(default=5, metadata={"help": "folds by tree for the held-out error"})
    batch_size: int = field(default=4, metadata={"help": "rows per forward pass reading features"})


@dataclass(frozen=True)
class Node:
    """A distinct step of a tree, what the PRM learns from."""

    messages: list[dict[str, str]]
    answer: str
    value: float
    tree: int


def tree_nodes(store: TrajectoryStore, fields: PRMTrainConfig, tally: _Tally) -> list[Node]:
    """The distinct nodes of the selected runs' trees with their inferred values."""
    found = trees(list(episodes(store, queries(fields, store), tally)), fields.roles)
    nodes: dict[tuple[int, tuple[Any, ...]], Node] = {}
    for t, tree in enumerate(found):
        tally.counts["trees"] += 1
        tally.counts["correct_trees"] += any(p.reward >= fields.alpha for p in tree)
        for path, values in zip(tree, inferred_values(tree, fields.alpha), strict=True):
            for k, (step, v) in enumerate(zip(path.steps, values, strict=True)):
                key = (t, _key(path.steps[: k + 1]))
                if key not in nodes:
                    messages = [m.model_dump() for m in step.messages]
                    nodes[key] = Node(messages, answer_text(step, fields.answers), v, t)
    return list(nodes.values())


def train_prm(config: PRMTrainConfig, store: TrajectoryStore) -> Checkpoint:
    """Fit value heads on the inferred step values of the selected runs' trees and register
    them as a ``value`` checkpoint.

    Raises:
        ConfigError: the name is taken or malformed, or a run is not in the store.
        NothingToTrainError: the runs have no tree with a step.
        ModelLoadError: the model cannot be loaded.
    """
    config.check_data()
    name = reserve_name(config, METHOD)  # type: ignore[arg-type]  # needs only checkpoint_name
    tally = _Tally()
    nodes = tree_nodes(store, config, tally)
    if not nodes:
        raise NothingToTrainError(
            f"no search-tree steps in runs {config.run or 'all'} ({tally.trajectories} trajectories); "
            "collect trees with --graph mcts first"
        )
    started = time.perf_counter()
    lm, tok = load_lm(config.model)
    rows = [answered(tok, n.messages, n.answer) for n in nodes]
    feats = torch.stack(
        [s.features for s in score_turns(lm, tok, rows, config.batch_size, after=True, desc="PRM: step features")]
    )
    targets = torch.tensor([n.value for n in nodes], dtype=torch.float32)
    held_out = cross_fitted_values(
        feats, targets, [n.tree for n in nodes], len(nodes), config.folds, config.epochs, config.lr
    )
    heads, metrics = train_critic(feats, targets, epochs=config.epochs, lr=config.lr)
    baseline = float((targets - targets.mean()).abs().mean())
    where = checkpoint_dir(name) / WEIGHTS_DIR
    where.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": heads.state_dict(), "hidden": feats.shape[-1]}, where / VALUE_FILE)
    counts = {"trajectories": tally.trajectories, **dict(sorted(tally.counts.items())), "examples": len(nodes)}
    extra = {
        **metrics,
        "mae_held_out": float((held_out - targets).abs().mean()),
        "mae_of_the_mean": baseline,
        "value_mean": float(targets.mean()),
    }
    return register_checkpoint(
        name,
        where,
        kind="value",
        base_model=config.model,
        method=METHOD,
        datasets=[
            DataSource(
                kind="prm",
                runs=tuple(q.run_id for q in queries(config, store) if q.run_id is not None),
                suite=config.suite,
                filters={"alpha": config.alpha, "roles": config.roles},
                counts=counts,
            )
        ],
        config={k: getattr(config, k) for k in ("model", "alpha", "epochs", "lr", "folds")},
        metrics=TrainMetrics(
            loss_before=metrics["critic_loss_before"],
            loss_after=metrics["critic_loss_after"],
            examples=len(nodes),
            steps=config.epochs,
            seconds=round(time.perf_counter() - started, 3),
            extra=extra,
        ),
    )


class ProcessRewardModel:
    """A ``value`` checkpoint, loaded: the policy it reads features from and its heads.

    ``values`` scores steps — (the messages a step was sent, its answer) — in [0, 1].
    """

    def __init__(self, model: Any, tokenizer: Any, heads: TwinValueHeads, name: str = "") -> None:
        self.model, self.tokenizer, self.heads, self.name = model, tokenizer, heads, name
        # One forward pass at a time (callers may be threads); on CPU, none beside generation either.
        self._busy = forward_lock(next(model.parameters()).device)

    @classmethod
    def load(cls, name: str) -> ProcessRewardModel:
        """Raises ConfigError when ``name`` is not a ``value`` checkpoint."""
        ckpt = find_checkpoint(name)
        if ckpt is None or ckpt.kind != "value":
            raise ConfigError(
                f"{name!r} is not a process reward model; train one with `autodidact train --method prm --run TREES`"
                + (f" ({ckpt.name} is a {ckpt.kind} checkpoint)" if ckpt is not None else "")
            )
        saved = torch.load(ckpt.path / VALUE_FILE, weights_only=True)
        heads = TwinValueHeads(int(saved["hidden"]))
        heads.load_state_dict(saved["state_dict"])
        return cls(*load_lm(ckpt.base_model), heads, ckpt.name)

    def values(self, steps: Sequence[tuple[Sequence[dict[str, str]], str]], batch_size: int = 4) -> list[float]:
        if not steps:
            return []
        rows = [answered(self.tokenizer, list(m), a) for m, a in steps]
        with self._busy:
            scored = score_turns(self.model, self.tokenizer, rows, batch_size, after=True)
        return [float(v) for v in self.heads.value(torch.stack([s.features for s in scored]))]


_LOADED: dict[str, ProcessRewardModel] = {}
_LOADING = threading.Lock()


def loaded(name: str) -> ProcessRewardModel:
    """The process reward model ``name``, loaded once per process (episodes run concurrently
    and ask from worker threads: one loads it, the others wait)."""
    with _LOADING:
        if name not in _LOADED:
            _LOADED[name] = ProcessRewardModel.load(name)
        return _LOADED[name]
