"""Agent-R revision trajectories: learn to notice a wrong step and recover from it.

Agent-R (Yuan et al., 2025) turns search trees into training data that shows a policy going
wrong and then correcting itself, instead of only ever showing it succeed. Here, from the
stored trajectories a :class:`~training.data.DataFields` selects:

1. **Trees.** Paths of one task in one run that start from the same prompt form a tree (an
   ``mcts`` episode's paths, or several samples of a task): two paths share their steps up to
   the first step whose answer differs, their *branch point* ``s``. Only steps the
   environment answered count.
2. **Pairs.** A path is *good* when its reward is at least ``revision_alpha``. Every other path
   whose reward is at least ``revision_beta`` below a good path's is *bad*; its partner is the
   good path it shares the most steps with (then the higher reward, then the smaller id). The
   bad path must have left the good one and the good one must go on past the branch point.
   With ``revision_pairs: all``, every such good path is a partner, as the paper pairs every
   good and bad path of a tree.
3. **First error.** The verifier — the current policy, by default, in the ``verifier`` role
   (:mod:`agents.roles.verifier`), greedy — judges the bad path's steps from ``s`` on, each
   with the task, the earlier steps, the action and the environment's answer: good, bad or
   uncertain (an answer that does not parse, or a failed call, is uncertain). The cut ``t`` is
   the first bad step; when none is, the bad path's last step (its outcome says it failed).
4. **Splice.** The bad path through step ``t`` (each turn followed by the environment's
   answer), then a revision thought joined to the good path's step ``s``, then the rest of the
   good path. Conversations are rebuilt with the solver's own ``next_messages``, so every turn
   reads as the solver would have seen it.
5. **Loss.** The bad turns ``s..t`` carry no loss; the shared turns before ``s``, the revision
   turn and the good continuation do. A cumulative conversation (code) is one row; an
   environment whose prompt is rebuilt each turn (web) gives one row per trained turn.
6. **Length.** A conversation longer than the trainer's ``max_length`` is cut in its bad part
   (:func:`fit_row`): the earliest bad turns go first, then the middle of the last bad answer
   and of the environment's answer to it; the trained turns are never cut (a row whose trained
   turns alone are too long is left to the trainer's truncation, and counted).

Rows use :func:`training.data.conversation_row`'s layout (``messages``, per-message ``train``)
and say where they came from in ``origin``; :func:`training.data.tokenize_turns` carries the
flags into token-level masks.

Example:
    >>> ex = build_examples(DataFields(run=["mcts-run"], data=["revision"]), store)  # doctest: +SKIP
    >>> ex.rows[0]["origin"]  # doctest: +SKIP
    'revision: good 3f2a..., branch 0, cut 0, verdicts B'
"""

from __future__ import annotations

import asyncio
import itertools
import json
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents.roles import solver
from agents.roles.verifier import Verifier
from autodidact.types import Message, Step, Trajectory
from memory.base import TrajectoryQuery, TrajectoryStore

if TYPE_CHECKING:
    from agents.llm.base import ChatModel
    from training.data import DataFields, _Tally

# Said at the start of the turn that leaves the bad path (one chosen per pair, deterministically).
REVISION_THOUGHTS = (
    "Wait: my last step was a mistake. I will go back and take a different approach.",
    "Looking back, that approach was wrong. Let me correct it.",
    "That step did not work, and going on from it will not solve the task. I will revise my approach.",
)
EXCERPT_CHARS = 600  # of each earlier action and answer shown to the verifier


@dataclass(frozen=True)
class Path:
    """A path of a tree: a trajectory's acting steps the environment answered."""

    traj: Trajectory
    steps: tuple[Step, ...]

    @property
    def reward(self) -> float:
        return self.traj.reward


@dataclass(frozen=True)
class Pair:
    """A bad path, the good path it is spliced with, and where they part."""

    bad: Path
    good: Path
    branch: int


def shared_steps(a: Sequence[Step], b: Sequence[Step]) -> int:
    """How many leading steps two paths share (the same answer, hence the same action).

    Example:
        >>> s = Step(index=0, role="solver", completion="x")
        >>> shared_steps([s, s], [s, s.model_copy(update={"completion": "y"})])
        1
    """
    n = 0
    while n < min(len(a), len(b)) and a[n].completion == b[n].completion and a[n].action == b[n].action:
        n += 1
    return n


def trees(trajectories: Sequence[Trajectory], roles: Sequence[str]) -> list[list[Path]]:
    """Group paths by (run, task, first prompt); each group is one tree, its paths sorted by id."""
    groups: dict[tuple[str, str, str], list[Path]] = defaultdict(list)
    for traj in trajectories:
        steps = tuple(s for s in traj.steps if s.role in roles and s.action is not None and s.observation is not None)
        if not steps or not steps[0].messages:
            continue
        first = json.dumps([m.model_dump() for m in steps[0].messages], sort_keys=True)
        groups[(traj.run_id, traj.task.id, first)].append(Path(traj, steps))
    return [sorted(g, key=lambda p: p.traj.id) for _, g in sorted(groups.items())]


