"""Text from models, task files and web pages is printed as it is by every CLI command.

Each test stores (or feeds the command) text full of rich markup (``[bold]x[/]``, a lone
``[/]``, ``[link=...]``), Python subscripts (``xs[i] + d[key]``), emoji codes and terminal
control sequences, and checks that the output holds it literally: no tag eaten, no crash on
an unbalanced tag, and every control character (ESC, BEL, CR) shown as its Python escape,
never written raw to the terminal nor dropped.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from autodidact.types import Message, Observation, PolicyRef, Step, Task, Trajectory
from memory.base import MemoryEntry, RunInfo, open_store
from tests.test_end_to_end import cli

MARKUP = "[bold]x[/] [/] [link=http://e]l[/link] :smile:"
CODE = "return xs[i] + d[key]"
ANSI = "\x1b[31mred\x1b[0m \x1b]0;title\x07 a\rb"
ANSI_SHOWN = r"\x1b[31mred\x1b[0m \x1b]0;title\x07 a\rb"  # how ANSI must appear
NASTY = f"{MARKUP} {CODE} {ANSI}"
NASTY_SHOWN = f"{MARKUP} {CODE} {ANSI_SHOWN}"


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """No forced colours: then any ESC in the output came from the stored text."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


def assert_literal(out: str, *shown: str) -> None:
    for text in shown:
        assert text in out, f"{text!r} not in output:\n{out}"
    for raw in ("\x1b", "\x07", "\r"):
        assert raw not in out, f"raw {raw!r} in output:\n{out!r}"


def stored_trajectory(run_id: str = "r[b]1[/b]") -> Trajectory:
    task = Task(id="t/[bold]x[/] [/] xs[i]", suite="s[/]", prompt=NASTY)
    step = Step(
        index=0,
        role="solver",
        messages=(Message(role="user", content=f"prompt {NASTY}"),),
        completion=f"completion {NASTY}",
        observation=Observation(text=f"observation {NASTY}"),
        error=f"step error {NASTY}",
    )
    traj = Trajectory(
        run_id=run_id,
        task=task,
        env_id="code",
        policy=PolicyRef(model="m[bold]y[/]"),
        steps=(step,),
        error=f"E {ANSI} [/]",
    )
    with open_store() as store:
        store.put_run(RunInfo(id=run_id, config={"suite": "s[red]u[/]", "model": f"m[/] {ANSI}"}))
        store.append(traj)
    return traj


def test_trajectories_show_prints_every_field_literally(_isolated_home: Path) -> None:
    t = stored_trajectory()
    out = cli(_isolated_home, "trajectories", "show", t.id).stdout
    assert_literal(
        out,
        f"user: prompt {NASTY_SHOWN}",
        f"completion: completion {NASTY_SHOWN}",
        f"observation (reward 0): observation {NASTY_SHOWN}",
        f"error: step error {NASTY_SHOWN}",
        t.task.id,
        "model m[bold]y[/]",
        f"error: E {ANSI_SHOWN} [/]",
        "run r[b]1[/b]",
    )


def test_trajectories_list_prints_runs_and_episodes_literally(_isolated_home: Path) -> None:
    t = stored_trajectory()
    runs = cli(_isolated_home, "trajectories", "list").stdout
    assert_literal(runs, "r[b]1[/b]", "s[red]u[/]", f"m[/] {ANSI_SHOWN}")
    episodes = cli(_isolated_home, "trajectories", "list", "--run", t.run_id).stdout
    assert_literal(episodes, t.task.id, f"E {ANSI_SHOWN} [/]")


def test_eval_prints_task_ids_and_program_output_literally(_isolated_home: Path, tmp_path: Path) -> None:
    """A reference that fails: its task id and what the program printed are shown as they are."""
    suite = tmp_path / "s[red]x[b].jsonl"
    row = {
        "id": "[bold]t[/] [/] xs[i]",
        "prompt": "Write `f(x)`.",
        "entry_point": "f",
        "solution": f"def f(x):\n    print({NASTY!r})\n    return 0\n",
        "test": "def check(candidate):\n    assert candidate(1) == 1\n",
    }
    suite.write_text(json.dumps(row) + "\n")
    out = cli(_isolated_home, "eval", "--suite", str(suite)).stdout
    assert_literal(out, f"{suite} (all)", "s[red]x[b]/[bold]t[/] [/] xs[i]: ", NASTY_SHOWN)


