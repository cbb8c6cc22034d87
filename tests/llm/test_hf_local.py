"""The transformers backend with the real embedded model."""

from __future__ import annotations

import math

import pytest

from agents.llm.base import ChatModel, TransformersConfig
from agents.llm.hf_local import resolve_weights
from autodidact.errors import ModelLoadError
from autodidact.types import Message, SamplingParams

pytestmark = pytest.mark.slow

LAST = [Message(role="user", content="Write a Python function `last(xs)` that returns the last element of a list.")]
HELLO = [Message(role="user", content="Say hello.")]


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


def test_missing_model_path_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        resolve_weights(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="cannot load model"):
        TransformersConfig(path="nobody/no-such-model").build()
