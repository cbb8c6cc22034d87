"""Dataset builders: stored trajectories in, training rows out, deterministic and described.

Every builder reads the trajectories a :class:`DataFields` selects (runs, suite, round) and
keeps the episodes that ran to an outcome (an episode with an ``error`` never counts). An
episode *succeeded* by its ``success`` flag, or by ``reward >= min_reward`` when
``min_reward`` is set. Rows are deduplicated and sorted, so the same data gives the same
dataset whatever order episodes were stored in.

An acting step's answer trains as :func:`answer_text` gives it: with ``answers=parsed`` (the
default) a code action is the lone ```python block the solver prompt asks for, holding the
code the environment ran; the chatter a small model adds around it (often running on to
``max_tokens``) is not learnt. ``answers=raw`` trains on completions as generated.

Kinds (``DataFields.data``):

- ``success`` — SFT on successful episodes (rejection sampling, as in STaR): each acting step
  (``roles``, default the solver) that has a completion and no error is one row, the
  messages it was sent then its completion. An answer the episode went on from (a code
  submission that failed its visible tests, answered with another try) is not a row: it was
  wrong, and learning it would teach wrong first attempts; the right answer after it is a
  row, with the failed try and its feedback in its prompt.
- ``revision`` — Agent-R revision trajectories (:mod:`training.agent_r`): a failed path cut at
  its first wrong step, a revision thought, then a good path's continuation; the bad turns are
  in the row but carry no loss.
- ``reviewer`` — the reviewer's prompt for each finished attempt (the task, the attempt, the
  environment's feedback) and a review that states the outcome: ``Score`` is the attempt's
  reward out of 10; the critique is the run's own reviewer's when its score agreed with the
  outcome, else a hindsight one from the feedback.
- ``refiner`` — the refiner's prompt for a failed attempt (with its feedback and a hindsight
  critique) and, as the answer, an attempt at the same task that succeeded (the same
  episode's later one first).
- ``world_model`` — the world model's prompt (what the environment showed, one action) and
  what it showed next. The first action of an episode has no stored observation before it
  and gives no row.
- ``orm`` — WebRL's outcome reward model: the ``outcome`` role's prompt for each finished
  episode (the task and what the agent did, :func:`agents.roles.outcome.transcript`) and its
  real outcome, ``YES`` or ``NO`` (:class:`training.webrl.OutcomeRewardModel` reads it back).
- ``dpo`` (:func:`dpo_rows`) — preference pairs: at the same task and the same prefix (the
  exact messages a step was sent), a completion from a successful episode is ``chosen`` over
  one from a failed episode.

SFT rows are conversations with a loss flag per message: ``{"messages": [...], "train":
[bool, ...], "task_id", "trajectory_id"}``; :func:`tokenize_turns` turns one into
``input_ids`` and a ``completion_mask`` (1 on the tokens of each trained assistant turn and
its end-of-turn marker), which TRL's ``SFTTrainer`` turns into labels. DPO rows are TRL's
conversational ``prompt`` / ``chosen`` / ``rejected``.

:func:`save_dataset` writes a Hugging Face dataset (``save_to_disk``) with a ``README.md``
card: the kind, the source runs, the filters, the counts.

Example:
    >>> ex = build_examples(DataFields(run=["abc123"], data=["success"]), store)  # doctest: +SKIP
    >>> ex.source.counts  # doctest: +SKIP
    {'trajectories': 12, 'selected': 5, 'examples': 5, 'duplicates': 0, 'skipped_steps': 0}
    >>> save_dataset(ex, "data/abc123-success")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.roles.solver import code_answer
from autodidact.errors import ConfigError, NothingToTrainError
from autodidact.types import Message, Step, Trajectory
from environments.code.env import SUBMIT_KINDS
from memory.base import TrajectoryQuery, TrajectoryStore
from training.checkpoints import DataSource

if TYPE_CHECKING:
    from agents.llm.base import ChatModel

SFT_KINDS = ("success", "revision", "reviewer", "refiner", "world_model", "orm")
KINDS = (*SFT_KINDS, "dpo")
ANSWERS = ("parsed", "raw")
REVISION_PAIRS = ("nearest", "all")
FEEDBACK_CHARS = 300  # of the environment's feedback, in a hindsight critique


@dataclass
class DataFields:
    """What to build a dataset from. Training configs inherit these fields."""

    run: str | list[str] | None = field(default=None, metadata={"help": "run id(s) (or unique prefixes); None: all"})
    suite: str | None = field(default=None, metadata={"help": "only episodes of this task suite"})
    round: int | None = field(default=None, metadata={"help": "only episodes of this round"})
    min_reward: float | None = field(
        default=None, metadata={"help": "success is reward >= this instead of the episode's success flag"}
    )
    roles: list[str] = field(default_factory=lambda: ["solver"], metadata={"help": "acting roles to learn from"})
    data: list[str] = field(
        default_factory=lambda: ["success"],
        metadata={"help": f"SFT data kinds, mixed: {', '.join(SFT_KINDS)}"},
    )
    revision_alpha: float = field(default=1.0, metadata={"help": "Agent-R: a good path's reward is at least this"})
    revision_beta: float = field(
        default=0.25, metadata={"help": "Agent-R: a bad path's reward is at least this much below the good one's"}
    )
    verifier: str = field(
        default="policy",
        metadata={"help": "Agent-R: model that finds the first wrong step; 'policy': the model being trained"},
    )
    revision_pairs: str = field(
        default="nearest",
        metadata={"help": "Agent-R: each bad path with its nearest good path, or with all of them (the paper's)"},
    )
    prm: str | None = field(
        default=None,
        metadata={"help": "ReST-MCTS*: a process reward model (value checkpoint) that filters success rows"},
    )
    prm_min: float = field(default=0.5, metadata={"help": "success rows whose step the PRM values below this go"})
    max_pairs_per_prompt: int = field(
        default=4, metadata={"help": "DPO pairs (refiner rows) per prompt (task) at most"}
    )
    answers: str = field(
        default="parsed",
        metadata={"help": "parsed: a code answer trains as the code block the environment ran; raw: as generated"},
    )

    def check_data(self) -> None:
        """Normalise ``run`` and ``data``; an unknown kind or a bad threshold is a ConfigError."""
        if isinstance(self.run, str):
            self.run = [self.run]
        if isinstance(self.data, str):
            self.data = [self.data]
        unknown = [k for k in self.data if k not in SFT_KINDS]
        if unknown or not self.data:
            raise ConfigError(f"data must list SFT data kinds from {', '.join(SFT_KINDS)}; got {self.data!r}")
        if not self.roles:
            raise ConfigError("roles must name at least one acting role, e.g. roles=[solver]")
        if self.answers not in ANSWERS:
            raise ConfigError(f"answers must be one of {', '.join(ANSWERS)}; got {self.answers!r}")
        if self.revision_pairs not in REVISION_PAIRS:
            raise ConfigError(f"revision_pairs must be one of {', '.join(REVISION_PAIRS)}; got {self.revision_pairs!r}")
        if self.revision_beta < 0 or self.max_pairs_per_prompt < 1:
            raise ConfigError("revision_beta must be >= 0 and max_pairs_per_prompt >= 1")


@dataclass(frozen=True)
class Examples:
    """The rows of a dataset and how they were selected."""

    rows: list[dict[str, Any]]
    source: DataSource


@dataclass
class _Tally:
    """Counts kept while selecting; they end up in the dataset card and the checkpoint record."""

    trajectories: int = 0
    selected: int = 0
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def queries(fields: DataFields, store: TrajectoryStore) -> list[TrajectoryQuery]:
    """One query per selected run (every run when none is named), with the suite and round.

    Raises:
        ConfigError: a run is not in the store (or the prefix is ambiguous).
    """
    runs = [fields.run] if isinstance(fields.run, str) else fields.run
    if not runs:
        return [TrajectoryQuery(suite=fields.suite, round=fields.round)]
    out = []
    for run in runs:
        found = store.get_run(run)
        if found is None:
            raise ConfigError(
                f"run {run!r} is not in the store {store.url} (or the prefix is ambiguous); "
                "see `autodidact trajectories list`"
            )
        out.append(TrajectoryQuery(run_id=found.run.id, suite=fields.suite, round=fields.round))
    return out


def episodes(store: TrajectoryStore, qs: Sequence[TrajectoryQuery], tally: _Tally) -> Iterator[Trajectory]:
    """The selected trajectories that ran to an outcome (no ``error``), counted in ``tally``."""
    for q in qs:
        for traj in store.query(q.model_copy(update={"success": None})):
            tally.trajectories += 1
            if traj.error is None:
                tally.selected += 1
                yield traj


def succeeded(traj: Trajectory, min_reward: float | None) -> bool:
    """The episode counts as a success: its flag, or ``reward >= min_reward`` when that is set."""
    return traj.success if min_reward is None else traj.reward >= min_reward


def acting_steps(traj: Trajectory, roles: Sequence[str], tally: _Tally, *, unparsed: bool = False) -> Iterator[Step]:
    """The steps of acting ``roles`` the environment answered or that ended in an error-free
    answer; steps with no completion, no messages or an error are counted as skipped. With
    ``unparsed``, a step whose answer did not parse as an action (``error`` ``parse: ...``)
    is yielded too: a method that trains on negatives can learn not to write it."""
    for step in traj.steps:
        if step.role not in roles or (step.action is not None and step.observation is None):
            continue  # another role, or a candidate the graph did not act on
        if not step.completion or not step.messages:
            tally.counts["skipped_steps"] += 1
        elif step.error is None:
            yield step
        elif unparsed and is_unparsed(step):
            tally.counts["unparsed_steps"] += 1
            yield step
        else:
            tally.counts["skipped_steps"] += 1


def is_unparsed(step: Step) -> bool:
    """The model answered, but not with an action the environment could take."""
    return step.error is not None and step.error.startswith("parse:")


def answer_text(step: Step, answers: str = "parsed") -> str:
    """What an acting step's answer trains as (see the module docstring): the completion, or
    with ``parsed`` a code action re-rendered as the answer the prompt asks for."""
    action = step.action
    if answers == "parsed" and action is not None and action.kind == "code" and action.text.strip():
        return code_answer(action.text)
    return step.completion or ""


def conversation_row(
    prompt: Sequence[Message] | Sequence[dict[str, str]], completion: str, traj: Trajectory, origin: str
) -> dict[str, Any]:
    """An SFT row: ``prompt`` (no loss) then the assistant's ``completion`` (loss); ``origin``
    says how it was made."""
    messages = [m.model_dump() if isinstance(m, Message) else dict(m) for m in prompt]
    return {
        "messages": [*messages, {"role": "assistant", "content": completion}],
        "train": [False] * len(messages) + [True],
        "task_id": traj.task.id,
        "trajectory_id": traj.id,
        "origin": origin,
    }


class _Rows:
    """Rows deduplicated by their messages (the smallest trajectory id kept) and sorted."""

    def __init__(self, tally: _Tally) -> None:
        self.tally = tally
        self.by_key: dict[str, dict[str, Any]] = {}

    def add(self, row: dict[str, Any], id_key: str = "trajectory_id") -> None:
        key = json.dumps({k: v for k, v in row.items() if k not in ("task_id", "origin", id_key)}, sort_keys=True)
        kept = self.by_key.get(key)
        if kept is None:
            self.by_key[key] = row
            return
        self.tally.counts["duplicates"] += 1
        if row[id_key] < kept[id_key]:  # so the row does not depend on the order episodes were stored in
            kept.update({"task_id": row["task_id"], id_key: row[id_key]})

    def sorted(self) -> list[dict[str, Any]]:
        return sorted(self.by_key.values(), key=lambda r: (r["task_id"], json.dumps(r, sort_keys=True)))


# --- the builders -------------------------------------------------------------------------------


def rejected_answer(step: Step) -> bool:
    """Whether a step submitted an answer the episode went on from: a wrong try, even in an
    episode whose last try was right."""
    return step.action is not None and step.action.kind in SUBMIT_KINDS and not (step.terminated or step.truncated)


def success_rows(
    store: TrajectoryStore, qs: Sequence[TrajectoryQuery], fields: DataFields, tally: _Tally
) -> list[dict[str, Any]]:
    """``success``: every usable acting step of a successful episode."""
    rows = _Rows(tally)
    tally.counts["successes"] = 0
    for traj in episodes(store, qs, tally):
        if not succeeded(traj, fields.min_reward):
            continue
        tally.counts["successes"] += 1
        for step in acting_steps(traj, fields.roles, tally):
            if rejected_answer(step):
                tally.counts["rejected_answers"] += 1
                continue
            rows.add(conversation_row(step.messages, answer_text(step, fields.answers), traj, "success"))
    kept = rows.sorted()
    if fields.prm is None:
        return kept
    from training.prm import loaded

    values = loaded(fields.prm).values([(r["messages"][:-1], r["messages"][-1]["content"]) for r in kept])
    tally.counts["below_prm_min"] = sum(v < fields.prm_min for v in values)
    return [r for r, v in zip(kept, values, strict=True) if v >= fields.prm_min]


def _attempts(traj: Trajectory, roles: Sequence[str]) -> list[Step]:
    """The acting steps that ended an attempt: the environment answered and the episode ended there."""
    return [
        s
        for s in traj.steps
        if s.role in roles and s.completion and s.observation is not None and (s.terminated or s.truncated)
    ]


def _hindsight_critique(step: Step) -> str:
    """A critique that states the outcome, from the environment's feedback."""
    if step.reward >= 1.0:
        return "It is right: it passes every check. Nothing to fix."
    feedback = " ".join(line.strip() for line in (step.observation.text if step.observation else "").splitlines())
    feedback = feedback.strip()[:FEEDBACK_CHARS] or "the environment rejected it"
    return f"It is wrong: {feedback}"


