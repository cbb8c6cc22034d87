"""WebRL: an outcome reward model, a critic, and a KL-constrained actor update with replay.

After WebRL (Qi et al., 2024, "WebRL: Training LLM Web Agents via Self-Evolving Online
Curriculum Reinforcement Learning"), on the trajectories of any environment.

Algorithm (:func:`prepare_webrl`):
    1. **Turns.** Every acting step (``roles``, default the solver) of each selected episode is
       a turn: state = the messages it was sent, action = its completion. The outcome reward
       ``r`` is given at the episode's last turn only: 1 when the episode succeeded, else 0 —
       or, with ``orm`` set, 1 when the outcome reward model says ``YES`` with probability
       above 0.5 (what WebRL does where tasks have no checker).
    2. **Critic.** Monte-Carlo returns ``G_t = gamma^(T-1-t) * r`` (``gamma`` 0.9). Two value
       heads (linear, 2 classes each) on the last hidden state of the prompt under the policy
       training starts from, trained with cross-entropy on the soft target ``(1 - G_t, G_t)``;
       the value is the smaller of the two heads' probabilities of class 1 (twin heads against
       over-estimation).
    3. **Advantage.** ``A_t = r_t + gamma * V(s_{t+1}) - V(s_t)`` (``V`` = 0 after the last
       turn), clipped to [-1, 1].
    4. **Replay.** Turns of earlier successful episodes (``replay_run``) whose confidence under
       the actor, ``p = exp(mean token log-prob)``, is in (0.5, 0.95] — neither unlearned nor
       already certain — join the data, at most ``replay_ratio`` (2) times as many as the new
       turns. Their advantages come from the same critic.
    5. **Actor.** Regress ``beta * log(pi(a|s) / pi_ref(a|s))`` (sequence log-probs; ``pi_ref``
       the policy that collected the episode, as the paper's KL term has it — with ``reference:
       start``, the policy training starts from) onto ``A`` with a squared error divided by
       ``beta`` (:func:`actor_loss`), where ``beta`` follows the adaptive rule of
       :func:`adaptive_beta`.
    6. **Unparseable turns are negatives.** A turn whose answer did not parse as an action (a
       small model's most common failure) is kept, with its advantage set to -1: the actor
       learns not to write it. (Without it, those turns were dropped and never discouraged.)

``actor: reference`` trains instead as WebRL's released code does (:func:`reference_advantages`,
:func:`reference_actor_loss`): the advantage adds the Monte-Carlo return and a -0.05 bias, is
binarised (+1 when >= 0, else -0.6), only turns with a positive one are trained, and the loss
is a smooth-L1 between ``beta`` times the *per-token* log ratio and the advantage, divided by
``beta``. Turns with a negative advantage (unparseable ones included) are left out of its data
rather than masked in the batch, which differs from the reference code only in how the mean's
denominator scales the step; and the log ratio is divided by the action's own token count, where
the code divides by the masked tokens of its whole batch (the same for a batch of one).

Where this follows the paper and where WebRL's reference code differs:
    - The actor objective ``(beta * log ratio - A)^2`` over every action is the paper's
      (``actor: paper``, the default); ``actor: reference`` is the released code's.
    - The adaptive beta is the reference code's rule (the paper states the KL-constrained
      objective but no rule): 5 where the reference policy is already confident of a good
      action (p_ref >= 0.8) or unsure of a bad one (p_ref < 0.9), else 1; then capped at
      ``|A / log ratio|``, so an action that has already moved as far as its advantage asks
      stops being pushed. We also floor beta at ``1e-3`` (an advantage of exactly 0 would
      divide by 0).
    - The advantage is the paper's one-step form; the reference code adds the Monte-Carlo
      return and a -0.05 bias. The critic's target is the discounted return itself; the
      reference code classifies ``G_t > 0`` (the two agree when an episode is one turn).
    - WebRL trains the whole critic LM; we train only the value heads on the frozen policy's
      features, which is cheap enough for a CPU. They are saved as ``critic.pt`` in the
      checkpoint's dir and are what the curriculum asks for a task's success estimate.

Run it:
    autodidact train --method webrl --run RUN [--set replay_run=[OLDER_RUN] orm=my-orm actor=reference]

Example:
    >>> ckpt = train_webrl(WebRLTrainConfig(run="abc123", max_steps=20), open_store())  # doctest: +SKIP
    >>> ckpt.metrics.extra["critic_loss_after"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from transformers import TrainingArguments

from autodidact.errors import ConfigError, ModelLoadError, NothingToTrainError
from autodidact.types import Message, Trajectory
from training.checkpoints import Checkpoint, DataSource, checkpoint_dir, find_checkpoint
from training.data import (
    DataFields,
    Examples,
    _Tally,
    acting_steps,
    answer_text,
    episodes,
    is_unparsed,
    queries,
    succeeded,
    tokenize_turns,
)
from training.policy import (
    TrainFields,
    TrainJob,
    load_policy,
    lora_config,
    pad,
    reserve_name,
    run_job,
    token_batch,
    token_logps,
    trainer_dir,
)
from training.reinforce import StatsTrainer

if TYPE_CHECKING:
    from memory.base import TrajectoryStore

METHOD = "webrl"
CRITIC_FILE = "critic.pt"
BETA_HIGH = 5.0  # the adaptive rule's large beta
BETA_FLOOR = 1e-3
CONFIDENT_GOOD = 0.8  # p_ref at or above which a good action gets the large beta
UNSURE_BAD = 0.9  # p_ref below which a bad action gets the large beta
ACTORS = ("paper", "reference")
REFERENCES = ("collector", "start")
REFERENCE_BIAS = 0.05  # the released code subtracts this from every advantage
REFERENCE_NEGATIVE = -0.6  # ... and binarises it to +1 or this


# --- the pieces, each testable on its own ----------------------------------------------------


def mc_returns(n_turns: int, reward: float, gamma: float) -> list[float]:
    """Monte-Carlo returns of an episode whose only reward, ``reward``, comes at its last turn.

    Example:
        >>> [round(g, 3) for g in mc_returns(3, 1.0, 0.9)]
        [0.81, 0.9, 1.0]
    """
    return [reward * gamma ** (n_turns - 1 - t) for t in range(n_turns)]


def advantages(
    values: torch.Tensor, next_values: torch.Tensor, rewards: torch.Tensor, done: torch.Tensor, gamma: float
) -> torch.Tensor:
    """One-step advantages ``r + gamma * V(s') * (1 - done) - V(s)``, clipped to [-1, 1].

    Example:
        >>> advantages(torch.tensor([0.5]), torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([1.0]), 0.9)
        tensor([0.5000])
    """
    return (rewards + gamma * next_values * (1.0 - done) - values).clamp(-1.0, 1.0)


def adaptive_beta(advantage: torch.Tensor, log_ratio: torch.Tensor, ref_confidence: torch.Tensor) -> torch.Tensor:
    """Per action: ``BETA_HIGH`` where (A >= 0 and p_ref >= 0.8) or (A < 0 and p_ref < 0.9),
    else 1; capped at ``|A / log_ratio|`` and floored at ``BETA_FLOOR``; no gradient.

    Example:
        >>> adaptive_beta(torch.tensor([1.0, 1.0, -1.0]), torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.9, 0.5, 0.5]))
        tensor([5., 1., 5.])
    """
    good = advantage >= 0
    high = (good & (ref_confidence >= CONFIDENT_GOOD)) | (~good & (ref_confidence < UNSURE_BAD))
    beta = torch.where(high, torch.full_like(advantage, BETA_HIGH), torch.ones_like(advantage))
    cap = (advantage / log_ratio).abs()  # inf where the policy has not moved yet
    cap = torch.where(torch.isnan(cap), torch.full_like(cap, math.inf), cap)
    return torch.minimum(beta, cap).clamp_min(BETA_FLOOR).detach()


def actor_loss(
    logp: torch.Tensor, ref_logp: torch.Tensor, n_tokens: torch.Tensor, advantage: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over actions of ``(beta * log(pi/pi_ref) - A)^2 / beta``, and what it measured.

    ``logp`` and ``ref_logp`` are sequence log-probs (sums over the action's tokens); the
    reference's per-token confidence ``exp(ref_logp / n_tokens)`` drives :func:`adaptive_beta`.
    """
    log_ratio = logp - ref_logp
    ref_confidence = torch.exp(ref_logp / n_tokens.clamp_min(1))
    beta = adaptive_beta(advantage, log_ratio.detach(), ref_confidence)
    loss = ((beta * log_ratio - advantage) ** 2 / beta).mean()
    stats = {
        "log_ratio": float(log_ratio.detach().mean()),
        "beta": float(beta.mean()),
        "advantage": float(advantage.mean()),
    }
    return loss, stats


