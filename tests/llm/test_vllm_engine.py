"""The vLLM engine backend (agents.llm.vllm_engine).

vLLM is not in the project's venv, so these tests check the missing-vLLM error, the mapping
to and from vLLM's objects, and that concurrent calls reach the engine together, against a
stand-in ``vllm`` module with the shapes of vLLM 0.32's async engine.
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agents.llm.base import VLLMConfig, resolve_model
from agents.llm.vllm_engine import VLLMChatModel
from autodidact.errors import ConfigError, ModelLoadError
from autodidact.types import Message, SamplingParams


def test_missing_vllm_is_a_clear_model_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(ModelLoadError, match=r"vLLM is not installed: pip install 'autodidact\[gpu\]'"):
        VLLMConfig(model="x").build()


@dataclass
class _Logprob:
    logprob: float


@dataclass
class _Out:
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, _Logprob]] | None
    finish_reason: str | None


@dataclass
class _RequestOutput:
    outputs: list[_Out]
    finished: bool
    prompt_token_ids: list[int] = field(default_factory=lambda: [1, 2, 3, 4])


class _Tokenizer:
    """Renders a chat as ``<role>content`` pieces; one id per character."""

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool) -> str:
        assert not tokenize and add_generation_prompt
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        assert not add_special_tokens  # the template already holds any special tokens
        return [ord(c) for c in text]


class _AsyncEngine:
    """vLLM's ``AsyncLLMEngine`` shapes: requests stream cumulative outputs; ``wait_for`` requests
    must be in flight at once before any finishes (so calls serialized by the client deadlock)."""

    wait_for = 1

    def __init__(self, args: Any) -> None:
        self.args = args
        self.requests: list[tuple[Any, Any, str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.loras: dict[int, Any] = {}
        self.shut = False
        self._all_in = asyncio.Event()

    @classmethod
    def from_engine_args(cls, args: Any) -> _AsyncEngine:
        return cls(args)

    def get_tokenizer(self) -> _Tokenizer:
        return _Tokenizer()

    async def generate(
        self, prompt: dict[str, list[int]], params: Any, request_id: str, *, lora_request: Any = None
    ) -> AsyncIterator[_RequestOutput]:
        self.requests.append((prompt, params, request_id, lora_request))
        i = len(self.requests) - 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight >= self.wait_for:
            self._all_in.set()
        try:
            await asyncio.wait_for(self._all_in.wait(), 2)
            lp = [{5: _Logprob(-0.1), 9: _Logprob(-3.0)}, {6: _Logprob(-0.2)}] if params.logprobs else None
            yield _RequestOutput([_Out(f"a{i}"[:1], [5], lp and lp[:1], None)], finished=False)
            await asyncio.sleep(0)
            finish = ["stop", "length", "abort"][i % 3]
            yield _RequestOutput([_Out(f"a{i}", [5, 6], lp, finish)], finished=True)
        finally:
            self.in_flight -= 1

    async def add_lora(self, request: Any) -> bool:
        if "broken" in request.lora_path:
            raise ValueError("Loading lora failed: size mismatch")
        self.loras[request.lora_int_id] = request
        return True

    async def remove_lora(self, lora_id: int) -> bool:
        return self.loras.pop(lora_id, None) is not None

    def shutdown(self) -> None:
        self.shut = True


def _lora_request(name: str, id: int, path: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(lora_name=name, lora_int_id=id, lora_path=path)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    vllm = types.ModuleType("vllm")
    vllm.AsyncEngineArgs = lambda **kw: types.SimpleNamespace(**kw)  # type: ignore[attr-defined]
    vllm.AsyncLLMEngine = _AsyncEngine  # type: ignore[attr-defined]
    vllm.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)  # type: ignore[attr-defined]
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = _lora_request  # type: ignore[attr-defined]
    for name, mod in {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return vllm


def _decode(prompt: dict[str, list[int]]) -> str:
    return "".join(chr(i) for i in prompt["prompt_token_ids"])


async def test_mapping_to_and_from_vllm(fake_vllm: types.ModuleType) -> None:
    model = VLLMChatModel(model="m", adapter="/ckpt/r1")
    assert model.name == "vllm:m+/ckpt/r1"
    engine = model._engine
    assert engine.args.enable_lora is True and engine.args.model == "m"
    convs = [[Message(role="system", content="s"), Message(role="user", content=f"q{i}")] for i in range(3)]
    out = await model.generate(convs, SamplingParams(temperature=0.5, max_tokens=7, stop=("\n",), seed=1))

    assert len(engine.requests) == 3  # one engine request per conversation
    prompt, params, _, lora = engine.requests[0]
    assert _decode(prompt) == "<system>s<user>q0<assistant>"  # the chat template, as token ids
    assert (params.temperature, params.max_tokens, params.stop, params.seed, params.logprobs) == (0.5, 7, ["\n"], 1, 1)
    assert (lora.lora_name, lora.lora_int_id, lora.lora_path) == ("adapter", 1, "/ckpt/r1")
    assert len({r[2] for r in engine.requests}) == 3  # unique request ids

    assert out[0].text == "a0" and out[0].token_ids == (5, 6) and out[0].logprobs == (-0.1, -0.2)  # the final output
    assert out[0].finish_reason == "stop" and out[0].prompt_tokens == 4
    assert out[1].finish_reason == "length"
    assert out[2].finish_reason == "error" and out[2].error == "vLLM aborted the request"

    [plain] = await model.generate(convs[:1], SamplingParams(logprobs=False))
    assert plain.logprobs is None and plain.token_ids == (5, 6)
    await model.aclose()
    assert engine.shut


async def test_concurrent_calls_are_in_the_engine_at_once(fake_vllm: types.ModuleType) -> None:
    """Two episodes' calls, each one conversation, reach vLLM together: vLLM batches them itself."""
    model = VLLMChatModel(model="m")
    model._engine.wait_for = 2  # neither finishes until both are in flight
    one = [[Message(role="user", content="a")]]
    two = [[Message(role="user", content="b")]]
    first, second = await asyncio.gather(model.generate(one, SamplingParams()), model.generate(two, SamplingParams()))
    assert first[0].finish_reason != "error" and second[0].finish_reason != "error", (first, second)
    assert model._engine.most_in_flight == 2