def _recorded_critique(traj: Trajectory, attempt: Step, roles: Sequence[str]) -> str | None:
    """The run's own reviewer's critique of ``attempt``, when its score agreed with the outcome."""
    for step in traj.steps[traj.steps.index(attempt) + 1 :]:
        if step.role in roles and step.action is not None:
            return None  # the next attempt started: no review of this one
        out = step.output or {}
        if step.role == "reviewer" and step.error is None and "score" in out and out.get("critique"):
            agreed = (float(out["score"]) >= 0.5) == (attempt.reward >= 1.0)
            return str(out["critique"]) if agreed else None
    return None


def reviewer_rows(
    store: TrajectoryStore, qs: Sequence[TrajectoryQuery], fields: DataFields, tally: _Tally
) -> list[dict[str, Any]]:
    """``reviewer``: each finished attempt and a review whose score is its outcome."""
    from agents.roles.reviewer import Reviewer

    role, rows = Reviewer(), _Rows(tally)
    for traj in episodes(store, qs, tally):
        for attempt in _attempts(traj, fields.roles):
            assert attempt.observation is not None
            recorded = _recorded_critique(traj, attempt, fields.roles)
            origin = "reviewer: recorded critique" if recorded else "reviewer: hindsight critique"
            tally.counts[origin.split(": ")[1].replace(" ", "_") + "s"] += 1
            critique = recorded or _hindsight_critique(attempt)
            score = round(10 * min(1.0, max(0.0, attempt.reward)))
            prompt = role.messages(task=traj.task.prompt, attempt=attempt.completion, feedback=attempt.observation.text)
            rows.add(conversation_row(prompt, f"Score: {score}\nCritique: {critique}", traj, origin))
    return rows.sorted()