def reference_advantages(
    values: torch.Tensor,
    next_values: torch.Tensor,
    rewards: torch.Tensor,
    done: torch.Tensor,
    returns: torch.Tensor,
) -> torch.Tensor:
    """WebRL's released code: ``r + V(s') - V(s) - 0.05 + G`` clipped to [-1, 1], then
    binarised to 1 (>= 0) or -0.6; ``V(s')`` is 0 after the last turn.

    Example:
        >>> reference_advantages(torch.tensor([0.5, 0.5]), torch.zeros(2), torch.zeros(2), torch.ones(2), torch.tensor([1.0, 0.0]))
        tensor([ 1.0000, -0.6000])
    """
    a = (rewards + next_values * (1.0 - done) - values - REFERENCE_BIAS + returns).clamp(-1.0, 1.0)
    return torch.where(a >= 0, torch.ones_like(a), torch.full_like(a, REFERENCE_NEGATIVE))


def reference_actor_loss(
    logp: torch.Tensor, ref_logp: torch.Tensor, n_tokens: torch.Tensor, advantage: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """WebRL's released actor loss: the mean over actions of
    ``mask * smooth_l1(beta * r, A) / beta`` with the per-token log ratio
    ``r = (log pi - log pi_ref) / n_tokens``, ``mask = A > 0`` and ``beta`` from
    :func:`adaptive_beta` on ``r``.
    """
    n = n_tokens.clamp_min(1)
    log_ratio = (logp - ref_logp) / n
    beta = adaptive_beta(advantage, log_ratio.detach(), torch.exp(ref_logp / n))
    mask = (advantage > 0).to(logp.dtype)
    per_action = nn.functional.smooth_l1_loss(beta * log_ratio, advantage, reduction="none") / beta
    loss = (per_action * mask).mean()
    stats = {"log_ratio": float(log_ratio.detach().mean()), "beta": float(beta.mean()), "trained": float(mask.sum())}
    return loss, stats


def replay_keep(confidence: Sequence[float], low: float = 0.5, high: float = 0.95) -> list[bool]:
    """Which earlier successes to replay: the actor's confidence ``p`` is in ``(low, high]``.

    Example:
        >>> replay_keep([0.3, 0.5, 0.7, 0.95, 0.99])
        [False, False, True, True, False]
    """
    return [low < p <= high for p in confidence]


class TwinValueHeads(nn.Module):
    """Two independent 2-class heads over a state's features; the value is the smaller
    probability of class 1 (success)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList([nn.Linear(hidden, 2) for _ in range(2)])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[2, batch, 2]``."""
        return torch.stack([h(features) for h in self.heads])

    def value(self, features: torch.Tensor) -> torch.Tensor:
        """``[batch]`` values in [0, 1]."""
        with torch.no_grad():
            return self(features).softmax(-1)[..., 1].min(0).values


def critic_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each head against the soft targets ``(1 - G, G)``, summed over heads."""
    soft = torch.stack([1.0 - targets, targets], dim=-1)
    return sum(torch.nn.functional.cross_entropy(head, soft) for head in logits)  # type: ignore[return-value]


def train_critic(
    features: torch.Tensor, targets: torch.Tensor, *, epochs: int = 200, lr: float = 1e-2, seed: int = 0
) -> tuple[TwinValueHeads, dict[str, float]]:
    """Fit :class:`TwinValueHeads` to Monte-Carlo return targets (full-batch Adam on fixed
    features); the loss before and after, and the value's mean absolute error after."""
    torch.manual_seed(seed)
    x = (features - features.mean(0)) / (features.std(0) + 1e-5) if len(features) > 1 else features
    heads = TwinValueHeads(features.shape[-1])
    opt = torch.optim.Adam(heads.parameters(), lr=lr, weight_decay=1e-3)
    with torch.no_grad():
        before = float(critic_loss(heads(x), targets))
    for _ in range(epochs):
        opt.zero_grad()
        loss = critic_loss(heads(x), targets)
        loss.backward()
        opt.step()
    # Fold the feature normalisation into the first layers, so the heads take raw features.
    if len(features) > 1:
        mean, std = features.mean(0), features.std(0) + 1e-5
        with torch.no_grad():
            for h in heads.heads:
                assert isinstance(h, nn.Linear)
                w = h.weight / std
                h.bias.sub_((w * mean).sum(-1))
                h.weight.copy_(w)
    with torch.no_grad():
        after = float(critic_loss(heads(features), targets))
        mae = float((heads.value(features) - targets).abs().mean())
    return heads, {"critic_loss_before": before, "critic_loss_after": after, "critic_mae": mae}


def cross_fitted_values(
    features: torch.Tensor,
    targets: torch.Tensor,
    episode_of: Sequence[int],
    n_fit: int,
    folds: int,
    epochs: int = 200,
    lr: float = 1e-2,
) -> torch.Tensor:
    """Each turn's value from heads fitted on the first ``n_fit`` turns *of other episodes*.

    A critic fitted on the very returns it is asked about memorises them, and then every
    one-step advantage is 0. Folding by episode keeps each turn's own outcome out of its value:
    where several episodes share a state (samples of one task start from the same prompt), the
    value is the others' mean return — a leave-out baseline. Turns past ``n_fit`` (replayed ones)
    are valued by the heads of their episode's fold too.
    """
    folds = max(2, min(folds, len(set(episode_of[:n_fit]))))
    fold = torch.tensor([e % folds for e in episode_of])
    values = torch.zeros(len(features))
    fitted = torch.zeros(len(features), dtype=torch.bool)
    fitted[:n_fit] = True
    for f in range(folds):
        train = fitted & (fold != f)
        if not train.any():
            continue
        heads, _ = train_critic(features[train], targets[train], epochs=epochs, lr=lr, seed=f)
        values[fold == f] = heads.value(features[fold == f])
    return values


# --- reading the model ---------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """What one pass of the starting policy says about a turn."""

    features: torch.Tensor  # last hidden state at the prompt's end
    logp: float  # sum of the action's token log-probs
    n_tokens: int


def completion_logp(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Per row, the sum of the log-probs of the tokens where ``completion_mask`` is 1."""
    return token_logps(logits, input_ids, completion_mask).sum(-1)


def score_turns(
    model: Any,
    tokenizer: Any,
    tokenized: Sequence[dict[str, list[int]]],
    batch_size: int = 4,
    *,
    after: bool = False,
    desc: str = "scoring turns",
) -> list[Scored]:
    """One no-grad pass of ``model`` per batch: each turn's features (at the prompt's end, or
    ``after`` the action: at its last token) and its action's log-prob, in ``tokenized``'s order.
    Batches are of turns of similar length (less padding); a progress bar (``desc``) from 64 turns on."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    scored: dict[int, Scored] = {}
    order = sorted(range(len(tokenized)), key=lambda i: len(tokenized[i]["input_ids"]))
    model.eval()
    bar = tqdm(total=len(tokenized), desc=desc, unit="turn", disable=len(tokenized) < 64)
    with torch.no_grad(), bar:
        for i in range(0, len(order), batch_size):
            picked = order[i : i + batch_size]
            batch = [tokenized[k] for k in picked]
            t = {k: v.to(device) for k, v in token_batch(batch, tokenizer.pad_token_id).items()}
            ids, mask, attention = t["input_ids"], t["completion_mask"], t["attention_mask"]
            result = model(input_ids=ids, attention_mask=attention, output_hidden_states=True)
            logp = completion_logp(result.logits.float(), ids, mask)
            hidden = result.hidden_states[-1].float()
            for j, (k, b) in enumerate(zip(picked, batch, strict=True)):
                mask_j = b["completion_mask"]
                first = mask_j.index(1) if 1 in mask_j else len(b["input_ids"])
                last = len(mask_j) - 1 - mask_j[::-1].index(1) if 1 in mask_j else len(b["input_ids"]) - 1
                at = last if after else max(0, first - 1)
                scored[k] = Scored(hidden[j, at].cpu(), float(logp[j]), sum(mask_j))
            bar.update(len(batch))
    return [scored[k] for k in range(len(tokenized))]


class OutcomeRewardModel:
    """WebRL's outcome reward model: P(success) of an episode from the ``YES`` and ``NO``
    logits of a model prompted as the ``outcome`` role; success when it is above ``threshold``.

    Train one with ``autodidact train --method sft --data orm --name my-orm``.

    Example:
        >>> orm = OutcomeRewardModel.load("my-orm")  # doctest: +SKIP
        >>> orm.probabilities([traj])  # doctest: +SKIP
        [0.83]
    """

    def __init__(self, model: Any, tokenizer: Any, threshold: float = 0.5) -> None:
        self.model, self.tokenizer, self.threshold = model, tokenizer, threshold
        yes = tokenizer("YES", add_special_tokens=False)["input_ids"]
        no = tokenizer("NO", add_special_tokens=False)["input_ids"]
        if not yes or not no or yes[0] == no[0]:
            raise ConfigError("the tokenizer does not tell YES from NO at the first token; use another ORM model")
        self.yes, self.no = yes[0], no[0]

    @classmethod
    def load(cls, spec: str, threshold: float = 0.5) -> OutcomeRewardModel:
        """From a model spec or checkpoint name (``--model`` syntax)."""
        return cls(*load_lm(spec), threshold)

    def prompt(self, traj: Trajectory, roles: Sequence[str] = ("solver",)) -> list[Message]:
        from agents.roles.outcome import OutcomeJudge, transcript

        return OutcomeJudge().messages(task=traj.task.prompt, transcript=transcript(traj, list(roles)))

    def probabilities(
        self, trajs: Sequence[Trajectory], roles: Sequence[str] = ("solver",), batch_size: int = 4
    ) -> list[float]:
        """P(YES) against NO, from the two logits at the answer's first token, per episode."""
        tok = self.tokenizer
        device = next(self.model.parameters()).device
        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(trajs), batch_size):
                texts = [
                    tok.apply_chat_template(
                        [m.model_dump() for m in self.prompt(t, roles)], tokenize=False, add_generation_prompt=True
                    )
                    for t in trajs[i : i + batch_size]
                ]
                seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
                ids = pad(seqs, tok.pad_token_id).to(device)
                attention = pad([[1] * len(s) for s in seqs], 0).to(device)
                logits = self.model(input_ids=ids, attention_mask=attention).logits
                last = torch.tensor([len(s) - 1 for s in seqs], device=device)
                pair = logits[torch.arange(len(seqs), device=device), last][:, [self.yes, self.no]].float()
                out.extend(pair.softmax(-1)[:, 0].tolist())
        return out

    def judge(self, trajs: Sequence[Trajectory], roles: Sequence[str] = ("solver",)) -> list[bool]:
        return [p > self.threshold for p in self.probabilities(trajs, roles)]


