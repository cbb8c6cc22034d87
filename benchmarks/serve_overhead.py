"""What `autodidact serve` costs: the same ChatModel called in process vs through HTTP.

Two models are measured:

* ``fake``: a zero-cost ChatModel (answers at once), so the HTTP column is pure overhead:
  JSON encoding, the OpenAI client (:mod:`agents.llm.openai_compat`), uvicorn + FastAPI.
* ``embedded``: the real SmolLM2-135M on CPU (``TransformersConfig().build()``), greedy with a
  fixed ``max_tokens``, so both columns do the same generation work.

Two patterns each: ``sequential`` (one request at a time: latency) and ``concurrent`` (N
conversations at once: in process one ``generate`` call with all N, through HTTP N concurrent
requests whose ``generate`` calls the backend's MicroBatcher merges back into batches).

Columns: in-process and via-HTTP milliseconds per request, their difference (absolute and %),
and ``HTTP minus server gen.``: the client-observed time less the time during which at least
one ``generate`` call was in flight on the server, i.e. the server's own cost measured on the very same requests.
On a shared, busy machine generation times swing by a second or more between calls, so for
the embedded model that last column is the trustworthy overhead figure.

The server runs in a background thread of this process (:func:`agents.llm.server.running_server`),
so client and server share the GIL and the cores: a pessimistic setup for the fake model's
overhead compared with a server in its own process.

Run (about 3 minutes on 2 CPU cores; ~15 s with ``--skip-model``):

    .venv/bin/python benchmarks/serve_overhead.py
    .venv/bin/python benchmarks/serve_overhead.py --skip-model
    .venv/bin/python benchmarks/serve_overhead.py --n-model 8 --max-tokens 32
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from agents.llm.base import ChatModel
from agents.llm.openai_compat import OpenAIChatModel
from agents.llm.server import running_server
from autodidact.types import Completion, Message, SamplingParams


class ZeroCostModel:
    """Answers every conversation at once with a fixed completion (ids and logprobs included)."""

    name = "fake"

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        c = Completion(text="ok " * 8, token_ids=tuple(range(16)), logprobs=(-0.1,) * 16, prompt_tokens=20)
        return [c] * len(conversations)

    async def aclose(self) -> None:
        pass


class TimedModel:
    """Wraps a ChatModel and records how long at least one ``generate`` call was in flight, so
    the server's own cost can be told apart from the model's, also for overlapping calls."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self.name = inner.name
        self.busy_s = 0.0
        self._active = 0
        self._since = 0.0

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        if self._active == 0:
            self._since = time.perf_counter()
        self._active += 1
        try:
            return await self.inner.generate(conversations, sampling)
        finally:
            self._active -= 1
            if self._active == 0:
                self.busy_s += time.perf_counter() - self._since

    def reset(self) -> None:
        self.busy_s = 0.0

    async def aclose(self) -> None:
        pass


@dataclass
class Row:
    model: str
    pattern: str
    n: int
    in_process_ms: float
    http_ms: float
    server_generate_ms: float
    note: str = ""

    def line(self) -> str:
        overhead = self.http_ms - self.in_process_ms
        # A percentage of a zero-cost call means nothing; shown only when the model does work.
        pct = f"{100 * overhead / self.in_process_ms:>9.1f}%" if self.in_process_ms >= 1 else f"{'n/a':>10}"
        direct = self.http_ms - self.server_generate_ms
        return (
            f"{self.model:<9} {self.pattern:<11} {self.n:>4} {self.in_process_ms:>11.3f} {self.http_ms:>10.3f} "
            f"{overhead:>10.3f} {pct} {direct:>12.3f}  {self.note}"
        )


HEADER = (
    f"{'model':<9} {'pattern':<11} {'N':>4} {'in-process':>11} {'via HTTP':>10} {'overhead':>10} {'overhead':>10} "
    f"{'HTTP minus':>12}\n"
    f"{'':<9} {'':<11} {'':>4} {'ms/req':>11} {'ms/req':>10} {'ms/req':>10} {'%':>10} {'server gen.':>12}"
)