def refiner_rows(
    store: TrajectoryStore, qs: Sequence[TrajectoryQuery], fields: DataFields, tally: _Tally
) -> list[dict[str, Any]]:
    """``refiner``: a failed attempt (its feedback, a critique) and an attempt at the task that succeeded."""
    from agents.roles.refiner import Refiner

    failed: dict[str, list[tuple[Trajectory, Step]]] = defaultdict(list)
    fixed: dict[str, list[tuple[str, str, int]]] = defaultdict(list)  # task -> (trajectory id, answer, index)
    for traj in episodes(store, qs, tally):
        for attempt in _attempts(traj, fields.roles):
            if attempt.reward >= 1.0 and succeeded(traj, fields.min_reward):
                fixed[traj.task.id].append((traj.id, attempt.completion or "", attempt.index))
            elif attempt.reward < 1.0:
                failed[traj.task.id].append((traj, attempt))
    role, rows = Refiner(), _Rows(tally)
    for task_id, drafts in failed.items():
        answers = sorted(fixed.get(task_id, []))
        if not answers:
            tally.counts["failures_without_a_fix"] += len(drafts)
            continue
        drafts.sort(key=lambda d: (d[0].id, d[1].index))
        for traj, draft in drafts[: fields.max_pairs_per_prompt]:
            assert draft.observation is not None
            later = [a for a in answers if a[0] == traj.id and a[2] > draft.index]  # the same episode's fix first
            fixed_by, answer, _ = (later or answers)[0]
            critique = _recorded_critique(traj, draft, fields.roles) or _hindsight_critique(draft)
            prompt = role.messages(
                task=traj.task.prompt, attempt=draft.completion, feedback=draft.observation.text, critique=critique
            )
            reflection = "The attempt failed the checks; the answer below passes them."
            rows.add(
                conversation_row(
                    prompt, f"Reflection: {reflection}\nAnswer:\n{answer}", traj, f"refiner: fixed by {fixed_by}"
                )
            )
    return rows.sorted()