# --- the trainer ----------------------------------------------------------------------------


@dataclass
class WebRLTrainConfig(TrainFields, DataFields, TrainingArguments):  # type: ignore[misc]  # TrainFields retypes some defaults
    """How to run a WebRL update: ``TrainingArguments`` for the actor, plus the policy
    (:class:`~training.policy.TrainFields`), the data (:class:`~training.data.DataFields`;
    ``data`` is not used) and WebRL's own settings."""

    learning_rates: ClassVar[tuple[float, float]] = (5e-5, 1e-6)

    gamma: float = field(default=0.9, metadata={"help": "discount of the Monte-Carlo returns"})
    orm: str | None = field(
        default=None,
        metadata={"help": "outcome reward model (checkpoint or model spec); None: the environment's outcome"},
    )
    replay_run: str | list[str] | None = field(
        default=None, metadata={"help": "earlier run(s) whose successes may be replayed"}
    )
    replay_ratio: float = field(default=2.0, metadata={"help": "replayed turns at most this many times the new ones"})
    replay_confidence: tuple[float, float] = field(
        default=(0.5, 0.95), metadata={"help": "replay a success when the actor's confidence p is in (low, high]"}
    )
    critic_epochs: int = field(default=200, metadata={"help": "full-batch steps fitting the value heads"})
    critic_folds: int = field(
        default=5, metadata={"help": "advantages use values from heads fitted without the turn's own episode"}
    )
    critic_lr: float = field(default=1e-2, metadata={"help": "the value heads' learning rate"})
    max_length: int = field(default=1024, metadata={"help": "turns longer than this many tokens are dropped"})
    actor: str = field(
        default="paper",
        metadata={
            "help": "paper: (beta*log ratio - A)^2 on every turn; reference: WebRL's released code "
            "(binarised advantages, positive ones only, smooth-L1 on the per-token log ratio)"
        },
    )
    reference: str = field(
        default="collector",
        metadata={"help": "pi_ref of the KL term: collector (the policy that collected each episode) or start"},
    )
    remove_unused_columns: bool = False
    prediction_loss_only: bool = True
    label_names: list[str] | None = field(default_factory=lambda: ["advantage"])
    include_num_input_tokens_seen: str | bool = "non_padding"


