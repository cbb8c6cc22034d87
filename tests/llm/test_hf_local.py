"""The transformers backend with the real embedded model, LoRA hot-swap included."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from agents.llm.base import ChatModel, TransformersConfig
from agents.llm.hf_local import TransformersChatModel, resolve_weights
from autodidact.errors import ConfigError, ModelLoadError
from autodidact.types import Message, SamplingParams

pytestmark = pytest.mark.slow

LAST = [Message(role="user", content="Write a Python function `last(xs)` that returns the last element of a list.")]
HELLO = [Message(role="user", content="Say hello.")]
GREEDY = SamplingParams(temperature=0.0, max_tokens=8)


async def test_greedy_batch_is_deterministic_and_matches_batch_of_one(embedded_model: ChatModel) -> None:
    sampling = SamplingParams(max_tokens=40)
    [alone] = await embedded_model.generate([LAST], sampling)
    batch = await embedded_model.generate([LAST, HELLO, LAST], sampling)
    assert batch[0].text == batch[2].text == alone.text  # left padding does not change greedy output
    assert "def last" in alone.text
    assert alone.token_ids is not None and alone.logprobs is not None
    assert len(alone.token_ids) == len(alone.logprobs) > 0
    assert all(lp <= 0.0 and math.isfinite(lp) for lp in alone.logprobs)
    assert alone.prompt_tokens and alone.prompt_tokens > 10


async def test_stop_strings_cut_text_and_length_is_reported(embedded_model: ChatModel) -> None:
    [c] = await embedded_model.generate([LAST], SamplingParams(max_tokens=64, stop=("return",)))
    assert "return" not in c.text and c.finish_reason == "stop"
    [short] = await embedded_model.generate([HELLO], SamplingParams(max_tokens=2))
    assert short.finish_reason == "length" and short.token_ids is not None and len(short.token_ids) == 2


async def test_sampling_with_seed_is_reproducible(embedded_model: ChatModel) -> None:
    s = SamplingParams(max_tokens=24, temperature=1.0, seed=7)
    [a] = await embedded_model.generate([LAST], s)
    [b] = await embedded_model.generate([LAST], s)
    assert a.text == b.text


def test_omp_num_threads_where_set_is_the_models_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes that each take every core run several times slower (a pair of tiny evolves:
    their first evaluation 299 s each, against 25-29 s with a core each): a model keeps the share
    OMP_NUM_THREADS gives it (pytest-xdist workers set it), and takes every core where it is unset."""
    import os

    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        TransformersConfig().build()
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        TransformersConfig().build()
        assert torch.get_num_threads() == os.cpu_count()
    finally:
        torch.set_num_threads(before)


def test_missing_model_path_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        resolve_weights(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="cannot load model"):
        TransformersConfig(path="nobody/no-such-model").build()


async def test_adapter_errors_say_what_to_do_and_leave_the_model_as_it_was(
    embedded_model: ChatModel, lora_adapters: tuple[Path, Path], foreign_lora_adapter: Path, tmp_path: Path
) -> None:
    from peft import PeftModel

    assert isinstance(embedded_model, TransformersChatModel)
    plain = embedded_model.model
    [start] = await embedded_model.generate([HELLO], GREEDY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"has no adapter_config\.json; pass the dir"):
        await embedded_model.load_adapter("a1", str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match=r"does not exist"):
        await embedded_model.load_adapter("a1", str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadError, match=r"size mismatch.*load an adapter trained on 'embedded'"):
        await embedded_model.load_adapter("foreign", str(foreign_lora_adapter))
    assert embedded_model.model is plain and not isinstance(plain, PeftModel)  # the failed load was undone
    with pytest.raises(ConfigError, match="pick a longer name"):
        await embedded_model.load_adapter("a", str(lora_adapters[0]))  # "a" is in PEFT's "lora_" prefix
    with pytest.raises(ConfigError, match="no adapter named 'a1' was loaded"):
        await embedded_model.unload_adapter("a1")
    try:
        await embedded_model.load_adapter("a1", str(lora_adapters[0]))
        with pytest.raises(ConfigError, match="already loaded; unload it first"):
            await embedded_model.load_adapter("a1", str(lora_adapters[1]))
        with pytest.raises(ModelLoadError, match="size mismatch"):
            await embedded_model.load_adapter("foreign", str(foreign_lora_adapter))
        assert list(embedded_model.model.peft_config) == ["a1"]  # the failed second load was undone too
        [unknown] = await embedded_model.generate([HELLO], GREEDY, adapter="a2")
        assert unknown.finish_reason == "error" and unknown.error and "no adapter named 'a2' is loaded" in unknown.error
    finally:
        for name in list(embedded_model.loaded_adapters):
            await embedded_model.unload_adapter(name)
    assert embedded_model.model is plain
    [end] = await embedded_model.generate([HELLO], GREEDY)
    assert end.token_ids == start.token_ids


