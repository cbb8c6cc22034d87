"""CoMAS: solver, reviewer and refiner, each rewarded by the interaction and trained by RL on it.

After CoMAS (Xue et al., 2025, "CoMAS: Co-Evolving Multi-Agent Systems via Interaction
Rewards"), on the episodes of graphs where the roles talk to each other (``reflexion``,
``magicore``): no role is told what a good answer is; each is rewarded by what its answer did in
the interaction, checked against the environment's verdict where there is one.

Rewards (:func:`interaction_rewards`; ``outcome`` of an attempt: 1 when it passed, else 0, or
with ``partial_credit`` its reward):
    - **solver**: the outcome of the attempt its answer made. (The reviewer's judged score is
      not added: with the real outcome at hand, a reward for convincing the reviewer would
      teach the solver to please it.)
    - **reviewer**: how close its score came to the outcome of the attempt it reviewed,
      ``1 - |score - outcome|``.
    - **refiner**: the gain its rewrite produced, ``outcome(rewrite) - outcome(the attempt it
      rewrote)``; a rewrite that did not parse as an action scores as a failed attempt. (Where
      a trial is several actions, web, the rewrite is not itself acted on: not rewarded.)

Update: each role's own adapter (``--model`` the role's current checkpoint, ``--set role=...``)
is trained by REINFORCE on that role's calls, the advantage being the reward minus the mean of
the same role's other rewards on the task (leave-one-out, :mod:`training.reinforce`), with a
KL term (``kl``) to where training started. One epoch: the calls are the policy's own.

:func:`usefulness` measures what each role is for, on any set of such episodes: the reviewer's
agreement with the outcome (score >= 0.5 against passed), the refiner's wrong → right rate, and
the solver's first-attempt success.

Run it:
    autodidact run --graph reflexion --suite bundled --split train --samples 4 --temperature 0.8
    autodidact train --method comas --run RUN --set role=reviewer --name rev-rl   # and solver, refiner
    autodidact run --graph reflexion --model sol-rl --role-model reviewer=rev-rl --role-model refiner=ref-rl
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from transformers import TrainingArguments

from autodidact.errors import ConfigError, NothingToTrainError
from autodidact.types import Step, Trajectory
from training.checkpoints import Checkpoint, DataSource
from training.data import DataFields, _Tally, answer_text, episodes, is_unparsed, queries
from training.policy import TrainFields, TrainJob, reserve_name, run_job
from training.reinforce import Turn, leave_one_out, reinforce_job

if TYPE_CHECKING:
    from memory.base import TrajectoryStore

METHOD = "comas"
ROLES = ("solver", "reviewer", "refiner")


@dataclass(frozen=True)
class Rewarded:
    """A role's call in an episode and the reward the interaction gave it."""

    role: str
    step: Step
    reward: float


def outcome(step: Step, partial_credit: bool = False) -> float:
    """An acted attempt's outcome: 1 when it passed (0 otherwise), or its reward."""
    return step.reward if partial_credit else float(step.reward >= 1.0)


def interaction_rewards(traj: Trajectory, *, partial_credit: bool = False) -> list[Rewarded]:
    """Every solver, reviewer and refiner call of ``traj`` that the interaction rewards, in order
    (see the module docstring)."""
    out: list[Rewarded] = []
    last: Step | None = None  # the latest attempt the environment judged
    pending: list[Step] = []  # solver steps of the trial in progress
    for step in traj.steps:
        if (step.error is not None and not is_unparsed(step)) or not step.completion or not step.messages:
            continue  # a failed call: nothing the role said
        acted = step.action is not None and step.observation is not None
        if step.role == "solver" and acted:
            pending.append(step)
            if step.terminated or step.truncated:  # the attempt is judged: every step of the trial gets it
                out += [Rewarded("solver", s, outcome(step, partial_credit)) for s in pending]
                pending, last = [], step
        elif step.role == "reviewer" and step.output and "score" in step.output and last is not None:
            score = float(step.output["score"])
            out.append(Rewarded("reviewer", step, 1.0 - abs(score - outcome(last, partial_credit))))
        elif step.role == "refiner" and last is not None and (acted or is_unparsed(step)):
            after = outcome(step, partial_credit) if acted else 0.0
            out.append(Rewarded("refiner", step, after - outcome(last, partial_credit)))
            if acted:
                last = step
    return out


