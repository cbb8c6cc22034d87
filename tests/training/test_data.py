"""Dataset builders (training.data, training.agent_r) and DPO (training.dpo).

The builders run on hand-made trees of code episodes whose conversations are built with the
solver's own functions, with a keyed verifier that answers per action, so every row is known
exactly. Tokenization is checked token by token with the embedded model's tokenizer and
through the SFT trainer's own dataloader; the verifier and DPO also run on the real embedded
model (``slow``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from agents.llm.hf_local import TransformersChatModel
from agents.roles import solver
from agents.roles.verifier import Verifier
from autodidact.errors import ConfigError, NothingToTrainError
from autodidact.types import (
    Action,
    Completion,
    Message,
    Observation,
    PolicyRef,
    SamplingParams,
    Step,
    Task,
    Trajectory,
)
from memory.base import TrajectoryStore, open_store
from training.agent_r import REVISION_THOUGHTS, fit_row
from training.checkpoints import DataSource
from training.data import DataFields, Examples, build_examples, save_dataset, tokenize_turns
from training.dpo import DPOTrainConfig, prepare_dpo
from training.policy import run_job
from training.sft import SFTTrainConfig, prepare_sft, tokenized

from .test_sft import TINY  # two optimizer steps of batch 2: a test-sized run

TASK = Task(id="bundled/last", suite="bundled", prompt="Write last(xs): the last element of xs.")


def code(body: str) -> str:
    return f"```python\ndef last(xs):\n    return {body}\n```"


A0, G, W, C0, W2 = code("xs[len(xs)]"), code("xs[-1]"), code("xs[0]"), code("None"), code("xs[1]")
FEEDBACK = {
    A0: "IndexError: list index out of range",
    G: "3 of 3 tests passed.",
    W: "1 of 3 tests passed. AssertionError: last([1, 2]) returned 1, expected 2",
    C0: "exit code 0",
    W2: "0 of 3 tests passed. AssertionError: last([1]) raised IndexError",
}
REWARD = {G: 1.0, W: 1 / 3, W2: 0.0}


def path(
    run: str, id: str, answers: Sequence[str], *, parent: str | None = None, tries: bool = False, task: str = "last"
) -> Trajectory:
    """A code episode answering ``answers`` in turn (the last one submitted), its conversation
    built the way the graphs build it. With ``tries`` every answer is a submission: a wrong try
    that failed its visible tests goes on, their outcome the next prompt's feedback."""
    messages = solver.initial_messages(Observation(text=TASK.prompt), "code")
    steps = []
    said: list[str] = []
    for i, text in enumerate(answers):
        last = i == len(answers) - 1
        obs = Observation(text=FEEDBACK[text])
        steps.append(
            Step(
                index=i,
                role="solver",
                messages=tuple(messages),
                completion=text,
                action=Action(kind="submit" if last or tries else "run", text=text),
                observation=obs,
                reward=REWARD.get(text, 0.0) if last or tries else 0.0,
                terminated=last,
            )
        )
        said.append(text)
        messages = solver.next_messages(messages, said, obs, "code")
    reward = steps[-1].reward
    return Trajectory(
        id=id,
        run_id=run,
        task=TASK.model_copy(update={"id": f"bundled/{task}"}),
        env_id="code",
        policy=PolicyRef(model="embedded"),
        steps=tuple(steps),
        reward=reward,
        success=reward >= 1.0,
        parent_id=parent,
    )


def tree(run: str = "t1") -> list[Trajectory]:
    """An mcts-like tree: good (A0 then G), bad-late (A0 then W: parts at step 1), bad-early
    (C0 then W2: parts at step 0)."""
    return [
        path(run, f"{run}-good", [A0, G]),
        path(run, f"{run}-late", [A0, W], parent=f"{run}-good"),
        path(run, f"{run}-early", [C0, W2], parent=f"{run}-good"),
    ]


class KeyedVerifier:
    """Answers the verifier by the action it is shown: ``verdicts[action]``, else 'Uncertain'."""

    name = "keyed"

    def __init__(self, verdicts: dict[str, str]) -> None:
        self.verdicts = verdicts
        self.asked: list[str] = []

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        out = []
        for conv in conversations:
            shown = conv[-1].content.rsplit("Action:\n", 1)[1].split("\n\nEnvironment answer:", 1)[0]
            self.asked.append(shown)
            out.append(Completion(text=self.verdicts.get(shown, "Uncertain")))
        return out

    async def aclose(self) -> None:
        pass


