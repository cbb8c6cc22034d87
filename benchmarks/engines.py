"""Engines side by side: transformers in process and vLLM as the managed server, on the same models.

For each model (``embedded``; catalog models that are fetched, e.g. ``qwen2.5-coder-0.5b``) and
engine, with the base weights and with a LoRA adapter loaded at run time (random, r=16 on every
linear layer, so it costs what a trained one costs):

* **tokens/s at 1, 8, 32 and 64 concurrent sequences**: that many ``generate`` calls of one
  conversation each, in flight together (how episodes call a model), greedy, ``max_tokens``
  fixed, prompts that ask for long answers; real completion tokens over wall time;
* **time to first token**: the latency of a lone ``max_tokens=1`` request (median of 5; neither
  engine streams through our interface, so this is prefill plus one token plus the call);
* **equal greedy answers**: 8 fixed prompts, 32 tokens, base weights, transformers against vLLM.

Engines run one after the other in one process run, each with the cores to itself; the vLLM
server's start-up is reported apart and not counted. vLLM runs at ``--vllm-dtype`` (``auto``, the
managed server's default: bf16 on a GPU or a CPU with native bf16, fp32 on other CPUs, where bf16
is emulated and slower); transformers on CPU runs fp32, so at bf16 greedy answers may part where
two tokens are nearly tied (``--vllm-dtype float32`` checks equality at equal precision).

``--engines ctranslate2`` adds CTranslate2 (``pip install ctranslate2==4.8.5``, not a project
dependency): the model converted once to CTranslate2's format at int8 (``--ct2-quantization``),
concurrent calls batched by the project's :class:`~agents.llm.batching.MicroBatcher` into
``Generator.generate_batch``. CTranslate2 has no run-time LoRA: an adapter must be merged into
the weights and the model converted again, so it has no LoRA row.

Run (about 15 minutes on 2 cores for both models):

    .venv/bin/python benchmarks/engines.py
    .venv/bin/python benchmarks/engines.py --max-tokens 32 --adapter-concurrency 1 8  # what the README shows
    .venv/bin/python benchmarks/engines.py --models embedded --concurrency 1 8 --max-tokens 16
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agents.llm.base import TransformersConfig, VLLMServerConfig
from agents.llm.vllm_server import serving_dtype
from autodidact.types import Message, SamplingParams

LONG = [
    "Write a Python function that returns the n-th Fibonacci number, and explain it step by step.",
    "Explain what a hash map is and write a small example in Python with comments.",
    "Write a Python function that reverses the words of a sentence, then explain each line.",
    "Describe how binary search works and implement it in Python with tests.",
]
FIXED = [
    "What is 7 times 8?",
    "Write a Python function add(a, b) that returns their sum.",
    "Name three prime numbers.",
    "What does HTTP stand for?",
    "Write a Python one-liner that reverses a list xs.",
    "What is the capital of France?",
    "Explain recursion in one sentence.",
    "Write a Python function is_even(n).",
]


class CT2Model:
    """A CTranslate2 ``Generator`` behind the ChatModel interface (for this benchmark only)."""

    def __init__(self, model_spec: str, out: Path, quantization: str, max_batch_size: int) -> None:
        import os

        import ctranslate2
        from ctranslate2.converters import TransformersConverter
        from transformers import AutoTokenizer

        from agents.llm.batching import MicroBatcher
        from agents.llm.hf_local import resolve_weights

        src = resolve_weights(model_spec)
        TransformersConverter(str(src)).convert(str(out), quantization=quantization, force=True)
        self.tokenizer = AutoTokenizer.from_pretrained(str(src))
        self.generator = ctranslate2.Generator(str(out), device="cpu", intra_threads=os.cpu_count() or 1)
        self.batcher = MicroBatcher(self._batch, name="ctranslate2", max_batch_size=max_batch_size)
        self.name = f"ctranslate2:{model_spec}:{quantization}"

    async def _batch(self, conversations: Any, sampling: SamplingParams, *, adapter: str | None = None) -> list[Any]:
        from autodidact.types import Completion

        if sampling.temperature > 0:  # the benchmark decodes greedily; nothing else is wired
            raise ValueError("CT2Model decodes greedily only (temperature 0)")

        texts = [
            str(
                self.tokenizer.apply_chat_template(
                    [m.model_dump() for m in c], add_generation_prompt=True, tokenize=False
                )
            )
            for c in conversations
        ]
        prompts = [
            self.tokenizer.convert_ids_to_tokens(self.tokenizer(t, add_special_tokens=False)["input_ids"])
            for t in texts
        ]

        def run() -> list[Any]:
            return self.generator.generate_batch(
                prompts,
                max_length=sampling.max_tokens,
                sampling_topk=1,
                include_prompt_in_result=False,
                end_token=self.tokenizer.eos_token,
            )

        results = await asyncio.to_thread(run)
        out = []
        for r in results:
            ids = r.sequences_ids[0]
            out.append(Completion(text=self.tokenizer.decode(ids, skip_special_tokens=True), token_ids=tuple(ids)))
        return out

    async def generate(self, conversations: Any, sampling: SamplingParams) -> list[Any]:
        return await self.batcher.generate(conversations, sampling)

    async def aclose(self) -> None:
        await self.batcher.aclose()


def random_lora(model_spec: str, out: Path) -> Path:
    """A random LoRA adapter (r=16, every linear layer) for ``model_spec``, saved to ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model

    from agents.llm.hf_local import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(model_spec, device="cpu")
    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear", init_lora_weights=False))
    peft.save_pretrained(str(out))
    return out


