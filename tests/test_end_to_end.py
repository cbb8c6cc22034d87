"""The whole loop through the CLI with the real embedded model: run → store → train → run again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memory.base import TrajectoryQuery, open_store
from skills.library import SkillLibrary

pytestmark = pytest.mark.slow


def cli(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTODIDACT_HOME": str(home), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "autodidact.cli", *args], capture_output=True, text=True, env=env, timeout=900
    )
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_run_store_train_and_run_the_checkpoint(_isolated_home: Path) -> None:
    home = _isolated_home
    on = ("--set", "reflections.enabled=true")
    skills = ("--set", "skills.enabled=true")
    out = cli(home, "run", "--suite", "bundled", "--split", "train", "--limit", "6", "--run-id", "e2e", *on, *skills)
    out = out.stdout
    assert "skills: called in" in out and "learned" in out
    assert "run e2e: success" in out
    cli(
        home,
        "run",
        "--suite",
        "humaneval",
        "--limit",
        "1",
        "--run-id",
        "e2e-he",
        "--set",
        "sampling.max_tokens=128",
        *on,
    )
    with open_store() as store:
        bundled = store.query(TrajectoryQuery(run_id="e2e"))
        [he] = store.query(TrajectoryQuery(run_id="e2e-he"))
    assert len(bundled) == 6 and he.task.id == "humaneval/0"
    with open_store() as store:
        lessons = store.memory("reflection")
    failed = [t for t in [*bundled, he] if not t.success]
    assert len(lessons) == sum(t.steps[-1].output is not None for t in failed)
    assert {e.data["trajectory_id"] for e in lessons} <= {t.id for t in failed}
    successes = [t for t in bundled if t.success]
    assert successes, "the embedded model solves most bundled one-liners; none passed"
    for t in [*bundled, he]:
        step = t.steps[0]
        # a failed episode leaves a lesson: the reflector's call is its last step
        assert [s.role for s in t.steps] == (["solver"] if t.success else ["solver", "reflector"])
        assert t.error is None and step.role == "solver" and step.completion
        assert step.token_ids and step.logprobs and len(step.token_ids) == len(step.logprobs)
        assert step.observation is not None and (step.reward == 1.0 if t.success else 0.0 <= step.reward < 1.0)
        assert t.policy.model == "embedded" and t.policy.adapter is None and t.env_id == "code"

    # each solved task left a verified skill; the CLI lists, shows, exports and imports them
    with open_store() as store:
        learned = SkillLibrary(store).all()
    assert learned and {s.trajectory_id for s in learned} <= {t.id for t in successes}
    listed = cli(home, "skills", "list").stdout
    assert all(s.name in listed for s in learned)
    assert json.loads(cli(home, "skills", "show", learned[0].name).stdout)["source"] == learned[0].source
    cli(home, "skills", "export", "--out", str(home / "skills.jsonl"))
    other = str(home / "other.db")
    imported = cli(home, "skills", "import", str(home / "skills.jsonl"), "--store", other).stdout
    assert f"imported {len(learned)} of {len(learned)} skills" in imported
    with open_store(other) as store:
        assert [s.id for s in SkillLibrary(store).all()] == [s.id for s in learned]

    out = cli(home, "train", "--method", "sft", "--run", "e2e", "--name", "e2e-sft", "--set", "max_steps=2").stdout
    assert "checkpoint e2e-sft" in out
    assert "e2e-sft" in cli(home, "checkpoints", "list").stdout

    cli(
        home,
        "run",
        "--suite",
        "bundled",
        "--split",
        "train",
        "--limit",
        "2",
        "--model",
        "e2e-sft",
        "--run-id",
        "e2e-after",
    )
    with open_store() as store:
        after = store.query(TrajectoryQuery(run_id="e2e-after"))
    assert len(after) == 2 and all(t.policy.model == "e2e-sft" and t.error is None for t in after)
    ckpt_dir = home / "checkpoints" / "e2e-sft"
    assert all(t.policy.adapter and Path(t.policy.adapter).is_relative_to(ckpt_dir) for t in after)  # adapter loaded

    listing = cli(home, "trajectories", "list").stdout
    assert "e2e-after" in listing and "e2e-he" in listing
    shown = cli(home, "trajectories", "show", successes[0].id[:10]).stdout
    assert successes[0].task.id in shown and "visible tests passed." in shown
    exported = home / "e2e.jsonl"
    cli(home, "trajectories", "export", "--run", "e2e", "--out", str(exported))
    assert len(exported.read_text().splitlines()) == 6


def test_train_on_a_run_without_successes_says_so(_isolated_home: Path) -> None:
    home = _isolated_home
    cli(home, "run", "--suite", "bundled", "--limit", "2", "--run-id", "hopeless", "--set", "sampling.max_tokens=1")
    proc = cli(home, "train", "--method", "sft", "--run", "hopeless", ok=False)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and "hopeless" in line and "0 successful" in line
    assert not (home / "checkpoints").exists() or not any((home / "checkpoints").iterdir())


def test_autodidact_serve_then_run_against_it(_isolated_home: Path) -> None:
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "AUTODIDACT_HOME": str(_isolated_home)}
    server = subprocess.Popen(
        [sys.executable, "-m", "autodidact.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else "server exited"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "autodidact serve did not come up"
            time.sleep(0.5)
        out = cli(_isolated_home, "run", "--model", url + "/v1", "--limit", "2", "--run-id", "via-http").stdout
        assert "run via-http: success" in out
    finally:
        server.terminate()
        server.wait(timeout=30)
    with open_store() as store:
        stored = store.query(TrajectoryQuery(run_id="via-http"))
    assert len(stored) == 2
    for t in stored:
        assert t.error is None and t.policy.model == url + "/v1" and t.policy.backend.startswith("openai:")
        [step] = t.steps
        assert step.completion and step.token_ids and step.logprobs and len(step.token_ids) == len(step.logprobs)