def revision(store: TrajectoryStore, verifier: Any, **fields: Any) -> list[dict[str, Any]]:
    return build_examples(DataFields(run="t1", data=["revision"], **fields), store, verifier=verifier).rows


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


# --- Agent-R revision trajectories -----------------------------------------------------------------


def test_revision_splices_bad_prefix_thought_and_good_continuation(store: TrajectoryStore) -> None:
    for t in tree():
        store.append(t)
    verifier = KeyedVerifier({W: "Bad", C0: "Good", W2: "Uncertain"})
    ex = build_examples(DataFields(run="t1", data=["revision"]), store, verifier=verifier)
    rows = {r["trajectory_id"]: r for r in ex.rows}
    assert set(rows) == {"t1-late", "t1-early"}
    assert ex.source.counts["pairs"] == 2
    assert ex.source.counts["cut_by_verifier"] == 1 and ex.source.counts["cut_at_the_end"] == 1

    good = {t.id: t for t in tree()}["t1-good"]
    # late: shares A0 (trained), W is the first error (no loss), then the thought and G.
    late = rows["t1-late"]
    thought = next(t for t in REVISION_THOUGHTS if t in late["messages"][-1]["content"])
    prompt = [m.model_dump() for m in good.steps[1].messages]  # system, task, A0, its feedback
    assert late["messages"][: len(prompt)] == prompt
    rest = late["messages"][len(prompt) :]
    assert rest[0] == assistant(W) and rest[1]["role"] == "user" and FEEDBACK[W] in rest[1]["content"]
    assert rest[2] == assistant(f"{thought}\n\n{G}") and len(rest) == 3
    flags = dict(zip([m["content"] for m in late["messages"]], late["train"], strict=True))
    assert flags[A0] is True and flags[W] is False and flags[f"{thought}\n\n{G}"] is True
    assert sum(late["train"]) == 2 and late["origin"].endswith("branch 1, cut 1, verdicts B")

    # early: parts at step 0; no step judged bad, so it is cut at its end: C0 and W2 carry no loss,
    # then the thought with A0, A0's feedback, and G.
    early = rows["t1-early"]
    contents = [m["content"] for m in early["messages"] if m["role"] == "assistant"]
    thought = next(t for t in REVISION_THOUGHTS if t in contents[2])
    assert contents == [C0, W2, f"{thought}\n\n{A0}", G]
    assert [f for m, f in zip(early["messages"], early["train"], strict=True) if m["role"] == "assistant"] == [
        False,
        False,
        True,
        True,
    ]
    assert early["origin"].endswith("branch 0, cut 1, verdicts GU")
    # the verifier was shown each bad path's steps from the branch point on, nothing of the good path
    assert sorted(verifier.asked) == sorted([W, C0, W2])


def test_success_rows_leave_out_a_wrong_try_the_episode_went_on_from(store: TrajectoryStore) -> None:
    """Two tries, the first a submission that failed its visible tests: only the right one is
    a row, and it is sent the wrong try and its feedback first."""
    store.append(path("t2", "t2-two-tries", [W, G], tries=True))
    ex = build_examples(DataFields(run="t2", data=["success"]), store)
    assert [row["messages"][-1]["content"] for row in ex.rows] == [G]
    sent = ex.rows[0]["messages"]
    assert [m["content"] for m in sent if m["role"] == "assistant"] == [W, G]
    assert FEEDBACK[W] in sent[-2]["content"] and ex.rows[0]["train"] == [False] * (len(sent) - 1) + [True]
    assert ex.source.counts["rejected_answers"] == 1 and ex.source.counts["successes"] == 1


def test_revision_pairs_follow_alpha_and_beta(store: TrajectoryStore) -> None:
    for t in tree():
        store.append(t)
    verifier = KeyedVerifier({})
    # beta 0.8: the late path (reward 1/3, gap 2/3) is too close to the good one
    assert [r["trajectory_id"] for r in revision(store, verifier, revision_beta=0.8)] == ["t1-early"]
    with pytest.raises(NothingToTrainError, match=r"no revision examples.*--graph mcts"):
        revision(store, verifier, revision_alpha=1.5)  # no path is good enough