def world_model_rows(
    store: TrajectoryStore, qs: Sequence[TrajectoryQuery], fields: DataFields, tally: _Tally
) -> list[dict[str, Any]]:
    """``world_model``: what the environment showed, an action, and what it showed next."""
    from agents.roles.world_model import WorldModel

    role, rows = WorldModel(), _Rows(tally)
    for traj in episodes(store, qs, tally):
        before = None
        for step in traj.steps:
            if step.role not in fields.roles or step.action is None or step.observation is None:
                continue
            if before is None:
                tally.counts["first_steps"] += 1  # nothing stored of what it saw before acting
            elif step.completion:
                prompt = role.messages(observation=before, action=step.completion.strip())
                rows.add(conversation_row(prompt, step.observation.text, traj, "world_model"))
            before = step.observation.text
    return rows.sorted()


def orm_rows(
    store: TrajectoryStore, qs: Sequence[TrajectoryQuery], fields: DataFields, tally: _Tally
) -> list[dict[str, Any]]:
    """``orm``: each finished episode (the task, what the agent did) and whether it succeeded."""
    from agents.roles.outcome import OutcomeJudge, transcript

    role, rows = OutcomeJudge(), _Rows(tally)
    for traj in episodes(store, qs, tally):
        text = transcript(traj, fields.roles)
        if text == "(nothing)":
            tally.counts["no_action"] += 1
            continue
        ok = succeeded(traj, fields.min_reward)
        tally.counts["yes" if ok else "no"] += 1
        prompt = role.messages(task=traj.task.prompt, transcript=text)
        rows.add(conversation_row(prompt, "YES" if ok else "NO", traj, "orm"))
    return rows.sorted()


