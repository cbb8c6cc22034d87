"""Training as several processes (``torchrun``; ``accelerate launch`` on GPUs): two CPU
processes over gloo train one checkpoint together, with the real embedded model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memory.base import open_store
from tests.training.test_sft import episode

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_processes_train_one_checkpoint(tmp_path: Path, _isolated_home: Path) -> None:
    db = str(tmp_path / "t.db")
    with open_store(db) as store:
        for task in ("alpha", "beta", "gamma", "delta"):
            store.append(episode("r1", task))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "autodidact.cli", "train"]
    # (torchrun takes --run for its own --run-path: the runs are given with --set)
    cmd += ["--set", "run=r1", "--set", "max_steps=1", "--store", db]
    done = subprocess.run(cmd, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    made = list((_isolated_home / "checkpoints").iterdir())
    assert len(made) == 1, made  # both processes trained into the name the first one chose
    record = json.loads((made[0] / "checkpoint.json").read_text())
    m = record["metrics"]
    assert m["extra"]["processes"] == 2 and m["steps"] == 1 and m["examples"] == 4
    assert m["loss_after"] < m["loss_before"]
    assert (made[0] / "model" / "adapter_model.safetensors").is_file()
    assert done.stdout.count("use it with: autodidact run --model") == 1  # the first process reports


@pytest.mark.parametrize(("name", "kind"), [("ddp", "MULTI_GPU"), ("fsdp", "FSDP")])
def test_the_accelerate_configs_are_valid(name: str, kind: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "examples" / "accelerate" / f"{name}.yaml"))  # unknown keys raise
    assert config.distributed_type.name == kind and config.mixed_precision == "bf16"
    if kind == "FSDP":
        assert (
            config.fsdp_config["fsdp_version"] == 2 and config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        )