@dataclass(frozen=True)
class _Turn:
    messages: list[dict[str, str]]
    completion: str
    task_id: str
    trajectory_id: str
    index: int  # position among the episode's turns
    last: bool
    reward: float  # at this turn: the outcome at the last turn, else 0
    mc_return: float
    collector: str  # the model spec of the policy that collected the episode
    unparsed: bool = False  # the answer did not parse as an action
    replay: bool = False


def _turns(
    store: TrajectoryStore, config: DataFields, runs: list[str] | None, tally: _Tally, *, replay: bool = False
) -> tuple[list[Trajectory], list[list[_Turn]]]:
    fields = dataclasses.replace(config, run=runs) if runs is not None else config
    trajs, out = [], []
    for traj in episodes(store, queries(fields, store), tally):
        if replay and not succeeded(traj, config.min_reward):
            continue
        steps = list(acting_steps(traj, config.roles, tally, unparsed=True))
        if steps:
            trajs.append(traj)
            out.append(
                [
                    _Turn(
                        messages=[m.model_dump() for m in s.messages],
                        completion=answer_text(s, config.answers),
                        task_id=traj.task.id,
                        trajectory_id=traj.id,
                        index=i,
                        last=i == len(steps) - 1,
                        reward=0.0,
                        mc_return=0.0,
                        collector=traj.policy.model,
                        unparsed=is_unparsed(s),
                        replay=replay,
                    )
                    for i, s in enumerate(steps)
                ]
            )
    return trajs, out