async def throughput(model: Any, n: int, max_tokens: int, adapter: str | None) -> float:
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    convs = [[Message(role="user", content=LONG[i % len(LONG)])] for i in range(n)]
    kw = {"adapter": adapter} if adapter else {}
    start = time.perf_counter()
    outs = await asyncio.gather(*(model.generate([c], sampling, **kw) for c in convs))
    seconds = time.perf_counter() - start
    errors = [o.error for [o] in outs if o.error]
    if errors:
        raise RuntimeError(f"{len(errors)} calls failed: {errors[0]}")
    return sum(len(o.token_ids or ()) for [o] in outs) / seconds


async def ttft_ms(model: Any, adapter: str | None) -> float:
    kw = {"adapter": adapter} if adapter else {}
    times = []
    for i in range(5):
        start = time.perf_counter()
        await model.generate([[Message(role="user", content=FIXED[i])]], SamplingParams(max_tokens=1), **kw)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def answers(model: Any) -> list[str]:
    outs = await model.generate([[Message(role="user", content=p)] for p in FIXED], SamplingParams(max_tokens=32))
    return [o.text for o in outs]


async def measure(model: Any, lora: Path | None, args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    await model.generate([[Message(role="user", content="hi")]], SamplingParams(max_tokens=4))  # warm-up
    texts = await answers(model)
    if lora is not None:
        await model.load_adapter("bench", str(lora))
    rows = []
    for adapter in (None, "bench") if lora is not None else (None,):
        row: dict[str, Any] = {"adapter": adapter or "-", "ttft_ms": await ttft_ms(model, adapter)}
        for n in args.concurrency if adapter is None else args.adapter_concurrency:
            row[n] = await throughput(model, n, args.max_tokens, adapter)
            print(f"    {adapter or 'base'} x{n}: {row[n]:.1f} tokens/s", flush=True)
        rows.append(row)
    return rows, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=None, help="default: embedded and every fetched catalog model")
    ap.add_argument(
        "--engines",
        nargs="+",
        default=["transformers", "vllm"],
        help="transformers, vllm (the managed server's defaults: eager, LoRA on), vllm-compiled (no LoRA), "
        "ctranslate2 (no LoRA)",
    )
    ap.add_argument("--ct2-quantization", default="int8", help="CTranslate2 weights: int8, int8_float32, float32")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--adapter-concurrency", type=int, nargs="+", default=None, help="default: --concurrency")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--vllm-dtype", default="auto", help="auto: bfloat16 where the hardware has it, else float32")
    args = ap.parse_args()
    args.adapter_concurrency = args.adapter_concurrency or args.concurrency
    from agents.llm.catalog import CATALOG, status

    models = args.models or [n for n, e in CATALOG.items() if n == "embedded" or status(e).startswith("fetched")]
    table: list[tuple[str, str, dict[str, Any]]] = []
    same: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            lora = random_lora(name, Path(tmp) / name)
            texts: dict[str, list[str]] = {}
            for engine in args.engines:
                print(f"{name} on {engine}", flush=True)
                start = time.perf_counter()
                if engine == "ctranslate2":
                    out = Path(tmp) / f"{name}-ct2"
                    model: Any = CT2Model(name, out, args.ct2_quantization, max(args.concurrency))
                elif engine.startswith("vllm"):
                    compiled = engine == "vllm-compiled"  # vLLM's fast path: graphs compiled, no LoRA
                    model = VLLMServerConfig(
                        model=name,
                        enable_lora=not compiled,
                        enforce_eager=not compiled,
                        dtype=args.vllm_dtype,
                        max_model_len=2048,
                    ).build()
                else:
                    model = TransformersConfig(path=name, max_batch_size=max(args.concurrency)).build()
                print(f"  loaded in {time.perf_counter() - start:.1f} s", flush=True)
                try:
                    adapter_dir = None if engine in ("vllm-compiled", "ctranslate2") else lora
                    rows, texts[engine] = asyncio.run(measure(model, adapter_dir, args))
                finally:
                    asyncio.run(model.aclose())
                label = f"{engine} ({serving_dtype(args.vllm_dtype)})" if engine.startswith("vllm") else engine
                table += [(name, label, row) for row in rows]
            if "transformers" in texts:
                for engine, other in texts.items():
                    if engine != "transformers":
                        equal = sum(x == y for x, y in zip(texts["transformers"], other, strict=True))
                        same.append(
                            f"{name}: {equal}/{len(FIXED)} greedy answers equal, transformers fp32 and {engine}"
                        )

    print(f"\ntokens/s by concurrent sequences (greedy, max_tokens {args.max_tokens}); TTFT: a lone 1-token call")
    head = " | ".join(f"x{n}" for n in args.concurrency)
    print(f"| model | engine | adapter | {head} | TTFT ms |")
    print("|---|---|---|" + "---|" * len(args.concurrency) + "---|")
    for name, engine, row in table:
        cells = " | ".join(f"{row[n]:.1f}" if n in row else "–" for n in args.concurrency)
        print(f"| {name} | {engine} | {row['adapter']} | {cells} | {row['ttft_ms']:.0f} |")
    print("\n" + "\n".join(same))


if __name__ == "__main__":
    main()
