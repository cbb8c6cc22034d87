"""One parser: YAML, then dotted overrides, validated, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.rollout import RunConfig
from autodidact.config import parse
from autodidact.errors import ConfigError


def test_yaml_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text("suite: humaneval\nlimit: 5\nsampling:\n  temperature: 0.5\n  max_tokens: 64\n")
    cfg = parse(RunConfig, f, ["limit=7", "sampling.temperature=0.9", "sampling.stop=['x']"])
    assert (cfg.suite, cfg.limit, cfg.sampling.temperature, cfg.sampling.max_tokens, cfg.sampling.stop) == (
        "humaneval",
        7,
        0.9,
        64,
        ("x",),
    )


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("suite: [unclosed\n", [], "not valid YAML at line"),
        ("- a\n- b\n", [], "must hold a mapping"),
        ("sutie: bundled\n", [], "sutie: Extra inputs are not permitted"),
        ("limit: 0\n", [], "limit: Input should be greater than or equal to 1"),
        ("", ["limit"], "must look like key=value"),
        ("", ["sampling.temperature=hot"], "sampling.temperature"),
    ],
)
def test_malformed_configs_name_the_problem(tmp_path: Path, text: str, overrides: list[str], message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        parse(RunConfig, f, overrides)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        parse(RunConfig, "/no/such/file.yaml")


def test_dataclass_configs_take_numbers_written_as_yaml_strings(tmp_path: Path) -> None:
    import dataclasses

    @dataclasses.dataclass
    class TrainLike:
        learning_rate: float | None = None
        max_steps: int = -1
        name: str | None = None

    f = tmp_path / "t.yaml"
    f.write_text("learning_rate: 2e-4\nname: 1e5\n")  # YAML 1.1 reads both as strings
    cfg = parse(TrainLike, f, ["max_steps=3"])
    assert (cfg.learning_rate, cfg.max_steps, cfg.name) == (2e-4, 3, "1e5")
    with pytest.raises(ConfigError, match="max_steps: expected a number, got 'many'"):
        parse(TrainLike, None, ["max_steps=many"])
    with pytest.raises(ConfigError, match="unknown key"):
        parse(TrainLike, None, ["colour=red"])