def dpo_rows(
    store: TrajectoryStore, qs: Sequence[TrajectoryQuery], fields: DataFields, tally: _Tally
) -> list[dict[str, Any]]:
    """``dpo``: at one task and one exact prompt, a successful episode's completion over a failed one's."""
    groups: dict[tuple[str, str], dict[bool, dict[str, str]]] = defaultdict(lambda: {True: {}, False: {}})
    for traj in episodes(store, qs, tally):
        ok = succeeded(traj, fields.min_reward)
        for step in acting_steps(traj, fields.roles, tally):
            key = (traj.task.id, json.dumps([m.model_dump() for m in step.messages]))
            seen = groups[key][ok]
            completion = answer_text(step, fields.answers)
            if completion not in seen or traj.id < seen[completion]:
                seen[completion] = traj.id  # completion -> the smallest episode id that gave it
    rows = []
    for (task_id, prompt), sides in sorted(groups.items()):
        pairs = [(c, r) for c in sorted(sides[True]) for r in sorted(sides[False]) if c != r]
        if not pairs:
            continue
        tally.counts["prompts"] += 1
        tally.counts["pairs_dropped"] += max(0, len(pairs) - fields.max_pairs_per_prompt)
        for chosen, rejected in pairs[: fields.max_pairs_per_prompt]:
            rows.append(
                {
                    "prompt": json.loads(prompt),
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    "task_id": task_id,
                    "chosen_id": sides[True][chosen],
                    "rejected_id": sides[False][rejected],
                }
            )
    return rows


