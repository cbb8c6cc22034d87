"""SCoRe: a policy taught to correct itself by two-attempt reinforcement learning.

After SCoRe (Kumar et al., 2024, "Training Language Models to Self-Correct via Reinforcement
Learning"), on code episodes of up to two attempts, with the feedback an agent could see
between them (the visible tests, :mod:`environments.code.env`'s default; never the hidden ones).

Algorithm (:func:`prepare_score`):
    1. **Episodes.** Each selected episode gives its first submission ``y1`` (the task's
       prompt, then the answer) and, when the visible tests failed, its second ``y2`` (the
       prompt with ``y1`` and the feedback, then the answer). Its rewards ``r1`` and ``r2``
       are 1 when the attempt passed every hidden test, else 0 (``partial_credit``: the share
       that passed). An episode that stopped after one attempt keeps its answer: ``r2 = r1``,
       and it has no second turn to train. Collect several episodes a task with the policy
       being trained (``--samples 4 --set max_steps=2``; ``evolve`` does): the update is
       on-policy REINFORCE, and the baseline needs siblings.
    2. **Returns.** Stage I trains the second attempt alone on ``G2 = r2``; the first attempt
       is only held to the starting policy by a strong KL term (``kl_first``), so the policy
       learns to correct without learning to stop trying on the first attempt. Stage II trains
       both: ``G1 = r1 + r2`` (the first attempt is credited with what followed it) and
       ``G2 = r2 + alpha * (r2 - r1)``, the paper's shaping bonus, which pays a second attempt
       for turning wrong into right and fines it for the reverse; the bonus is on the second
       turn only, so a right first attempt is never fined for leaving nothing to fix.
    3. **Baseline.** Leave-one-out (:func:`training.reinforce.leave_one_out`): each return minus the mean of the
       same turn's returns of the task's other episodes (RLOO); a task with one episode gets no
       signal from it.
    4. **Loss** (:func:`training.reinforce.reinforce_loss`), per trained turn: ``-A * log pi(y | prompt)`` (the sum over
       the answer's tokens) plus ``beta * sum over tokens of (log pi - log pi_ref)^2 / 2`` (the
       k2 estimate of the answer's KL to the starting policy, on the policy term's scale; the
       starting policy's per-token log-probs are read once before
       training), ``beta = kl_first`` on stage I's first turns, else ``kl``.

Run it:
    autodidact run --suite bundled --split train --samples 4 --temperature 0.8 --set max_steps=2
    autodidact train --method score --run RUN [--set stage=2 alpha=10]

Example:
    >>> returns(0.0, 1.0, stage=2, alpha=10.0)
    (1.0, 11.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from transformers import TrainingArguments

from autodidact.errors import ConfigError, NothingToTrainError
from autodidact.types import Step, Trajectory
from environments.code.env import SUBMIT_KINDS
from training.checkpoints import Checkpoint, DataSource
from training.data import DataFields, _Tally, acting_steps, answer_text, episodes, queries
from training.policy import TrainFields, TrainJob, reserve_name, run_job
from training.reinforce import Turn, leave_one_out, reinforce_job

if TYPE_CHECKING:
    from memory.base import TrajectoryStore

METHOD = "score"


# --- the pieces, each testable on its own ----------------------------------------------------


@dataclass(frozen=True)
class TwoAttempts:
    """One episode's attempts: each the messages it was sent and its answer, and the rewards."""

    task_id: str
    trajectory_id: str
    first: tuple[list[dict[str, str]], str]
    second: tuple[list[dict[str, str]], str] | None
    r1: float
    r2: float  # r1 when the episode stopped after one attempt


def two_attempts(
    traj: Trajectory, fields: DataFields, tally: _Tally, *, partial_credit: bool = False
) -> TwoAttempts | None:
    """The first two submissions of an episode (None when it submitted nothing usable)."""
    submitted = [s for s in acting_steps(traj, fields.roles, tally) if s.action and s.action.kind in SUBMIT_KINDS]
    if not submitted:
        return None

    def reward(step: Step) -> float:
        return step.reward if partial_credit else float(step.reward >= 1.0)

    def turn(step: Step) -> tuple[list[dict[str, str]], str]:
        return [m.model_dump() for m in step.messages], answer_text(step, fields.answers)

    first, second = submitted[0], submitted[1] if len(submitted) > 1 else None
    r1 = reward(first)
    return TwoAttempts(
        task_id=traj.task.id,
        trajectory_id=traj.id,
        first=turn(first),
        second=turn(second) if second is not None else None,
        r1=r1,
        r2=reward(second) if second is not None else r1,
    )


def returns(r1: float, r2: float, stage: int, alpha: float) -> tuple[float, float]:
    """``(G1, G2)``: what each attempt is trained towards (see the module docstring; stage I
    does not train the first attempt on reward, its ``G1`` is 0).

    Example:
        >>> returns(0.0, 1.0, 2, 10.0), returns(1.0, 0.0, 2, 10.0), returns(0.0, 1.0, 1, 10.0)
        ((1.0, 11.0), (1.0, -10.0), (0.0, 1.0))
    """
    if stage == 1:
        return 0.0, r2
    return r1 + r2, r2 + alpha * (r2 - r1)