def pairs(tree: Sequence[Path], alpha: float, beta: float, every: bool = False) -> list[Pair]:
    """Each bad path of ``tree`` with its good partner, or with ``every`` good path it can
    pair with (see the module docstring, step 2)."""
    good = [p for p in tree if p.reward >= alpha]
    out = []
    for bad in tree:
        found: list[tuple[tuple[int, float, str], Path]] = []
        for g in good:
            if g is bad or g.reward - bad.reward < beta:
                continue
            s = shared_steps(bad.steps, g.steps)
            if s >= len(bad.steps) or s >= len(g.steps):
                continue
            found.append(((s, g.reward, _neg(g.traj.id)), g))
        found.sort(key=lambda x: x[0], reverse=True)
        out += [Pair(bad=bad, good=g, branch=key[0]) for key, g in (found if every else found[:1])]
    return out


def _neg(text: str) -> str:
    """A key that sorts strings in reverse (for "smaller id wins" inside a max)."""
    return "".join(chr(0x10FFFF - ord(c)) for c in text)


def _excerpt(text: str | None) -> str:
    text = (text or "").strip()
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + " …"


def verifier_fields(path: Path, k: int) -> dict[str, Any]:
    """What the verifier is shown about step ``k`` of ``path``."""
    history = "\n".join(
        f"{i + 1}. Action:\n{_excerpt(s.completion)}\n   Answer: {_excerpt(s.observation.text if s.observation else '')}"
        for i, s in enumerate(path.steps[:k])
    )
    step = path.steps[k]
    return {
        "task": path.traj.task.prompt,
        "history": history or "(none)",
        "action": _excerpt(step.completion),
        "result": _excerpt(step.observation.text if step.observation else ""),
    }


async def first_errors(model: ChatModel, found: Sequence[Pair]) -> list[tuple[int, str]]:
    """For each pair, ``(cut, verdicts)``: the index of the bad path's first bad step (or its
    last step) and one letter per judged step (``g``/``b``/``u``, ``e`` for a failed call).

    Every judgement a pair may need is asked at once (the model batches them); the cut is the
    first ``b`` in path order, as a step-by-step search would find it.
    """
    from tqdm.auto import tqdm

    role = Verifier()
    calls = [(i, k) for i, p in enumerate(found) for k in range(p.branch, len(p.bad.steps))]
    with tqdm(total=len(calls), desc="Agent-R: verifier judging steps", unit="step", disable=len(calls) < 8) as bar:

        async def judge(i: int, k: int) -> Any:
            call = await role.call(model, **verifier_fields(found[i].bad, k))
            bar.update(1)
            return call

        results = await asyncio.gather(*(judge(i, k) for i, k in calls))
    letters: dict[int, list[str]] = defaultdict(list)
    for (i, _k), call in zip(calls, results, strict=True):
        if call.output is not None:
            letters[i].append(call.output.label[0])
        else:
            letters[i].append("e" if call.step.error and call.step.error.startswith("model:") else "u")
    out = []
    for i, p in enumerate(found):
        verdicts = "".join(letters[i])
        first_bad = verdicts.find("b")
        cut = p.branch + first_bad if first_bad >= 0 else len(p.bad.steps) - 1
        out.append((cut, verdicts[: cut - p.branch + 1]))
    return out


def splice(pair: Pair, cut: int, thought: str, answers: str = "parsed") -> list[tuple[list[Message], str, bool]]:
    """The revision trajectory as turns ``(messages sent, answer, trained)``; the good path's
    answers as :func:`training.data.answer_text` gives them."""
    from training.data import answer_text

    bad, good, s = pair.bad.steps, pair.good.steps, pair.branch
    env = pair.bad.traj.env_id
    messages = list(bad[s].messages)
    said = [st.completion or "" for st in bad[:s]]
    turns: list[tuple[list[Message], str, bool]] = []
    for st in bad[s : cut + 1]:
        assert st.observation is not None
        turns.append((messages, st.completion or "", False))
        said.append(st.completion or "")
        messages = solver.next_messages(messages, said, st.observation, env)
    for j, st in enumerate(good[s:]):
        text = answer_text(st, answers)
        text = f"{thought}\n\n{text}" if j == 0 else text
        turns.append((messages, text, True))
        said.append(text)
        if s + j + 1 < len(good):
            assert st.observation is not None
            messages = solver.next_messages(messages, said, st.observation, env)
    return turns