_BUILDERS = {
    "success": success_rows,
    "reviewer": reviewer_rows,
    "refiner": refiner_rows,
    "world_model": world_model_rows,
    "orm": orm_rows,
    "dpo": dpo_rows,
}


def build_examples(
    fields: DataFields, store: TrajectoryStore, kind: str | None = None, *, verifier: ChatModel | None = None
) -> Examples:
    """The rows of ``kind`` (default: every kind in ``fields.data``, concatenated) and their source.

    ``revision`` asks a model to find first errors: ``verifier`` when given, else one built
    from ``fields.verifier`` (``policy``: the model the training config names, else ``embedded``).

    Raises:
        ConfigError: an unknown kind or run.
        NothingToTrainError: no row survives; the message names the runs and the counts.
    """
    fields.check_data()
    kinds = [kind] if kind is not None else list(fields.data)
    if any(k not in KINDS for k in kinds):
        raise ConfigError(f"unknown data kind in {kinds!r}; choose from {', '.join(KINDS)}")
    qs = queries(fields, store)
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for k in kinds:
        tally = _Tally()
        if k == "revision":
            from training.agent_r import revision_rows

            got = revision_rows(store, qs, fields, tally, verifier)
        else:
            got = _BUILDERS[k](store, qs, fields, tally)
        rows += got
        prefix = f"{k}." if len(kinds) > 1 else ""
        counts.update(
            {
                f"{prefix}trajectories": tally.trajectories,
                f"{prefix}selected": tally.selected,
                **{f"{prefix}{n}": v for n, v in sorted(tally.counts.items())},
                f"{prefix}examples": len(got),
            }
        )
    runs = tuple(q.run_id for q in qs if q.run_id is not None)
    source = DataSource(
        kind="+".join(kinds),
        runs=runs,
        suite=fields.suite,
        filters=_filters(fields, kinds),
        counts=counts,
    )
    if not rows:
        raise NothingToTrainError(_nothing_message(source))
    columns = list(dict.fromkeys(k for r in rows for k in r))  # every row has every column (None where absent)
    return Examples(rows=[{c: r.get(c) for c in columns} for r in rows], source=source)


def _filters(fields: DataFields, kinds: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"round": fields.round, "min_reward": fields.min_reward, "roles": sorted(fields.roles)}
    if "revision" in kinds:
        out.update(
            alpha=fields.revision_alpha,
            beta=fields.revision_beta,
            pairs=fields.revision_pairs,
            verifier=fields.verifier,
        )
    if "success" in kinds and fields.prm is not None:
        out.update(prm=fields.prm, prm_min=fields.prm_min)
    if "dpo" in kinds or "refiner" in kinds:
        out["max_pairs_per_prompt"] = fields.max_pairs_per_prompt
    return out


def _nothing_message(source: DataSource) -> str:
    if not source.runs:
        what = "the store has"
    elif len(source.runs) == 1:
        what = f"run {source.runs[0]} has"
    else:
        what = f"runs {', '.join(source.runs)} have"
    if source.suite is not None:
        what += f" (suite {source.suite})"
    counts = ", ".join(f"{k} {v}" for k, v in source.counts.items())
    roles_hint = f"check --set roles=[...] (now {', '.join(source.filters.get('roles', []))})"
    if source.kind == "success" and source.counts.get("successes"):
        return f"{what} no success examples ({counts}): no usable acting step; nothing to train on — {roles_hint}"
    if source.kind == "success":
        bar = "successful" if source.filters.get("min_reward") is None else f"reward >= {source.filters['min_reward']}"
        return (
            f"{what} 0 {bar} episodes ({counts}); nothing to train on — collect more episodes "
            "or lower the bar with --set min_reward=0.5"
        )
    hint = {
        "revision": "collect search trees with --graph mcts (a task needs a good and a bad path), "
        "or relax --set revision_alpha=... revision_beta=...",
        "dpo": "a prompt needs a successful and a failed completion: sample several per task (--samples 4)",
    }.get(source.kind, roles_hint)
    return f"{what} no {source.kind} examples ({counts}); nothing to train on — {hint}"