def test_revision_pairs_all_pairs_each_bad_path_with_every_good_path(store: TrajectoryStore) -> None:
    for t in [*tree(), path("t1", "t1-good2", [C0, G], parent="t1-good")]:
        store.append(t)
    verifier = KeyedVerifier({})
    nearest = revision(store, verifier)
    # each bad path with the good path it shares most with: late with good (A0), early with good2 (C0)
    assert sorted((r["trajectory_id"], r["origin"].split(",")[1]) for r in nearest) == [
        ("t1-early", " branch 1"),
        ("t1-late", " branch 1"),
    ]
    every = revision(store, verifier, revision_pairs="all")
    partners = sorted((r["trajectory_id"], r["origin"].split(",")[0].removeprefix("revision: good ")) for r in every)
    assert partners == [
        ("t1-early", "t1-good"),
        ("t1-early", "t1-good2"),
        ("t1-late", "t1-good"),
        ("t1-late", "t1-good2"),
    ]
    with pytest.raises(ConfigError, match="revision_pairs must be one of nearest, all"):
        revision(store, verifier, revision_pairs="some")


def test_revision_rows_do_not_depend_on_storage_order(tmp_path: Path) -> None:
    got = []
    for name, order in (("fwd", tree()), ("rev", tree()[::-1])):
        with open_store(str(tmp_path / f"{name}.db")) as s:
            for t in order:
                s.append(t)
            got.append(revision(s, KeyedVerifier({W: "Bad"})))
    assert got[0] == got[1]


def test_verifier_parser() -> None:
    v = Verifier()
    assert v.parse("Verdict: bad, it returns the first").output.label == "bad"  # type: ignore[union-attr]
    assert v.parse("Good.").output.label == "good"  # type: ignore[union-attr]
    assert v.parse("That was a mistake").output.label == "bad"  # type: ignore[union-attr]
    assert v.parse("I cannot tell").error == "no verdict: expected Good, Bad or Uncertain"


@pytest.mark.slow
def test_revision_with_the_embedded_model_as_verifier(
    store: TrajectoryStore, embedded_model: TransformersChatModel
) -> None:
    for t in tree():
        store.append(t)
    ex = build_examples(DataFields(run="t1", data=["revision"]), store, verifier=embedded_model)
    assert len(ex.rows) == 2
    for row in ex.rows:
        verdicts = row["origin"].rsplit("verdicts ", 1)[1]
        assert verdicts and set(verdicts) <= set("GBUE")
        assert row["train"][-1] is True and not all(row["train"])  # bad turns carry no loss


# --- tokenization: masks exact token by token ---------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from agents.llm.hf_local import resolve_weights

    return AutoTokenizer.from_pretrained(resolve_weights("embedded"))


def spans(ids: list[int], mask: list[int]) -> list[list[int]]:
    """The runs of consecutive ids whose mask is 1."""
    out: list[list[int]] = []
    for i, (t, m) in enumerate(zip(ids, mask, strict=True)):
        if m:
            if i == 0 or not mask[i - 1]:
                out.append([])
            out[-1].append(t)
    return out


def test_masks_are_exact_token_by_token(store: TrajectoryStore, tokenizer: Any) -> None:
    for t in tree():
        store.append(t)
    rows = revision(store, KeyedVerifier({W: "Bad"}))
    assert sorted(r["trajectory_id"] for r in rows) == ["t1-early", "t1-late"]  # a cut by the verifier, one at the end
    for row in rows:
        out = tokenize_turns(tokenizer, row["messages"], row["train"])
        ids, mask = out["input_ids"], out["completion_mask"]
        assert len(ids) == len(mask)
        # the ids are exactly the chat template's text of the whole conversation
        assert tokenizer.decode(ids) == tokenizer.apply_chat_template(row["messages"], tokenize=False)
        # each trained span is one trained assistant turn and its end-of-turn marker, in order
        trained = [m["content"] for m, f in zip(row["messages"], row["train"], strict=True) if f]
        assert [tokenizer.decode(s) for s in spans(ids, mask)] == [f"{c}<|im_end|>\n" for c in trained]
        # and every other token — system, user turns, headers, the bad turns — carries no loss
        untrained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
        for m, f in zip(row["messages"], row["train"], strict=True):
            assert (m["content"] in untrained) is (not f)


