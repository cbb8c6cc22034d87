"""Roles: prompt files with fields, tolerant parsers that say what they could not read, and
calls recorded as trajectory steps — with a scripted model and with the embedded model."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from agents.roles.base import Role, fill, load_template
from agents.roles.refiner import Refiner
from agents.roles.reviewer import Reviewer, read_score
from agents.roles.world_model import WorldModel
from autodidact import registry
from autodidact.errors import ConfigError
from autodidact.types import SamplingParams
from tests.agents.scripted import ScriptedModel

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_prompt_files_become_messages_with_their_fields_filled(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text('=== system ===\nBe {tone}.\n=== user ===\nShow {{"score": 1}} then {x}\n=== assistant ===\nok')
    assert load_template(path) == (
        ("system", "Be {tone}."),
        ("user", 'Show {{"score": 1}} then {x}'),
        ("assistant", "ok"),
    )
    assert fill('Give {"score": 0.8} for {x}', {"x": "f"}, where="t") == 'Give {"score": 0.8} for f'
    with pytest.raises(ConfigError, match=r"uses \{task\}, which the call did not give"):
        Reviewer().messages(attempt="a", feedback="b")
    msgs = Reviewer().messages(task="Add.", attempt="def f(): pass", feedback="1 of 3 tests failed")
    assert [m.role for m in msgs] == ["system", "user", "assistant", "user"]  # with its example turn
    assert "1 of 3 tests failed" in msgs[-1].content and msgs[2].content.startswith("Score: 1")
    bad = tmp_path / "bad.txt"
    bad.write_text("stray\n=== user ===\nx")
    with pytest.raises(ConfigError, match="text before the first"):
        load_template(bad)


@pytest.mark.parametrize(
    ("text", "score"),
    [("7", 0.7), ("7/10", 0.7), ("0.25", 0.25), ("70%", 0.7), ("85", 0.85), ("3 out of 5", 0.3), ("12/10", 1.0)],
)
def test_scores_are_read_in_every_usual_form(text: str, score: float) -> None:
    assert read_score(text) == pytest.approx(score)


def test_reviewer_parser_is_tolerant_and_says_what_is_missing() -> None:
    r = Reviewer()
    ok = r.parse("**Score:** 2/10\n**Critique:** the loop stops one early;\nuse range(n + 1).")
    assert ok.error is None and ok.output and ok.output.score == 0.2
    assert ok.output.critique == "the loop stops one early;\nuse range(n + 1)."
    js = r.parse('Here: {"score": 9, "critique": "fine"}')
    assert js.output and js.output.score == 0.9 and js.output.critique == "fine"
    unlabelled = r.parse("Score: 5\nIt misses the empty list case.")
    assert unlabelled.output and unlabelled.output.critique == "It misses the empty list case."
    none = r.parse("Looks good to me!")
    assert none.output is None and none.error and "no score found" in none.error


def test_refiner_keeps_the_answer_even_without_a_reflection() -> None:
    r = Refiner()
    full = r.parse("Reflection: handle n == 0 first.\nAnswer:\n```python\ndef f(n):\n    return n\n```")
    assert full.error is None and full.output
    assert full.output.reflection == "handle n == 0 first." and full.output.answer.startswith("```python")
    bare = r.parse("click(e4)")
    assert bare.output and bare.output.answer == "click(e4)" and bare.error and "Reflection" in bare.error
    after = r.parse("Reflection: press the OK button.\nclick(e4)")
    assert after.output and after.output.answer == "click(e4)" and after.error is None
    assert (
        r.parse("Reflection: nothing\nAnswer:   ").error
        == "no answer found: expected an 'Answer:' section with the new attempt"
    )


def test_world_model_parser_strips_labels_and_refuses_empty() -> None:
    w = WorldModel()
    got = w.parse('Next page:\n```\n[e4] button "Done"\n```')
    assert got.output and got.output.observation == '[e4] button "Done"'
    assert w.parse("  \n").output is None


async def test_a_call_is_a_step_with_its_messages_completion_and_errors() -> None:
    model = ScriptedModel(["Score: 3\nCritique: wrong sign.", "I like it.", "ERROR"])
    good = await Reviewer().call(model, index=4, task="t", attempt="a", feedback="f")
    assert good.output and good.output.score == 0.3
    assert good.step.role == "reviewer" and good.step.index == 4 and good.step.error is None
    assert good.step.completion == "Score: 3\nCritique: wrong sign." and good.step.token_ids == (1, 2)
    assert good.step.messages[-1].content.startswith("Task:\nt")
    assert good.step.output == {"score": 0.3, "critique": "wrong sign."}
    unparsed = await Reviewer().call(model, task="t", attempt="a", feedback="f")
    assert unparsed.output is None and unparsed.step.error and unparsed.step.error.startswith("parse: no score")
    assert unparsed.step.output is None and unparsed.step.completion == "I like it."
    failed = await Reviewer().call(model, task="t", attempt="a", feedback="f")
    assert failed.output is None and failed.step.error and failed.step.error.startswith("model: server returned 500")


def test_roles_are_registered() -> None:
    for name, cls in [("reviewer", Reviewer), ("refiner", Refiner), ("world_model", WorldModel)]:
        role = registry.make("role", name)
        assert isinstance(role, cls) and isinstance(role, Role) and role.name == name


@pytest.mark.slow
async def test_every_role_runs_on_the_embedded_model(embedded_model) -> None:  # type: ignore[no-untyped-def]
    fields = {
        "task": "Write add(a, b) that returns a + b.",
        "attempt": "def add(a, b):\n    return a - b",
        "feedback": "assert add(1, 2) == 3 failed: got -1",
    }
    short = SamplingParams(max_tokens=48)  # enough to parse or fail to; keeps the suite fast on CPU
    calls = [
        await Reviewer(sampling=short).call(embedded_model, **fields),
        await Refiner(sampling=short).call(embedded_model, critique="It subtracts instead of adding.", **fields),
        await WorldModel(sampling=short).call(embedded_model, observation='[e3] button "OK"', action="click(e3)"),
    ]
    for call in calls:
        assert call.step.completion and call.step.token_ids and call.step.latency_s > 0
        # whatever the small model wrote is either read (and recorded as read) or why not is recorded — never lost
        if call.output is not None:
            assert call.step.output == call.output.model_dump(mode="json"), call.step
        else:
            assert call.step.output is None and (call.step.error or "").startswith("parse: "), call.step


@pytest.mark.slow
async def test_custom_role_example_runs(embedded_model, capsys) -> None:  # type: ignore[no-untyped-def]
    main = runpy.run_path(str(EXAMPLES / "custom_role.py"))["main"]
    plan = await main(embedded_model)
    out = capsys.readouterr().out
    assert "completion:" in out and ("plan: (" in out) == (plan is not None)
    if plan is not None:
        assert all(step.strip() for step in plan.steps)
