"""The vLLM engine backend (agents.llm.vllm_engine).

vLLM cannot be installed here, so these tests check the missing-vLLM error and the mapping
to and from vLLM's objects against a stand-in ``vllm`` module with vLLM's shapes.
"""

from __future__ import annotations

import sys
import types
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
    finish_reason: str


@dataclass
class _RequestOutput:
    outputs: list[_Out]
    prompt_token_ids: list[int] = field(default_factory=lambda: [1, 2, 3, 4])


class _LLM:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[Any, Any, Any]] = []

    def chat(self, messages: Any, params: Any, use_tqdm: bool = True, lora_request: Any = None) -> list[_RequestOutput]:
        self.calls.append((messages, params, lora_request))
        lp = [{5: _Logprob(-0.1), 9: _Logprob(-3.0)}, {6: _Logprob(-0.2)}] if params.logprobs else None
        finish = ["stop", "length", "abort"]
        return [_RequestOutput([_Out(f"a{i}", [5, 6], lp, finish[i % 3])]) for i in range(len(messages))]


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    vllm = types.ModuleType("vllm")
    vllm.LLM = _LLM  # type: ignore[attr-defined]
    vllm.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)  # type: ignore[attr-defined]
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, id, path: ("lora", name, id, path)  # type: ignore[attr-defined]
    for name, mod in {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return vllm


async def test_mapping_to_and_from_vllm(fake_vllm: types.ModuleType) -> None:
    model = VLLMChatModel(model="m", adapter="/ckpt/r1")
    assert model.name == "vllm:m+/ckpt/r1"
    assert model._llm.kwargs["enable_lora"] is True
    convs = [[Message(role="user", content=f"q{i}")] for i in range(3)]
    out = await model.generate(convs, SamplingParams(temperature=0.5, max_tokens=7, stop=("\n",), seed=1))

    [(messages, params, lora)] = model._llm.calls
    assert messages[0] == [{"role": "user", "content": "q0"}]
    assert (params.temperature, params.max_tokens, params.stop, params.seed, params.logprobs) == (0.5, 7, ["\n"], 1, 1)
    assert lora == ("lora", "adapter", 1, "/ckpt/r1")

    assert out[0].text == "a0" and out[0].token_ids == (5, 6) and out[0].logprobs == (-0.1, -0.2)
    assert out[0].finish_reason == "stop" and out[0].prompt_tokens == 4
    assert out[1].finish_reason == "length"
    assert out[2].finish_reason == "error" and out[2].error == "vLLM aborted the request"

    [plain] = await model.generate(convs[:1], SamplingParams(logprobs=False))
    assert plain.logprobs is None and plain.token_ids == (5, 6)
    await model.aclose()


async def test_an_engine_failure_is_an_error_completion(fake_vllm: types.ModuleType) -> None:
    model = VLLMChatModel(VLLMConfig(model="m"))

    def boom(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("CUDA out of memory")

    model._llm.chat = boom
    out = await model.generate([[Message(role="user", content="q")]] * 2, SamplingParams())
    assert [c.finish_reason for c in out] == ["error", "error"]
    assert out[0].error is not None and "CUDA out of memory" in out[0].error


async def test_loaded_adapters_are_chosen_per_request(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    for name in ("r1", "r2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text("{}")
    model = VLLMChatModel(model="m", enable_lora=True)
    conv = [[Message(role="user", content="q")]]
    await model.load_adapter("r1", str(tmp_path / "r1"))
    await model.load_adapter("r2", str(tmp_path / "r2"))
    with pytest.raises(ConfigError, match="already loaded"):
        await model.load_adapter("r1", str(tmp_path / "r2"))
    with pytest.raises(ModelLoadError, match=r"adapter_config\.json"):
        await model.load_adapter("r3", str(tmp_path))
    await model.generate(conv, SamplingParams())
    await model.generate(conv, SamplingParams(), adapter="r2")
    await model.generate(conv, SamplingParams(), adapter="r1")
    assert [lora for _, _, lora in model._llm.calls] == [
        None,
        ("lora", "r2", 3, str(tmp_path / "r2")),
        ("lora", "r1", 2, str(tmp_path / "r1")),
    ]
    await model.unload_adapter("r1")
    with pytest.raises(ConfigError, match="no adapter named 'r1'"):
        await model.unload_adapter("r1")
    [gone] = await model.generate(conv, SamplingParams(), adapter="r1")
    assert gone.finish_reason == "error" and gone.error is not None and "no adapter named 'r1'" in gone.error
    await model.load_adapter("r1", str(tmp_path / "r2"))  # a reloaded name gets a new id: vLLM caches by id
    await model.generate(conv, SamplingParams(), adapter="r1")
    assert model._llm.calls[-1][2] == ("lora", "r1", 4, str(tmp_path / "r2"))


async def test_adapters_need_an_engine_built_with_lora(fake_vllm: types.ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="enable_lora: true"):
        await VLLMChatModel(model="m").load_adapter("r1", str(tmp_path))


def test_a_vllm_spec_sets_tensor_parallelism(fake_vllm: types.ModuleType) -> None:
    cfg = resolve_model("vllm:Qwen/Qwen2.5-7B-Instruct?tensor_parallel_size=4&gpu_memory_utilization=0.8")
    assert isinstance(cfg, VLLMConfig) and cfg.model == "Qwen/Qwen2.5-7B-Instruct"
    assert (cfg.tensor_parallel_size, cfg.gpu_memory_utilization) == (4, 0.8)
    model = cfg.build()
    assert model._llm.kwargs["tensor_parallel_size"] == 4  # type: ignore[attr-defined]
    with pytest.raises(ModelLoadError, match=r"tensor_paralel: Extra inputs.*keys among tensor_parallel_size"):
        resolve_model("vllm:m?tensor_paralel=2")
    with pytest.raises(ModelLoadError, match=r"tensor_parallel_size: Input should be greater than or equal to 1"):
        resolve_model("vllm:m?tensor_parallel_size=0")