async def test_a_model_built_with_an_adapter_keeps_it_for_requests_without_one(
    embedded_model: ChatModel, lora_adapters: tuple[Path, Path]
) -> None:
    a1, a2 = (str(p) for p in lora_adapters)
    assert isinstance(embedded_model, TransformersChatModel)
    [base] = await embedded_model.generate([HELLO], GREEDY)
    try:
        await embedded_model.load_adapter("a1", a1)
        [a1_dynamic] = await embedded_model.generate([HELLO], GREEDY, adapter="a1")
    finally:
        await embedded_model.unload_adapter("a1")

    built = TransformersChatModel(TransformersConfig(adapter=a1))
    try:
        [default] = await built.generate([HELLO], GREEDY)
        assert default.token_ids == a1_dynamic.token_ids != base.token_ids  # served with its adapter
        with pytest.raises(ConfigError, match="'default' is already loaded"):
            await built.load_adapter("default", a2)
        await built.load_adapter("a2", a2)
        outs = await asyncio.gather(built.generate([HELLO], GREEDY), built.generate([HELLO], GREEDY, adapter="a2"))
        [[again], [second]] = outs
        assert again.token_ids == default.token_ids and second.token_ids not in (default.token_ids, base.token_ids)
        await built.unload_adapter("a2")
        with pytest.raises(ConfigError, match="the one the model was built with, stays"):
            await built.unload_adapter("default")
        [after] = await built.generate([HELLO], GREEDY)
        assert after.token_ids == default.token_ids
        assert list(built.model.peft_config) == ["default"]
    finally:
        await built.aclose()


def test_merged_weights_give_the_adapters_logits_and_are_made_once(lora_adapters) -> None:  # type: ignore[no-untyped-def]
    """A LoRA checkpoint served without LoRA (engine: vllm-merged) must be the same function."""
    import torch

    from agents.llm.hf_local import load_model_and_tokenizer, merged_weights

    adapter = str(lora_adapters[0])
    out = merged_weights("embedded", adapter, "float32")
    assert out.name == "a1-merged-float32" and (out / "config.json").is_file()
    assert not (out / "adapter_config.json").exists()  # plain weights, nothing for a server to apply
    mtime = (out / "config.json").stat().st_mtime_ns
    assert merged_weights("embedded", adapter, "float32") == out  # made once
    assert (out / "config.json").stat().st_mtime_ns == mtime
    with_adapter: Any
    merged: Any
    with_adapter, tok = load_model_and_tokenizer("embedded", adapter, device="cpu")
    merged, _ = load_model_and_tokenizer(str(out), device="cpu")
    ids = tok("def last(xs):", return_tensors="pt").input_ids
    with torch.no_grad():
        expected, got = with_adapter(ids).logits, merged(ids).logits
        base = with_adapter.get_base_model()
        with with_adapter.disable_adapter():
            plain = base(ids).logits
    assert not torch.allclose(plain, expected, atol=1e-2)  # the adapter changes the model...
    assert torch.allclose(got, expected, atol=1e-4)  # ...and the merged weights are that model
    with pytest.raises(ModelLoadError, match=r"no adapter_config\.json"):
        merged_weights("embedded", str(out))