# --- the trainer -------------------------------------------------------------------------------


@dataclass
class SCoReTrainConfig(TrainFields, DataFields, TrainingArguments):  # type: ignore[misc]  # TrainFields retypes some defaults
    """How to run a SCoRe update: ``TrainingArguments``, the policy
    (:class:`~training.policy.TrainFields`), the episodes (:class:`~training.data.DataFields`;
    ``data`` is not used) and SCoRe's own settings."""

    learning_rates: ClassVar[tuple[float, float]] = (5e-5, 1e-6)

    stage: int = field(
        default=1, metadata={"help": "1: train the second attempt, hold the first; 2: both, with the bonus"}
    )
    alpha: float = field(
        default=10.0, metadata={"help": "stage II's shaping bonus alpha * (r2 - r1) on the second attempt"}
    )
    kl_first: float = field(default=1.0, metadata={"help": "stage I: KL weight holding the first attempt to the start"})
    kl: float = field(default=0.01, metadata={"help": "KL weight on every other trained turn"})
    partial_credit: bool = field(default=False, metadata={"help": "reward = share of hidden tests passed, not 0/1"})
    max_length: int = field(default=1024, metadata={"help": "turns longer than this many tokens are dropped"})
    num_train_epochs: float = 1.0  # on-policy: one pass over the episodes the policy just collected
    remove_unused_columns: bool = False
    prediction_loss_only: bool = True
    label_names: list[str] | None = field(default_factory=lambda: ["advantage"])
    include_num_input_tokens_seen: str | bool = "non_padding"

    def check_score(self) -> None:
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {self.stage}")
        if self.alpha < 0 or self.kl < 0 or self.kl_first < 0:
            raise ConfigError(f"alpha, kl and kl_first must be >= 0 (got {self.alpha}, {self.kl}, {self.kl_first})")

    def __post_init__(self) -> None:
        self.check_score()
        super().__post_init__()


def prepare_score(config: SCoReTrainConfig, store: TrajectoryStore) -> TrainJob:
    """Check the name, gather the episodes' attempts, compute returns and leave-one-out
    advantages, read the starting policy's log-probs and build the trainer; train not yet.

    Raises:
        ConfigError: the checkpoint name is taken or malformed, or a run is not in the store.
        NothingToTrainError: no episode has a submission, or no task's episodes differ in
            outcome (every advantage is 0: nothing to learn from).
        ModelLoadError: the model cannot be loaded.
    """
    name = reserve_name(config, METHOD)
    tally = _Tally()
    pairs = [
        p
        for t in episodes(store, queries(config, store), tally)
        if (p := two_attempts(t, config, tally, partial_credit=config.partial_credit)) is not None
    ]
    if not pairs:
        raise NothingToTrainError(
            f"no submitted attempts in runs {config.run or 'all'} ({tally.trajectories} trajectories); "
            "collect code episodes with max_steps=2 first"
        )
    groups = [p.task_id for p in pairs]
    g = [returns(p.r1, p.r2, config.stage, config.alpha) for p in pairs]
    a1 = leave_one_out([x[0] for x in g], groups)
    a2 = leave_one_out([x[1] for x in g], groups)
    turns: list[Turn] = []
    for p, adv1, adv2 in zip(pairs, a1, a2, strict=True):
        msgs, answer = p.first
        beta = config.kl_first if config.stage == 1 else config.kl
        turns.append(Turn(msgs, answer, adv1, beta, p.task_id, p.trajectory_id))
        if p.second is not None:
            turns.append(Turn(*p.second, adv2, config.kl, p.task_id, p.trajectory_id))
    if all(t.advantage == 0.0 for t in turns):
        raise NothingToTrainError(
            f"every task's {len(pairs)} episodes in runs {config.run or 'all'} have the same outcome: "
            "no advantage to learn from; sample more episodes per task (--samples 4)"
        )
    n = len(pairs)
    acc1, acc2 = sum(p.r1 for p in pairs) / n, sum(p.r2 for p in pairs) / n
    source = DataSource(
        kind=METHOD,
        runs=tuple(q.run_id for q in queries(config, store) if q.run_id is not None),
        suite=config.suite,
        filters={"stage": config.stage, "alpha": config.alpha, "partial_credit": config.partial_credit},
        counts={
            "trajectories": tally.trajectories,
            "episodes": n,
            "second_attempts": sum(p.second is not None for p in pairs),
            "tasks": len(set(groups)),
            **dict(sorted(tally.counts.items())),
        },
    )
    extra = {"acc_t1": acc1, "acc_t2": acc2, "delta_t1_t2": acc2 - acc1}
    return reinforce_job(config, name, METHOD, turns, tally, source, extra)


def train_score(config: SCoReTrainConfig, store: TrajectoryStore) -> Checkpoint:
    """Run a SCoRe update on the selected episodes and register the policy as a checkpoint.
    The same as ``run_job(prepare_score(config, store))``."""
    return run_job(prepare_score(config, store))
