"""The registry loads lazily, names what it knows, and takes plugins from entry points."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autodidact import registry
from autodidact.errors import ConfigError, NotRegisteredError


def test_importing_the_kernel_and_cli_imports_nothing_heavy() -> None:
    code = textwrap.dedent(
        """
        import sys
        import autodidact, autodidact.types, autodidact.registry, autodidact.config, autodidact.cli
        from autodidact import registry
        registry.spec("environment", "code"); registry.ids("model")
        heavy = [m for m in ("torch", "transformers", "playwright", "vllm", "trl", "datasets", "docker", "langgraph") if m in sys.modules]
        print(heavy)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_make_uses_defaults_and_overrides() -> None:
    registry.register("suite", "test-only", "collections:OrderedDict", a=1, b=2)
    made = registry.make("suite", "test-only", b=3)
    assert dict(made) == {"a": 1, "b": 3}


def test_unknown_id_and_bad_entry_points_are_clear() -> None:
    with pytest.raises(NotRegisteredError, match=r"unknown environment 'nope'; known: .*code"):
        registry.make("environment", "nope")
    with pytest.raises(ConfigError, match="unknown registry kind"):
        registry.register("gadget", "x", "a:b")
    registry.register("graph", "broken", "no_such_module_xyz:thing")
    with pytest.raises(ConfigError, match="no_such_module_xyz"):
        registry.load("graph", "broken")


def test_plugins_register_through_the_entry_point_group(tmp_path: Path) -> None:
    # A real installed distribution (a .dist-info on sys.path) declaring an autodidact.plugins entry point.
    (tmp_path / "myplugin.py").write_text(
        "from autodidact.registry import register\n"
        "def setup():\n    register('environment', 'plugin-env', 'myplugin:Env')\n"
        "class Env:\n    id = 'plugin-env'\n"
    )
    dist = tmp_path / "myplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[autodidact.plugins]\nmyplugin = myplugin:setup\n")
    code = "from autodidact import registry; print(registry.make('environment', 'plugin-env').id)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(tmp_path)}
    )
    assert out.stdout.strip() == "plugin-env"