async def test_an_engine_failure_is_an_error_completion(fake_vllm: types.ModuleType) -> None:
    model = VLLMChatModel(VLLMConfig(model="m"))

    async def boom(*_a: Any, **_k: Any) -> AsyncIterator[Any]:
        raise RuntimeError("CUDA out of memory")
        yield  # an async generator, like vLLM's

    model._engine.generate = boom
    out = await model.generate([[Message(role="user", content="q")]] * 2, SamplingParams())
    assert [c.finish_reason for c in out] == ["error", "error"]
    assert out[0].error is not None and "CUDA out of memory" in out[0].error


async def test_loaded_adapters_are_chosen_per_request(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    for name in ("r1", "r2", "broken"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text("{}")
    model = VLLMChatModel(model="m", enable_lora=True)
    engine = model._engine
    conv = [[Message(role="user", content="q")]]
    await model.load_adapter("r1", str(tmp_path / "r1"))
    await model.load_adapter("r2", str(tmp_path / "r2"))
    assert sorted(engine.loras) == [2, 3]  # loaded into the running engine
    with pytest.raises(ConfigError, match="already loaded"):
        await model.load_adapter("r1", str(tmp_path / "r2"))
    with pytest.raises(ModelLoadError, match=r"adapter_config\.json"):
        await model.load_adapter("r3", str(tmp_path))
    with pytest.raises(ModelLoadError, match="size mismatch"):
        await model.load_adapter("r3", str(tmp_path / "broken"))
    await model.generate(conv, SamplingParams())
    await model.generate(conv, SamplingParams(), adapter="r2")
    await model.generate(conv, SamplingParams(), adapter="r1")
    loras = [r[3] for r in engine.requests]
    assert loras[0] is None
    assert (loras[1].lora_name, loras[1].lora_int_id, loras[1].lora_path) == ("r2", 3, str(tmp_path / "r2"))
    assert (loras[2].lora_name, loras[2].lora_int_id) == ("r1", 2)
    await model.unload_adapter("r1")
    assert sorted(engine.loras) == [3]  # removed from the engine
    with pytest.raises(ConfigError, match="no adapter named 'r1'"):
        await model.unload_adapter("r1")
    [gone] = await model.generate(conv, SamplingParams(), adapter="r1")
    assert gone.finish_reason == "error" and gone.error is not None and "no adapter named 'r1'" in gone.error
    await model.load_adapter("r1", str(tmp_path / "r2"))  # a reloaded name gets a new id: vLLM caches by id
    await model.generate(conv, SamplingParams(), adapter="r1")
    assert engine.requests[-1][3].lora_int_id == 5  # 4 went to the broken one


async def test_adapters_need_an_engine_built_with_lora(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="enable_lora: true"):
        await VLLMChatModel(model="m").load_adapter("r1", str(tmp_path))


def test_a_vllm_spec_sets_tensor_parallelism(fake_vllm: types.ModuleType) -> None:
    cfg = resolve_model("vllm:Qwen/Qwen2.5-7B-Instruct?tensor_parallel_size=4&gpu_memory_utilization=0.8")
    assert isinstance(cfg, VLLMConfig) and cfg.model == "Qwen/Qwen2.5-7B-Instruct"
    assert (cfg.tensor_parallel_size, cfg.gpu_memory_utilization) == (4, 0.8)
    model = cfg.build()
    assert model._engine.args.tensor_parallel_size == 4  # type: ignore[attr-defined]
    with pytest.raises(ModelLoadError, match=r"tensor_paralel: Extra inputs.*keys among tensor_parallel_size"):
        resolve_model("vllm:m?tensor_paralel=2")
    with pytest.raises(ModelLoadError, match=r"tensor_parallel_size: Input should be greater than or equal to 1"):
        resolve_model("vllm:m?tensor_parallel_size=0")