def test_a_long_revision_row_is_cut_in_its_bad_part_never_in_its_trained_turns(tokenizer: Any) -> None:
    def say(role: str, text: str) -> dict[str, str]:
        return {"role": role, "content": text}

    bad1, seen1, bad2, seen2 = "first try " * 100, "error one " * 50, "second try " * 150, "error two " * 80
    messages = [
        say("system", "Solve it."),
        say("user", "Write last(xs)."),
        say("assistant", bad1),
        say("user", seen1),
        say("assistant", bad2),
        say("user", seen2),
        say("assistant", "Wait: revise. " + G),
        say("user", "3 of 3 tests passed."),
        say("assistant", "Done."),
    ]
    train = [False] * 6 + [True, False, True]
    row = {"messages": messages, "train": train, "bad": [2, 6], "origin": "revision"}

    def length(msgs: list[dict[str, str]], flags: list[bool]) -> int:
        return len(tokenize_turns(tokenizer, msgs, flags)["input_ids"])

    full = length(messages, train)
    without_first = length([*messages[:2], *messages[4:]], [*train[:2], *train[4:]])
    # a little too long: the earliest bad turn goes, the last one (the one revised) stays whole
    got = fit_row(tokenizer, messages, train, [2, 6], full - 5)
    assert got is not None and got == ([*messages[:2], *messages[4:]], [*train[:2], *train[4:]])
    # shorter still: the middle of what is left of the bad part goes
    got = fit_row(tokenizer, messages, train, [2, 6], without_first - 100)
    assert got is not None
    msgs, flags = got
    assert length(msgs, flags) <= without_first - 100 and length(msgs, flags) > without_first - 120
    assert msgs[:2] == messages[:2] and msgs[4:] == messages[6:] and flags == [*train[:2], False, False, *train[6:]]
    assert "characters left out" in msgs[2]["content"] and msgs[2]["content"].startswith("second try")
    assert msgs[3]["content"].endswith("error two ")  # the end of the environment's answer is kept
    # the trained turns alone do not fit: no cut helps, the row is left as it is
    assert fit_row(tokenizer, messages, train, [2, 6], 40) is None

    # through the SFT data path: cut, counted, and the trained tokens are the same
    source = DataSource(kind="revision")
    data, fitting = tokenized(Examples(rows=[row], source=source), tokenizer, full - 5)
    assert fitting == {"rows_cut_in_bad_part": 1.0, "rows_truncated": 0.0} and len(data[0]["input_ids"]) < full - 5
    before = tokenize_turns(tokenizer, messages, train)
    trained = [t for t, m in zip(before["input_ids"], before["completion_mask"], strict=True) if m]
    after = [t for t, m in zip(data[0]["input_ids"], data[0]["completion_mask"], strict=True) if m]
    assert after == trained
    _, fitting = tokenized(Examples(rows=[row], source=source), tokenizer, 40)
    assert fitting == {"rows_cut_in_bad_part": 0.0, "rows_truncated": 1.0}


def test_a_template_that_is_not_prefix_stable_is_refused(tokenizer: Any) -> None:
    class Shuffling:
        def apply_chat_template(self, messages: list[dict[str, str]], **_: Any) -> str:
            return "".join(m["content"] for m in reversed(messages))

        def __call__(self, text: str, **_: Any) -> dict[str, list[int]]:
            return {"input_ids": [ord(c) for c in text]}

    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(ConfigError, match="extension of its prefixes"):
        tokenize_turns(Shuffling(), [*messages, {"role": "user", "content": "c"}], [False, True, False])


@pytest.mark.slow
def test_revision_masks_reach_the_trainer(store: TrajectoryStore) -> None:
    for t in tree():
        store.append(t)
    cfg = SFTTrainConfig(run="t1", data=["revision", "success"], checkpoint_name="rev", **TINY)  # type: ignore[arg-type]
    job = prepare_sft(cfg, store, verifier=KeyedVerifier({W: "Bad"}))
    rows = job.examples.rows
    assert job.examples.source.kind == "revision+success" and len(rows) == 4  # 2 revisions, G and A0 of good
    tok = job.trainer.processing_class
    expected = {tuple(tokenize_turns(tok, r["messages"], r["train"])["input_ids"]): r for r in rows}
    seen = 0
    for batch in job.trainer.get_train_dataloader():
        for ids, labels, attn in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
            n = int(attn.sum())
            ids_l, labels_l = ids.tolist()[:n], labels.tolist()
            row = expected[tuple(ids_l)]
            mask = tokenize_turns(tok, row["messages"], row["train"])["completion_mask"]
            assert labels_l[:n] == [t if m else -100 for t, m in zip(ids_l, mask, strict=True)]
            assert labels_l[n:] == [-100] * (len(labels_l) - n)
            seen += 1
    assert seen == len(rows)  # (that a training step lowers the loss on such rows: tests/training/test_sft.py)


