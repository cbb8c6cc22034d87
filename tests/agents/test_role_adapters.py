"""A role's LoRA checkpoint on the run model's base is an adapter in that model, not a second model."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from agents.llm.base import AdapterView
from agents.llm.hf_local import TransformersChatModel
from agents.rollout import RunConfig, bind_roles
from autodidact.types import Message, SamplingParams
from training.checkpoints import register_checkpoint

ASK = [[Message(role="user", content="Score this answer: def last(xs): return xs[-1]")]]
GREEDY = SamplingParams(temperature=0.0, max_tokens=8)


@pytest.mark.slow
async def test_a_role_checkpoint_on_the_same_base_is_loaded_as_an_adapter(
    embedded_model: TransformersChatModel, lora_adapters: tuple[Path, Path]
) -> None:
    register_checkpoint("reviewer-a1", lora_adapters[0], kind="lora", base_model="embedded")
    cfg = RunConfig(model="embedded", roles={"reviewer": {"model": "reviewer-a1"}, "refiner": {"model": "reviewer-a1"}})
    [base] = await embedded_model.generate(ASK, GREEDY)
    async with AsyncExitStack() as stack:
        bound = await bind_roles(cfg, embedded_model, stack)
        reviewer = bound.models["reviewer"]
        assert isinstance(reviewer, AdapterView) and reviewer.model is embedded_model
        assert bound.models["refiner"] is reviewer  # one adapter per distinct checkpoint
        assert list(embedded_model.loaded_adapters.values()) == [str(lora_adapters[0])]
        [tuned] = await reviewer.generate(ASK, GREEDY)
        [direct] = await embedded_model.generate(ASK, GREEDY, adapter=reviewer.adapter)
        [still] = await embedded_model.generate(ASK, GREEDY)
    assert tuned.text == direct.text != base.text and still.text == base.text  # the solver keeps the base
    assert embedded_model.loaded_adapters == {}  # unloaded when the run ends
    [after] = await embedded_model.generate(ASK, GREEDY)
    assert after.text == base.text