def _with_rewards(episode: list[_Turn], outcome: float, gamma: float) -> list[_Turn]:
    returns = mc_returns(len(episode), outcome, gamma)
    return [
        dataclasses.replace(t, reward=outcome if t.last else 0.0, mc_return=g)
        for t, g in zip(episode, returns, strict=True)
    ]


class ActorTrainer(StatsTrainer):
    """``Trainer`` whose loss is :func:`actor_loss` (or, with ``actor="reference"``,
    :func:`reference_actor_loss`) on rows with ``advantage``, ``ref_logp`` and ``n_tokens``
    beside the tokens."""

    def __init__(self, *args: Any, actor: str = "paper", **kwargs: Any) -> None:
        super().__init__(*args, prefix="actor", **kwargs)
        self.loss_fn = reference_actor_loss if actor == "reference" else actor_loss

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        logp = completion_logp(out.logits.float(), inputs["input_ids"], inputs["completion_mask"])
        loss, stats = self.loss_fn(logp, inputs["ref_logp"], inputs["n_tokens"], inputs["advantage"])
        self.keep(model, stats)
        return (loss, out) if return_outputs else loss


def collate(pad_id: int) -> Any:
    def fn(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            **token_batch(rows, pad_id),
            "advantage": torch.tensor([r["advantage"] for r in rows], dtype=torch.float32),
            "ref_logp": torch.tensor([r["ref_logp"] for r in rows], dtype=torch.float32),
            "n_tokens": torch.tensor([r["n_tokens"] for r in rows], dtype=torch.float32),
        }

    return fn