# --- tokenization and saving --------------------------------------------------------------------


def tokenize_turns(tokenizer: Any, messages: Sequence[dict[str, str]], train: Sequence[bool]) -> dict[str, list[int]]:
    """``input_ids`` of a conversation rendered by the tokenizer's chat template, and a
    ``completion_mask`` that is 1 exactly on the trained assistant turns.

    Each assistant turn is split as inference sees it: the prompt up to and including the
    generation header (``<|im_start|>assistant\\n``) is tokenized apart from the answer, and
    the answer's tokens plus the end-of-turn marker carry the turn's flag. Every piece is the
    difference between two renderings, so the ids decode to exactly the template's text.

    Raises:
        ConfigError: the chat template does not render a conversation as an extension of its
            shorter prefixes, so turns cannot be told apart.

    Example:
        >>> out = tokenize_turns(tok, [{"role": "user", "content": "hi"},
        ...                            {"role": "assistant", "content": "hello"}], [False, True])  # doctest: +SKIP
        >>> tok.decode([i for i, m in zip(out["input_ids"], out["completion_mask"]) if m])  # doctest: +SKIP
        'hello<|im_end|>\\n'
    """
    if len(train) != len(messages):
        raise ValueError(f"{len(messages)} messages but {len(train)} train flags")
    ids: list[int] = []
    mask: list[int] = []
    done = ""

    def render(upto: int, header: bool) -> str:
        return str(tokenizer.apply_chat_template(list(messages[:upto]), tokenize=False, add_generation_prompt=header))

    def extend(text: str, flag: bool) -> None:
        nonlocal done
        if not text.startswith(done):
            raise ConfigError(
                "the tokenizer's chat template does not render a conversation as an extension of its "
                "prefixes, so per-turn loss masks cannot be computed; use a model whose template does (ChatML does)"
            )
        piece = text[len(done) :]
        if piece:
            new = tokenizer(piece, add_special_tokens=False)["input_ids"]
            ids.extend(new)
            mask.extend([int(flag)] * len(new))
        done = text

    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            extend(render(i, True), False)
            extend(render(i + 1, False), bool(train[i]))
        else:
            extend(render(i + 1, False), False)
    return {"input_ids": ids, "completion_mask": mask}


def save_dataset(examples: Examples, out: str | Path) -> Path:
    """Write ``examples`` as a Hugging Face dataset at ``out`` with a ``README.md`` card.

    Raises:
        ConfigError: ``out`` exists and is not empty.
    """
    import datasets

    where = Path(out)
    if where.exists() and any(where.iterdir()):
        raise ConfigError(f"{where} exists and is not empty; choose another --out or remove it")
    ds = datasets.Dataset.from_list(examples.rows)
    ds.save_to_disk(str(where))
    (where / "README.md").write_text(card(examples, ds.column_names))
    return where


def card(examples: Examples, columns: Sequence[str]) -> str:
    """The dataset card: what the rows are, where they came from, how they were filtered and counted."""
    s = examples.source
    lines = [
        f"# Autodidact dataset: {s.kind}",
        "",
        f"Built {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} by `training.data` from stored trajectories.",
        "",
        f"- rows: {len(examples.rows)}",
        f"- columns: {', '.join(columns)}",
        f"- source runs: {', '.join(s.runs) or 'all runs in the store'}",
        f"- suite: {s.suite or 'any'}",
        "- filters: " + ", ".join(f"{k}={v}" for k, v in s.filters.items()),
        "- counts: " + ", ".join(f"{k} {v}" for k, v in s.counts.items()),
        "",
    ]
    if "messages" in columns:
        lines.append(
            "Each row is a conversation; `train[i]` says whether message i carries the loss "
            "(only assistant messages ever do). Load it with `datasets.load_from_disk` and tokenize "
            "with `training.data.tokenize_turns`."
        )
    else:
        lines.append("Each row is a preference pair in TRL's conversational prompt / chosen / rejected format.")
    return "\n".join(lines) + "\n"