def test_skills_list_prints_descriptions_literally(_isolated_home: Path) -> None:
    from skills.library import KIND, Skill

    task = Task(id="t", suite="s", prompt="p")
    skill = Skill(name="last", env="code", description=f"d {NASTY}", source=f"# {NASTY}", task=task)
    with open_store() as store:
        entry = MemoryEntry(id=skill.id, kind=KIND, key=skill.name, embedder="e", data=skill.model_dump(mode="json"))
        store.put_memory(entry, b"")
    out = cli(_isolated_home, "skills", "list").stdout
    assert_literal(out, f"d {MARKUP} {CODE}", r"\x1b[31mred")
    shown = json.loads(cli(_isolated_home, "skills", "show", "last").stdout)  # JSON escapes control characters
    assert shown["source"] == f"# {NASTY}"


def test_errors_show_control_characters(_isolated_home: Path) -> None:
    """The one-line error names what it was given, control characters visible."""
    proc = cli(_isolated_home, "sandbox", "exec", f"/no/[bold]x[/b] {ANSI}.py", ok=False)
    assert proc.returncode == 2
    assert_literal(proc.stderr, f"error: no such file: /no/[bold]x[/b] {ANSI_SHOWN}.py")


class _Identity:
    """Answers every task with ``def f(x): return x``, the suite's solution (served over HTTP to the CLI)."""

    name = "scripted"

    async def generate(self, conversations: Any, sampling: Any) -> list[Any]:
        from autodidact.types import Completion

        return [Completion(text="```python\ndef f(x):\n    return x\n```") for _ in conversations]

    async def aclose(self) -> None:
        pass


def test_run_prints_task_ids_and_run_ids_literally(_isolated_home: Path, tmp_path: Path) -> None:
    """``autodidact run`` (against a scripted model server): the results table and the summary line."""
    from agents.llm.server import running_server

    suite = tmp_path / "suite.jsonl"
    row = {
        "id": f"[bold]t[/] [/] xs[i] {ANSI}",
        "prompt": f"Write `f(x)` that returns x. {NASTY}",
        "entry_point": "f",
        "test": "def check(candidate):\n    assert candidate(1) == 1\n",
        "split": "train",
    }
    suite.write_text(json.dumps(row) + "\n")
    run_id = "r[bold]x[/]"
    with running_server(_Identity(), "scripted") as url:
        out = cli(_isolated_home, "run", "--suite", str(suite), "--run-id", run_id, "--model", f"{url}#scripted").stdout
    assert_literal(out, f"suite/[bold]t[/] [/] xs[i] {ANSI_SHOWN}", f"run {run_id}: success 1/1")


def test_the_run_progress_bar_prints_its_description_literally() -> None:
    from rich.console import Console

    from agents.rollout import progress_bar

    bar = progress_bar()
    bar.add_task(f"react · s[/].jsonl · m[bold]x[/] {CODE}", total=2, rate="1/1 (100%)")
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(bar.make_tasks_table(bar.tasks))
    assert f"react · s[/].jsonl · m[bold]x[/] {CODE}" in console.export_text()


def test_the_run_progress_prints_a_line_per_episode_where_the_output_is_no_terminal() -> None:
    from rich.console import Console

    from agents.rollout import progress_bar

    shown = {}
    for terminal in (False, True):
        out = io.StringIO()
        with (bar := progress_bar(console=Console(file=out, width=200, force_terminal=terminal))):
            task = bar.add_task(f"react · m[bold]x[/] {CODE}", total=2, rate="-")
            bar.update(task, advance=1, rate="1/1 (100%)")
            bar.update(task, rate="1/1 (100%)")  # no episode ended: no line
            bar.update(task, advance=1, rate="1/2 (50%)")
        shown[terminal] = out.getvalue()
    lines = shown[False].splitlines()
    assert lines[:2] == [
        f"react · m[bold]x[/] {CODE}: 1/2 · success 1/1 (100%) · 0:00:00",
        f"react · m[bold]x[/] {CODE}: 2/2 · success 1/2 (50%) · 0:00:00",
    ]
    assert ": 1/2 · success" not in shown[True]  # a terminal has the live bar instead