def prepare_webrl(config: WebRLTrainConfig, store: TrajectoryStore) -> TrainJob:
    """Check the name, gather the turns, score them with the starting policy, fit the critic,
    compute advantages, pick the replay and build the actor's trainer; train the actor not yet.

    Raises:
        ConfigError: the checkpoint name is taken or malformed, or a run is not in the store.
        NothingToTrainError: the selected runs have no usable acting turn.
        ModelLoadError: the model (or the ORM) cannot be loaded.
    """
    if config.actor not in ACTORS or config.reference not in REFERENCES:
        raise ConfigError(
            f"webrl: actor={config.actor!r}, reference={config.reference!r}; "
            f"actor is one of {', '.join(ACTORS)} and reference one of {', '.join(REFERENCES)}"
        )
    name = reserve_name(config, METHOD)
    tally = _Tally()
    trajs, new = _turns(store, config, None, tally)
    if not new:
        raise NothingToTrainError(
            f"no usable acting turns in runs {config.run or 'all'} ({tally.trajectories} trajectories, "
            f"{tally.selected} without error); nothing to train on — collect episodes first"
        )
    if config.orm is not None:
        orm = OutcomeRewardModel.load(config.orm)
        outcomes = [float(ok) for ok in orm.judge(trajs, config.roles)]
        agree = sum(o == float(succeeded(t, config.min_reward)) for o, t in zip(outcomes, trajs, strict=True))
        tally.counts["orm_agrees"] = agree
        del orm
    else:
        outcomes = [float(succeeded(t, config.min_reward)) for t in trajs]
    new = [_with_rewards(ep, o, config.gamma) for ep, o in zip(new, outcomes, strict=True)]
    replay_tally = _Tally()
    replay_runs = [config.replay_run] if isinstance(config.replay_run, str) else config.replay_run
    old: list[list[_Turn]] = []
    if replay_runs:
        _, old = _turns(store, config, list(replay_runs), replay_tally, replay=True)
        old = [_with_rewards(ep, 1.0, config.gamma) for ep in old]

    args = dataclasses.replace(config, checkpoint_name=name, output_dir=trainer_dir(name))
    model, tokenizer, base_model, parent, kind, new_adapter = load_policy(args)
    if new_adapter:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(args))  # type: ignore[assignment]  # B = 0: exactly the starting policy until trained

    episodes_all = new + old
    flat = [t for ep in episodes_all for t in ep]
    tokenized = [answered(tokenizer, t.messages, t.completion) for t in flat]
    fits = [len(x["input_ids"]) <= config.max_length and 1 in x["completion_mask"] for x in tokenized]
    batch_size = config.per_device_eval_batch_size or 1
    scored = score_turns(model, tokenizer, tokenized, batch_size, desc="WebRL: features and log-probs")
    model.train()
    start = [s.logp for s in scored]
    ref_logps = (
        start
        if config.reference == "start"
        else collector_logps(flat, tokenized, start, config.model, tokenizer, batch_size)
    )
    tally.counts["turns_collected_by_another_policy"] = sum(t.collector != config.model for t in flat)

    # The critic learns from the new turns only (replayed ones are successes by selection).
    n_new = sum(len(ep) for ep in new)
    feats = torch.stack([s.features for s in scored])
    targets = torch.tensor([t.mc_return for t in flat], dtype=torch.float32)
    episode_of = [i for i, ep in enumerate(episodes_all) for _ in ep]
    values = cross_fitted_values(
        feats, targets, episode_of, n_new, config.critic_folds, config.critic_epochs, config.critic_lr
    )
    heads, critic_metrics = train_critic(
        feats[:n_new], targets[:n_new], epochs=config.critic_epochs, lr=config.critic_lr
    )
    critic_metrics["critic_mae_held_out"] = float((values[:n_new] - targets[:n_new]).abs().mean())
    next_values = torch.cat([values[1:], torch.zeros(1)])
    done = torch.tensor([float(t.last) for t in flat])
    rewards = torch.tensor([t.reward for t in flat])
    if config.actor == "reference":
        returns = torch.tensor([t.mc_return for t in flat])
        adv = reference_advantages(values, next_values, rewards, done, returns)
    else:
        adv = advantages(values, next_values, rewards, done, config.gamma)
    unparsed = torch.tensor([t.unparsed for t in flat], dtype=torch.bool)
    adv = torch.where(unparsed, torch.full_like(adv, _negative(config.actor)), adv)

    rows: list[dict[str, Any]] = []
    replayed: list[tuple[str, int, dict[str, Any]]] = []
    for i, (t, x, s, ok) in enumerate(zip(flat, tokenized, scored, fits, strict=True)):
        if not ok:
            tally.counts["turns_too_long"] += 1
            continue
        row = {
            **x,
            "advantage": float(adv[i]),
            "ref_logp": ref_logps[i],
            "n_tokens": s.n_tokens,
            "trajectory_id": t.trajectory_id,
        }
        if config.actor == "reference" and adv[i] <= 0:
            tally.counts["negative_turns_left_out"] += 1
            continue
        if not t.replay:
            rows.append(row)
        elif replay_keep([math.exp(s.logp / max(1, s.n_tokens))], *config.replay_confidence)[0]:
            replayed.append((t.trajectory_id, t.index, row))
    cap = int(config.replay_ratio * len(rows))
    tally.counts["replay_candidates"] = sum(t.replay for t in flat)
    tally.counts["replay_confident_enough"] = len(replayed)
    random.Random(0).shuffle(replayed)
    rows += [r for _, _, r in sorted(replayed[:cap], key=lambda x: (x[0], x[1]))]
    tally.counts["replayed"] = min(cap, len(replayed))
    tally.counts["new_turns"] = n_new
    if not rows:
        why = "every turn is longer than max_length" if not any(fits) else "no turn has a positive advantage"
        raise NothingToTrainError(f"webrl ({config.actor}): {why} (counts: {dict(tally.counts)})")

    import datasets

    data = datasets.Dataset.from_list(rows)
    where = checkpoint_dir(name)
    where.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": heads.state_dict(),
            "hidden": feats.shape[-1],
            "features_from": config.model,
            "gamma": config.gamma,
        },
        where / CRITIC_FILE,
    )
    positive = sum(r["advantage"] > 0 for r in rows)
    source = DataSource(
        kind="webrl",
        runs=tuple(q.run_id for q in queries(config, store) if q.run_id is not None),
        suite=config.suite,
        filters={
            "gamma": config.gamma,
            "orm": config.orm,
            "replay_runs": list(replay_runs or []),
            "roles": config.roles,
            "actor": config.actor,
            "reference": config.reference,
        },
        counts={
            "trajectories": tally.trajectories,
            "episodes": len(trajs),
            "successes": int(sum(outcomes)),
            **dict(sorted(tally.counts.items())),
            "examples": len(rows),
        },
    )
    trainer = ActorTrainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=collate(tokenizer.pad_token_id),
        processing_class=tokenizer,
        actor=config.actor,
    )
    mean_adv = sum(r["advantage"] for r in rows) / len(rows)
    extra = {**critic_metrics, "advantage_mean": mean_adv, "positive_advantages": float(positive)}
    return TrainJob(
        name=name,
        method=METHOD,
        trainer=trainer,
        examples=Examples(rows=rows, source=source),
        base_model=base_model,
        parent=parent,
        kind=kind,
        extra=extra,
    )


