"""Session-wide fixtures: the embedded model is loaded once per test session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

# Nothing is downloaded in tests: an unknown HF id must fail at once, not after network retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own $AUTODIDACT_HOME (store, checkpoints, runs)."""
    home = tmp_path / "home"
    monkeypatch.setenv("AUTODIDACT_HOME", str(home))
    yield home


@pytest_asyncio.fixture(scope="session", loop_scope="session", autouse=True)
async def _stop_sandbox_workers() -> AsyncIterator[None]:
    """Warm sandbox workers started by any test stop with the session's event loop."""
    yield
    from environments.sandbox.process import ProcessSandbox

    await ProcessSandbox.close_all()


@pytest_asyncio.fixture(scope="session", loop_scope="session", autouse=True)
async def _stop_browsers() -> AsyncIterator[None]:
    """The shared Chromium started by any web test stops with the session's event loop."""
    yield
    import sys

    if "environments.web.browser" in sys.modules:
        from environments.web.browser import close_browsers

        await close_browsers()


@pytest.fixture(scope="session")
def embedded_model():  # type: ignore[no-untyped-def]
    """The real embedded SmolLM2-135M-Instruct on CPU, loaded once (TransformersChatModel)."""
    from agents.llm.base import TransformersConfig

    return TransformersConfig().build()