# --- DPO ----------------------------------------------------------------------------------------------


def samples(run: str) -> list[Trajectory]:
    """Four one-step samples of one prompt (G twice, W, W2) and one failure of another task."""
    other = path(run, f"{run}-z", [W]).model_copy(update={"task": TASK.model_copy(update={"id": "bundled/z"})})
    return [
        path(run, f"{run}-g1", [G]),
        path(run, f"{run}-g2", [G]),
        path(run, f"{run}-w", [W]),
        path(run, f"{run}-w2", [W2]),
        other,
    ]


def test_dpo_pairs_same_prompt_success_over_failure(store: TrajectoryStore) -> None:
    for t in samples("d1"):
        store.append(t)
    ex = build_examples(DataFields(run="d1"), store, "dpo")
    pairs = [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in ex.rows]
    assert sorted(pairs) == sorted([(G, W), (G, W2)])
    assert {r["chosen_id"] for r in ex.rows} == {"d1-g1"}  # the smaller id of the duplicates
    assert all(r["prompt"] == [m.model_dump() for m in samples("d1")[0].steps[0].messages] for r in ex.rows)
    assert ex.source.counts["prompts"] == 1
    capped = build_examples(DataFields(run="d1", max_pairs_per_prompt=1), store, "dpo")
    assert len(capped.rows) == 1 and capped.source.counts["pairs_dropped"] == 1


@pytest.mark.slow
def test_dpo_trains_and_registers(store: TrajectoryStore) -> None:
    for t in samples("d1"):
        store.append(t)
    job = prepare_dpo(DPOTrainConfig(run="d1", checkpoint_name="dpo-1", **TINY), store)  # type: ignore[arg-type]
    before = {n: p.detach().clone() for n, p in job.trainer.model.named_parameters() if p.requires_grad}
    ckpt = run_job(job)
    after = dict(job.trainer.model.named_parameters())
    assert before and all(not torch.equal(p, after[n]) for n, p in before.items())
    m = ckpt.metrics
    assert ckpt.method == "dpo" and ckpt.kind == "lora" and m.steps == 2 and m.examples == 2
    assert m.loss_before is not None and m.loss_after is not None and m.loss_after < m.loss_before
    assert "rewards_accuracies_after" in m.extra


# --- role data -----------------------------------------------------------------------------------------


def test_role_rows_reviewer_refiner_world_model(store: TrajectoryStore) -> None:
    for t in tree():
        store.append(t)
    reviews = build_examples(DataFields(run="t1"), store, "reviewer").rows
    answers = {r["messages"][-2]["content"].split("Attempt:\n", 1)[1].split("\n\n", 1)[0]: r for r in reviews}
    assert set(answers) == {G, W, W2}  # each finished attempt
    assert (
        answers[G]["messages"][-1]["content"]
        == "Score: 10\nCritique: It is right: it passes every check. Nothing to fix."
    )
    assert answers[W]["messages"][-1]["content"] == f"Score: 3\nCritique: It is wrong: {FEEDBACK[W]}"

    fixes = build_examples(DataFields(run="t1"), store, "refiner").rows
    assert len(fixes) == 2  # W and W2, each fixed by G
    assert all(r["messages"][-1]["content"].endswith(f"Answer:\n{G}") for r in fixes)
    assert all(r["origin"] == "refiner: fixed by t1-good" for r in fixes)

    world = build_examples(DataFields(run="t1"), store, "world_model").rows
    # the second action of each path, after the first one's observation
    assert sorted(r["messages"][-1]["content"] for r in world) == sorted([FEEDBACK[G], FEEDBACK[W], FEEDBACK[W2]])
    row = next(r for r in world if r["messages"][-1]["content"] == FEEDBACK[W2])
    assert f"Now:\n{FEEDBACK[C0]}" in row["messages"][-2]["content"] and W2.strip() in row["messages"][-2]["content"]