def _negative(actor: str) -> float:
    """The advantage an unparseable turn gets: the most negative the form allows."""
    return REFERENCE_NEGATIVE if actor == "reference" else -1.0


def collector_logps(
    turns: Sequence[_Turn],
    tokenized: Sequence[dict[str, list[int]]],
    start: list[float],
    start_spec: str,
    tokenizer: Any,
    batch_size: int,
) -> list[float]:
    """Each turn's action log-prob under the policy that collected it: ``start`` (the starting
    policy's) where that is the collector, else read from the collector, loaded once each.

    Raises:
        ConfigError: a collector cannot be loaded, or reads another tokenizer's ids.
    """
    out = list(start)
    for spec in sorted({t.collector for t in turns} - {start_spec}):
        where = [i for i, t in enumerate(turns) if t.collector == spec]
        try:
            lm, tok = load_lm(spec)
        except (ModelLoadError, ConfigError) as e:
            raise ConfigError(
                f"webrl: {len(where)} turns were collected by {spec!r}, which cannot be loaded as the "
                f"reference policy ({e}); pass --set reference=start to use the starting policy instead"
            ) from e
        if tok.get_vocab() != tokenizer.get_vocab():
            raise ConfigError(
                f"webrl: {spec!r} collected {len(where)} turns but has another tokenizer than {start_spec!r}; "
                "pass --set reference=start"
            )
        scored = score_turns(lm, tok, [tokenized[i] for i in where], batch_size, desc=f"WebRL: log-probs under {spec}")
        for i, s in zip(where, scored, strict=True):
            out[i] = s.logp
        del lm
    return out


