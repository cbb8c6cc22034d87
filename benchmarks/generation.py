"""Embedded-model generation throughput at batch 1, 8 and 32 (transformers on CPU or GPU).

Measures new tokens per second of :class:`agents.llm.hf_local.TransformersChatModel` with the
embedded SmolLM2-135M-Instruct, sampling at T=0.8 with a fixed ``max_tokens`` so that every
row generates the same number of tokens (``ignore_eos``-like: the prompt asks for a long
answer, and rows that stop early are counted by their real token counts).

Run: ``.venv/bin/python benchmarks/generation.py [--max-tokens 64] [--batches 1 8 32] [--model DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import time

from agents.llm.base import TransformersConfig
from autodidact.types import Message, SamplingParams

PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number, and explain it.",
    "Explain what a hash map is and write a small example in Python.",
    "Write a Python function that reverses the words of a sentence, with comments.",
    "Describe how binary search works and implement it in Python.",
]


async def measure(model, batch: int, max_tokens: int) -> tuple[float, int, float]:  # type: ignore[no-untyped-def]
    convs = [[Message(role="user", content=PROMPTS[i % len(PROMPTS)])] for i in range(batch)]
    sampling = SamplingParams(temperature=0.8, max_tokens=max_tokens, seed=0)
    await model.generate(convs[:1], SamplingParams(max_tokens=4))  # warm-up
    start = time.perf_counter()
    outs = await model.generate(convs, sampling)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.token_ids or ()) for o in outs)
    return tokens / seconds, tokens, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="embedded", help="a model dir, e.g. random weights of the same shape")
    args = ap.parse_args()
    model = TransformersConfig(path=args.model, device=args.device, max_batch_size=max(args.batches)).build()
    print(f"model {model.name} on {model.device}, max_tokens {args.max_tokens}")
    print(f"{'batch':>5} {'tokens':>7} {'seconds':>8} {'tokens/s':>9}")
    for b in args.batches:
        tps, tokens, seconds = asyncio.run(measure(model, b, args.max_tokens))
        print(f"{b:>5} {tokens:>7} {seconds:>8.2f} {tps:>9.1f}")


if __name__ == "__main__":
    main()