def turn_rows(turns: Sequence[tuple[list[Message], str, bool]], shared: int) -> list[dict[str, Any]]:
    """Rows (``messages``, ``train``) for spliced turns: one conversation when each turn's prompt
    extends the previous turn's (its ``shared`` earlier answers trained too), else one row per
    trained turn."""
    dumped = [([m.model_dump() for m in msgs], text, flag) for msgs, text, flag in turns]
    cumulative = all(
        nxt[: len(cur) + 1] == [*cur, {"role": "assistant", "content": text}]
        for (cur, text, _), (nxt, _, _) in itertools.pairwise(dumped)
    )
    if not cumulative:
        return [
            {"messages": [*msgs, {"role": "assistant", "content": text}], "train": [False] * len(msgs) + [True]}
            for msgs, text, flag in dumped
            if flag
        ]
    prompt = dumped[0][0]
    messages = [*dumped[-1][0], {"role": "assistant", "content": dumped[-1][1]}]
    train = [False] * len(messages)
    earlier = [i for i, m in enumerate(prompt) if m["role"] == "assistant"]
    for i in earlier[len(earlier) - shared :] if shared else []:  # the shared steps' answers, not prompt examples
        train[i] = True
    for msgs, _text, flag in dumped:
        train[len(msgs)] = flag
    bad = [len(msgs) for msgs, _, flag in dumped if not flag]
    trained_after = [len(msgs) for msgs, _, flag in dumped if flag and bad and len(msgs) > bad[0]]
    span = [bad[0], trained_after[0]] if bad and trained_after else None
    return [{"messages": messages, "train": train, "bad": span}]


def fit_row(
    tokenizer: Any, messages: Sequence[dict[str, str]], train: Sequence[bool], bad: Sequence[int], max_length: int
) -> tuple[list[dict[str, str]], list[bool]] | None:
    """``messages`` cut in their bad part ``bad = [start, end)`` (the bad answers and the
    environment's answers to them) to fit ``max_length`` tokens, or None when even the shortest
    cut does not: first whole bad turns, earliest first, keeping the last (the one the revision
    answers); then the middle of what is left of the bad part, a bisection on characters."""
    from training.data import tokenize_turns

    start, end = bad
    head, tail, part = list(messages[:start]), list(messages[end:]), list(messages[start:end])

    def build(middle: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[bool]]:
        msgs = [*head, *middle, *tail]
        return msgs, [*train[:start], *([False] * len(middle)), *train[end:]]

    def length(middle: list[dict[str, str]]) -> int:
        return len(tokenize_turns(tokenizer, *build(middle))["input_ids"])

    while len(part) > 2 and length(part) > max_length:
        part = part[2:]  # a bad answer and the environment's answer to it
    if length(part) <= max_length:
        return build(part)
    lo, hi = 0, max(len(m["content"]) for m in part)  # characters kept of each bad message
    if length([_shortened(m, lo) for m in part]) > max_length:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if length([_shortened(m, mid) for m in part]) <= max_length:
            lo = mid
        else:
            hi = mid - 1
    return build([_shortened(m, lo) for m in part])


def _shortened(message: dict[str, str], keep: int) -> dict[str, str]:
    """``message`` with at most ``keep`` of its characters, its middle left out."""
    text = message["content"]
    if len(text) <= keep:
        return message
    left = keep // 2
    return {
        **message,
        "content": f"{text[:left]}\n[... {len(text) - keep} characters left out ...]\n{text[len(text) - (keep - left) :]}",
    }


def revision_rows(
    store: TrajectoryStore,
    qs: Sequence[TrajectoryQuery],
    fields: DataFields,
    tally: _Tally,
    model: ChatModel | None = None,
) -> list[dict[str, Any]]:
    """``revision`` rows (see the module docstring); ``model`` is the verifier (default: built
    from ``fields.verifier``, or the training config's ``model`` when that is ``policy``)."""
    from training.data import _Rows, episodes

    found: list[Pair] = []
    for tree in trees(list(episodes(store, qs, tally)), fields.roles):
        tally.counts["trees"] += 1
        found += pairs(tree, fields.revision_alpha, fields.revision_beta, fields.revision_pairs == "all")
    tally.counts["pairs"] = len(found)
    if not found:
        return []
    cuts = _judge(found, model, fields)
    rows = _Rows(tally)
    for pair, (cut, verdicts) in zip(found, cuts, strict=True):
        tally.counts["cut_by_verifier" if "b" in verdicts else "cut_at_the_end"] += 1
        thought = REVISION_THOUGHTS[zlib.crc32(f"{pair.bad.traj.id}/{pair.good.traj.id}".encode()) % 3]
        origin = f"revision: good {pair.good.traj.id}, branch {pair.branch}, cut {cut}, verdicts {verdicts.upper()}"
        for row in turn_rows(splice(pair, cut, thought, fields.answers), pair.branch):
            rows.add({**row, "task_id": pair.bad.traj.task.id, "trajectory_id": pair.bad.traj.id, "origin": origin})
    return rows.sorted()


def _judge(found: list[Pair], model: ChatModel | None, fields: DataFields) -> list[tuple[int, str]]:
    """Run the verifier over ``found`` on a fresh event loop, building (and closing) the model if needed."""
    from agents.llm.base import resolve_model

    async def go() -> list[tuple[int, str]]:
        if model is not None:
            return await first_errors(model, found)
        spec = getattr(fields, "model", "embedded") if fields.verifier == "policy" else fields.verifier
        built = resolve_model(spec).build()
        try:
            return await first_errors(built, found)
        finally:
            await built.aclose()

    return asyncio.run(go())
