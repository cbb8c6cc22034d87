"""Bad input on the command line: a one-line error naming the problem, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from memory.base import open_store
from tests.test_end_to_end import cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--suite", "nope"], "unknown suite 'nope'"),
        (["run", "--env", "nope"], "unknown environment 'nope'"),
        (["run", "--model", "/no/such/model"], "is not 'embedded', a URL"),
        (["run", "--set", "limit=abc"], "limit: Input should be a valid integer"),
        (["run", "--config", "/no/such.yaml"], "does not exist"),
        (["train", "--run", "x", "--method", "nope"], "unknown trainer 'nope'"),
        (["trajectories", "show", "deadbeef00"], "no trajectory 'deadbeef00'"),
        (["checkpoints", "show", "nope"], "no checkpoint 'nope'"),
        (["run", "--model", "http://127.0.0.1:9/v1"], "cannot reach model server http://127.0.0.1:9/v1/models"),
        (["eval", "--policy", "nope"], "unknown policy 'code:nope'"),
        (["eval", "--split", "dev"], "--split must be one of train, val, test, hard or all"),
        (["sandbox", "exec", "/no/such.py"], "no such file: /no/such.py"),
        (["sandbox", "exec", "-", "--backend", "nope"], "unknown sandbox 'nope'"),
        (["skills", "show", "nope"], "no skill 'nope'"),
        (["skills", "import", "/no/such.jsonl"], "no file /no/such.jsonl"),
        (["skills", "retire", "nope"], "no skill 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(_isolated_home: Path, args: list[str], message: str) -> None:
    proc = cli(_isolated_home, *args, ok=False)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line
    with open_store() as store:
        assert store.count() == 0 and store.runs() == []  # nothing half-written