def _conv(i: int) -> list[Message]:
    return [Message(role="user", content=f"Write one sentence about the number {i}.")]


async def _timed(model: ChatModel, convs: list[list[Message]], sampling: SamplingParams) -> float:
    """Wall milliseconds of one ``generate`` call (per conversation); raises on an error completion."""
    start = time.perf_counter()
    out = await model.generate(convs, sampling)
    elapsed = (time.perf_counter() - start) * 1000 / len(convs)
    if any(c.finish_reason == "error" for c in out):
        raise RuntimeError(next(c.error for c in out if c.error))
    return elapsed


async def measure(
    label: str, model: ChatModel, n_seq: int, n_conc: int, sampling: SamplingParams, repeats: int
) -> list[Row]:
    """In-process vs HTTP for one model. Sequential: the two paths alternate request by request
    (so drifting machine load hits both alike), mean over ``n_seq``; concurrent: ``repeats``
    rounds of N at once, median. ``HTTP minus server gen.`` is the client-observed time less
    the time spent inside ``generate`` on the server: the server's own cost, measured on the
    same requests, so it stays meaningful on a busy machine."""
    timed = TimedModel(model)
    with running_server(timed, label) as base:
        async with OpenAIChatModel(base_url=base, model=label, concurrency=n_conc, max_retries=0, timeout_s=600) as c:
            await _timed(model, [_conv(0)], sampling)  # warm-up both paths
            await _timed(c, [_conv(0)], sampling)
            seq_in, seq_http = [], []
            timed.reset()
            for i in range(n_seq):
                seq_in.append(await _timed(model, [_conv(i)], sampling))
                seq_http.append(await _timed(c, [_conv(i)], sampling))
            seq_gen = timed.busy_s * 1000 / n_seq
            conc_in, conc_http, conc_gen = [], [], []
            for _ in range(repeats):
                convs = [_conv(i) for i in range(n_conc)]
                conc_in.append(await _timed(model, convs, sampling))
                timed.reset()
                conc_http.append(await _timed(c, convs, sampling))
                conc_gen.append(timed.busy_s * 1000 / n_conc)
    batcher = getattr(model, "batcher", None)  # in-process backends batch concurrent calls
    note = f"last batches {list(batcher.batch_sizes)[-4:]}" if batcher is not None else "no batching"
    return [
        Row(label, "sequential", n_seq, statistics.mean(seq_in), statistics.mean(seq_http), seq_gen),
        Row(
            label,
            "concurrent",
            n_conc,
            statistics.median(conc_in),
            statistics.median(conc_http),
            statistics.median(conc_gen),
            note,
        ),
    ]


async def main(args: argparse.Namespace) -> None:
    rows: list[Row] = []
    fake = ZeroCostModel()
    sampling = SamplingParams(max_tokens=16)
    rows += await measure("fake", fake, args.n_fake, args.n_fake_concurrent, sampling, args.repeats)
    if not args.skip_model:
        from agents.llm.base import TransformersConfig

        t0 = time.perf_counter()
        model = TransformersConfig().build()
        print(f"embedded model loaded in {time.perf_counter() - t0:.1f}s")
        sampling = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
        rows += await measure("embedded", model, args.n_model, args.n_model, sampling, args.model_repeats)
        await model.aclose()
    print()
    print(HEADER)
    for r in rows:
        print(r.line())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n-fake", type=int, default=300, help="sequential requests to the zero-cost model")
    parser.add_argument("--n-fake-concurrent", type=int, default=64, help="concurrent requests to the zero-cost model")
    parser.add_argument("--n-model", type=int, default=8, help="requests to the embedded model (each pattern)")
    parser.add_argument("--repeats", type=int, default=5, help="concurrent rounds, zero-cost model (median)")
    parser.add_argument("--model-repeats", type=int, default=3, help="concurrent rounds, embedded model (median)")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens generated per embedded request")
    parser.add_argument("--skip-model", action="store_true", help="measure the zero-cost model only")
    asyncio.run(main(parser.parse_args()))