def answered(tokenizer: Any, messages: Sequence[dict[str, str]], answer: str) -> dict[str, list[int]]:
    """A turn tokenized with only ``answer`` trained. With ``answer=""`` (a state alone) only the
    end marker is, so :func:`score_turns` reads the state's features where it reads a turn's:
    at the last token of the generation header."""
    return tokenize_turns(
        tokenizer, [*messages, {"role": "assistant", "content": answer}], [False] * len(messages) + [True]
    )


def load_lm(spec: str) -> tuple[Any, Any]:
    """Model and tokenizer of a model spec or checkpoint name (``--model`` syntax), for reading."""
    from agents.llm.hf_local import load_model_and_tokenizer

    ckpt = find_checkpoint(spec) if spec != "embedded" else None
    path, adapter = ckpt.load_spec() if ckpt is not None else (spec, None)
    return load_model_and_tokenizer(path, adapter)


def estimate_values(
    store: TrajectoryStore,
    runs: list[str],
    model: str,
    states: Sequence[Sequence[dict[str, str]]],
    *,
    gamma: float = 0.9,
    roles: Sequence[str] = ("solver",),
) -> tuple[list[float], dict[str, float]]:
    """The critic's success estimates of ``states`` (conversations a turn would be sent): value
    heads fitted on the Monte-Carlo returns of the turns of ``runs``, on ``model``'s features.

    The self-evolving curriculum asks this about the first prompt of each task it writes.

    Raises:
        NothingToTrainError: the runs have no usable acting turn to fit on.
    """
    fields = DataFields(run=list(runs), roles=list(roles))
    tally = _Tally()
    trajs, eps = _turns(store, fields, None, tally)
    if not eps:
        raise NothingToTrainError(f"no acting turns in runs {', '.join(runs)} to fit a critic on")
    eps = [_with_rewards(ep, float(t.success), gamma) for ep, t in zip(eps, trajs, strict=True)]
    flat = [t for ep in eps for t in ep]
    lm, tok = load_lm(model)
    seen = [answered(tok, t.messages, t.completion) for t in flat]
    feats = torch.stack([s.features for s in score_turns(lm, tok, seen, desc="critic: features")])
    heads, metrics = train_critic(feats, torch.tensor([t.mc_return for t in flat], dtype=torch.float32))
    asked = score_turns(lm, tok, [answered(tok, m, "") for m in states]) if states else []
    values = heads.value(torch.stack([s.features for s in asked])).tolist() if asked else []
    return values, {**metrics, "critic_turns": float(len(flat))}


def load_critic(name: str) -> tuple[TwinValueHeads, str]:
    """The value heads saved with WebRL checkpoint ``name``, and the model spec whose features they read."""
    path = checkpoint_dir(name) / CRITIC_FILE
    if not Path(path).is_file():
        raise ConfigError(f"checkpoint {name!r} has no critic ({path}); only webrl checkpoints have one")
    saved = torch.load(path, weights_only=True)
    heads = TwinValueHeads(int(saved["hidden"]))
    heads.load_state_dict(saved["state_dict"])
    return heads, str(saved["features_from"])


def train_webrl(config: WebRLTrainConfig, store: TrajectoryStore) -> Checkpoint:
    """Run a WebRL update on the selected episodes and register the actor as a checkpoint
    (the critic is saved beside it). The same as ``run_job(prepare_webrl(config, store))``."""
    return run_job(prepare_webrl(config, store))