def usefulness(trajs: Sequence[Trajectory]) -> dict[str, float]:
    """What each role is for, measured on ``trajs``: the reviewer's agreement with the outcome
    (score >= 0.5 against passed), the refiner's wrong → right rate, the solver's first-attempt
    success; each with its count."""
    agree = reviews = fixed = refinements = first_ok = firsts = 0
    for traj in trajs:
        rewarded = interaction_rewards(traj)
        solver = [r for r in rewarded if r.role == "solver"]
        if solver:
            firsts += 1
            first_ok += solver[0].reward >= 1.0
        for r in rewarded:
            if r.role == "reviewer":
                reviews += 1
                agree += r.reward > 0.5  # 1 - |score - outcome| > 0.5: on the outcome's side of 0.5
            elif r.role == "refiner":
                refinements += 1
                fixed += r.reward > 0
    return {
        "reviewer_agreement": agree / reviews if reviews else float("nan"),
        "reviews": float(reviews),
        "refiner_wrong_to_right": fixed / refinements if refinements else float("nan"),
        "refinements": float(refinements),
        "solver_first_success": first_ok / firsts if firsts else float("nan"),
        "episodes": float(firsts),
    }


@dataclass
class CoMASTrainConfig(TrainFields, DataFields, TrainingArguments):  # type: ignore[misc]  # TrainFields retypes some defaults
    """How to run a CoMAS update of one role: ``TrainingArguments``, the policy (the role's
    current model), the episodes (:class:`~training.data.DataFields`; ``data`` and ``roles`` are
    not used) and CoMAS's own settings."""

    learning_rates: ClassVar[tuple[float, float]] = (5e-5, 1e-6)

    role: str = field(
        default="solver", metadata={"help": "the role whose calls are trained: solver, reviewer, refiner"}
    )
    kl: float = field(default=0.01, metadata={"help": "KL weight holding the role to where training started"})
    partial_credit: bool = field(default=False, metadata={"help": "outcome = the attempt's reward, not 0/1"})
    max_length: int = field(default=1024, metadata={"help": "calls longer than this many tokens are dropped"})
    num_train_epochs: float = 1.0  # on-policy: one pass over the calls just made
    remove_unused_columns: bool = False
    prediction_loss_only: bool = True
    label_names: list[str] | None = field(default_factory=lambda: ["advantage"])
    include_num_input_tokens_seen: str | bool = "non_padding"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}; got {self.role!r}")
        if self.kl < 0:
            raise ConfigError(f"kl must be >= 0, got {self.kl}")
        super().__post_init__()


def prepare_comas(config: CoMASTrainConfig, store: TrajectoryStore) -> TrainJob:
    """Reward the role's calls in the selected episodes, compute leave-one-out advantages per
    task and build the REINFORCE trainer; train not yet.

    Raises:
        ConfigError: the checkpoint name is taken or malformed, or a run is not in the store.
        NothingToTrainError: the episodes have no rewarded call of the role, or all of a task's
            rewards agree (no advantage).
        ModelLoadError: the model cannot be loaded.
    """
    name = reserve_name(config, METHOD)
    tally = _Tally()
    trajs = list(episodes(store, queries(config, store), tally))
    calls = [
        (t, r)
        for t in trajs
        for r in interaction_rewards(t, partial_credit=config.partial_credit)
        if r.role == config.role
    ]
    if not calls:
        raise NothingToTrainError(
            f"no rewarded {config.role} calls in runs {config.run or 'all'} ({tally.trajectories} trajectories); "
            "collect episodes of a graph with reviewer and refiner (--graph reflexion)"
        )
    advantages = leave_one_out([r.reward for _, r in calls], [t.task.id for t, _ in calls])
    if all(a == 0.0 for a in advantages):
        raise NothingToTrainError(
            f"every task's {config.role} rewards agree in runs {config.run or 'all'}: no advantage to learn from; "
            "sample more episodes per task (--samples 4)"
        )
    turns = [
        Turn(
            [m.model_dump() for m in r.step.messages],
            answer_text(r.step, config.answers) if config.role == "solver" else r.step.completion or "",
            a,
            config.kl,
            t.task.id,
            t.id,
        )
        for (t, r), a in zip(calls, advantages, strict=True)
    ]
    rewards = [r.reward for _, r in calls]
    source = DataSource(
        kind=METHOD,
        runs=tuple(q.run_id for q in queries(config, store) if q.run_id is not None),
        suite=config.suite,
        filters={"role": config.role, "partial_credit": config.partial_credit, "kl": config.kl},
        counts={"trajectories": tally.trajectories, "calls": len(calls), "tasks": len({t.task.id for t, _ in calls})},
    )
    measured = {k: v for k, v in usefulness(trajs).items() if v == v}  # NaN: the role never acted
    extra = {"reward_mean": sum(rewards) / len(rewards), **measured}
    return reinforce_job(config, name, METHOD, turns, tally, source, extra)


def train_comas(config: CoMASTrainConfig, store: TrajectoryStore) -> Checkpoint:
    """Run a CoMAS update of ``config.role`` and register the role's new checkpoint.
    The same as ``run_job(prepare_comas(config, store))``."""
    return run_job(prepare_comas(config, store))
