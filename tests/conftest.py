"""Session-wide fixtures: the embedded model is loaded once per test session, a PostgreSQL server started once."""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

# Nothing is downloaded in tests: an unknown HF id must fail at once, not after network retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs pytest-xdist workers (-n 2): each gets its share of the cores for torch (set
# before torch is imported), so two workers' matrix multiplies never oversubscribe the machine.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of the docker backend share one worker: the project's Podman service is host-wide,
    and the worker that started it removes every sandbox container when its session ends."""
    for item in items:
        if item.get_closest_marker("docker") is not None:
            item.add_marker(pytest.mark.xdist_group("podman"))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own $AUTODIDACT_HOME (store, checkpoints, runs)."""
    home = tmp_path / "home"
    monkeypatch.setenv("AUTODIDACT_HOME", str(home))
    yield home


@pytest_asyncio.fixture(scope="session", loop_scope="session", autouse=True)
async def _stop_sandbox_workers() -> AsyncIterator[None]:
    """Warm sandbox workers and the shared Chromium started by any test stop with the session's event loop."""
    yield
    from agents.rollout import close_shared_workers

    await close_shared_workers()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The superuser URL of a throwaway PostgreSQL server on 127.0.0.1, shared by the session."""
    from memory.testing import postgres_bin_dir, start_postgres

    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL binaries not found in /usr/lib/postgresql/*/bin (apt-get install -y postgresql)")
    with start_postgres() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The URL of a new, empty schema on the session's server, dropped after the test.

    A schema (made the connection's ``search_path`` by the URL) isolates a test as well as a
    database would, and costs under a millisecond where ``CREATE DATABASE`` costs ~0.4 s.
    """
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    yield f"{postgres_server}?options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="session")
def embedded_model():  # type: ignore[no-untyped-def]
    """The real embedded SmolLM2-135M-Instruct on CPU, loaded once (TransformersChatModel)."""
    from agents.llm.base import TransformersConfig

    return TransformersConfig().build()


# LoRA adapters for the hot-swap and per-role adapter tests, made without training (random, so they change outputs).
def save_random_lora(model: object, out: Path, seed: int) -> Path:
    """Save a random LoRA adapter (r=8 on every linear layer) for ``model``; leave ``model`` untouched."""
    import torch
    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng():  # the adapter's random init must not move the session's RNG
        torch.manual_seed(seed)
        # A copy of the loaded model (~0.5 s) instead of a second load from disk; get_peft_model changes it in place.
        peft_model = get_peft_model(
            copy.deepcopy(model),  # type: ignore[arg-type]
            LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False),
        )
        peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lora_adapters(embedded_model, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """Two different random LoRA adapters for the embedded model."""
    from peft import PeftModel

    assert not isinstance(embedded_model.model, PeftModel), "a test left an adapter on the shared embedded model"
    root = tmp_path_factory.mktemp("lora")
    return save_random_lora(embedded_model.model, root / "a1", 1), save_random_lora(
        embedded_model.model, root / "a2", 2
    )


@pytest.fixture(scope="session")
def foreign_lora_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter for a tiny Llama of another width: it does not fit the embedded model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=256,
        )
    )
    return save_random_lora(tiny, tmp_path_factory.mktemp("lora") / "foreign", 3)
