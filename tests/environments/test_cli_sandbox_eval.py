"""`autodidact sandbox exec` and `autodidact eval` from the command line, on the real sandbox."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.test_end_to_end import cli

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def test_sandbox_exec_prints_the_result_as_json(_isolated_home: Path, tmp_path: Path) -> None:
    program = tmp_path / "p.py"
    program.write_text("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)\n")
    result = json.loads(cli(_isolated_home, "sandbox", "exec", str(program), "--json").stdout)
    assert result["stdout"] == "out\n" and result["stderr"] == "err\n" and result["exit_code"] == 3
    assert result["timed_out"] is False and result["memory_exceeded"] is False and result["duration_s"] > 0
    program.write_text("while True: pass\n")
    result = json.loads(cli(_isolated_home, "sandbox", "exec", str(program), "--timeout", "1", "--json").stdout)
    assert result["timed_out"] is True
    program.write_text("x = bytearray(2 * 1024**3)\n")
    result = json.loads(cli(_isolated_home, "sandbox", "exec", str(program), "--memory", "256", "--json").stdout)
    assert result["memory_exceeded"] is True


def test_sandbox_exec_without_json_passes_output_and_exit_code_through(_isolated_home: Path, tmp_path: Path) -> None:
    program = tmp_path / "p.py"
    program.write_text("print('hello')\nraise SystemExit(4)\n")
    proc = cli(_isolated_home, "sandbox", "exec", str(program), ok=False)
    assert proc.returncode == 4 and proc.stdout == "hello\n"


def test_eval_reference_and_mutant_policies(_isolated_home: Path, tmp_path: Path) -> None:
    out = cli(_isolated_home, "eval", "--suite", "bundled", "--policy", "reference", "--limit", "12").stdout
    assert "12/12 succeeded" in out
    report = tmp_path / "mutants.json"
    out = cli(
        _isolated_home, "eval", "--suite", "bundled", "--policy", "mutant", "--limit", "12", "--json", str(report)
    )
    assert "were rejected" in out.stdout
    outcomes = json.loads(report.read_text())
    assert len(outcomes) == 12 and all("mutation" in o["detail"] for o in outcomes)