def test_save_dataset_writes_rows_and_a_card(store: TrajectoryStore, tmp_path: Path) -> None:
    import datasets

    for t in samples("d1"):
        store.append(t)
    ex = build_examples(DataFields(run="d1"), store, "dpo")
    where = save_dataset(ex, tmp_path / "pairs")
    assert datasets.load_from_disk(str(where)).to_list() == ex.rows
    card = (where / "README.md").read_text()
    assert "# Autodidact dataset: dpo" in card and "source runs: d1" in card and "prompts 1" in card
    with pytest.raises(ConfigError, match="not empty"):
        save_dataset(ex, where)


def test_cli_data_build_writes_the_dataset_and_says_what_is_missing(tmp_path: Path) -> None:
    import datasets
    from typer.testing import CliRunner

    from autodidact.cli import app

    db = str(tmp_path / "cli.db")
    with open_store(db) as s:
        for t in tree():
            s.append(t)
    runner = CliRunner()
    out = tmp_path / "reviews"
    done = runner.invoke(app, ["data", "build", "reviewer", "--run", "t1", "--out", str(out), "--store", db])
    assert done.exit_code == 0, done.output
    assert "3 reviewer rows saved" in done.output and len(datasets.load_from_disk(str(out))) == 3
    assert "# Autodidact dataset: reviewer" in (out / "README.md").read_text()
    pairs = runner.invoke(app, ["data", "build", "dpo", "--run", "t1", "--out", str(tmp_path / "p"), "--store", db])
    assert "2 dpo rows saved" in pairs.output  # the tree's siblings: A0 over C0, G over W
    high = ["--set", "min_reward=2"]  # nothing succeeds
    empty = runner.invoke(app, ["data", "build", "dpo", "--out", str(tmp_path / "x"), "--store", db, *high])
    # (autodidact.cli.main turns these errors into one line and exit code 2)
    assert isinstance(empty.exception, NothingToTrainError) and "no dpo examples" in str(empty.exception)
    assert not (tmp_path / "x").exists()
    bad = runner.invoke(app, ["data", "build", "rewards", "--out", str(tmp_path / "y"), "--store", db])
    assert isinstance(bad.exception, ConfigError) and "unknown data kind" in str(bad.exception)


def web_path(run: str, id: str, answers: Sequence[tuple[str, str, float, bool]]) -> Trajectory:
    """A web episode: each answer with the page it led to, its reward and whether it ended the episode."""
    page = Observation(text='Goal: click OK.\n[e3] button "Cancel"\n[e4] button "OK"')
    messages = solver.initial_messages(page, "web")
    steps, said = [], []
    for i, (text, shown, reward, done) in enumerate(answers):
        obs = Observation(text=shown)
        steps.append(
            Step(
                index=i,
                role="solver",
                messages=tuple(messages),
                completion=text,
                action=solver.parse_action(text, "web").action,
                observation=obs,
                reward=reward,
                terminated=done,
            )
        )
        said.append(text)
        messages = solver.next_messages(messages, said, obs, "web")
    return Trajectory(
        id=id,
        run_id=run,
        task=TASK.model_copy(update={"id": "web/ok", "suite": "miniwob"}),
        env_id="web",
        policy=PolicyRef(model="embedded"),
        steps=tuple(steps),
        reward=steps[-1].reward,
        success=steps[-1].reward >= 1.0,
    )


def test_web_revision_rows_are_one_prompt_per_trained_turn(store: TrajectoryStore) -> None:
    store.append(web_path("w1", "w1-good", [("click(e4)", "Done.", 1.0, True)]))
    store.append(web_path("w1", "w1-bad", [("click(e3)", '[e5] link "Back"', 0.0, False), ("stop()", "", 0.0, True)]))
    [row] = build_examples(
        DataFields(run="w1", data=["revision"]), store, verifier=KeyedVerifier({"click(e3)": "Bad"})
    ).rows
    *prompt, answer = row["messages"]
    # the page the bad click led to, with the bad click in the history; then the thought and the good click
    assert prompt[-1]["role"] == "user" and 'link "Back"' in prompt[-1]["content"]
    assert "Your previous actions:\n1. click(e3)" in prompt[-1]["content"]
    assert answer["role"] == "assistant" and answer["content"].endswith("\n\nclick(e4)")
    parsed = solver.parse_action(answer["content"], "web")  # the thought does not hide the action
    assert parsed.error is None and parsed.action.kind == "click" and parsed.action.args == {"ref": "e4"}
    assert row["train"] == [False] * len(prompt) + [True]
    assert row["origin"].endswith("branch 0, cut 0, verdicts B")
