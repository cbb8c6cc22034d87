"""Micro-batching: concurrent single requests become batched ``generate`` calls.

In-process backends (transformers, the vLLM engine) are fastest when many conversations go
through one forward pass, but their callers — the episodes of a rollout, the requests to
``autodidact serve`` — each ask for one. A :class:`MicroBatcher` sits inside such a backend:
a worker takes the first waiting request, waits a little for others (up to
``max_batch_size``), groups them by identical :class:`~autodidact.types.SamplingParams` and
LoRA adapter name, and makes one batched call per group, so a call never mixes sampling
settings or adapters. The wait is adaptive: ``window_fraction`` of the recent
mean call time (an exponential average), capped at ``window_s`` — about 50 ms before a CPU
model's multi-second generation, next to nothing before a fast backend. One batch runs at a
time by default, so requests that arrive while the model is busy form the next batch.

A backend call that raises, or returns the wrong number of completions, fails only its own
batch, as error completions.

Example:
    >>> batcher = MicroBatcher(backend_generate, name="embedded", max_batch_size=16)  # doctest: +SKIP
    >>> completions = await batcher.generate(conversations, sampling)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from autodidact.errors import ConfigError
from autodidact.types import Completion, Message, SamplingParams


class BatchFn(Protocol):
    """The batched call a :class:`MicroBatcher` makes: one sampling setting, at most one adapter.

    ``adapter`` is passed only for requests that name one, so a backend without adapters can
    hand over a plain ``generate(conversations, sampling)``.
    """

    async def __call__(
        self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams, *, adapter: str | None = None
    ) -> list[Completion]: ...


@dataclass
class _Pending:
    conversation: Sequence[Message]
    sampling: SamplingParams
    adapter: str | None
    future: asyncio.Future[Completion]


@dataclass
class _LoopState:
    """A queue and worker per event loop: a model may be called from several loops (the CLI's,
    a server thread's); asyncio objects must not cross them. The model itself is shared."""

    queue: asyncio.Queue[_Pending]
    worker: asyncio.Task[None] | None = None
    running: set[asyncio.Task[None]] = field(default_factory=set)


class MicroBatcher:
    """Turns concurrent requests into batched calls of ``fn`` (see the module docstring)."""

    def __init__(
        self,
        fn: BatchFn,
        *,
        name: str = "",
        max_batch_size: int = 16,
        window_s: float = 0.05,
        window_fraction: float = 0.05,
        max_inflight: int = 1,
    ) -> None:
        """Keep the settings; the worker starts on the first request.

        Args:
            fn: The batched call: conversations, one sampling setting and (for requests that
                name one) ``adapter=`` in, completions out.
            name: The backend's name, for error messages.
            max_batch_size: Conversations per call at most.
            window_s: The longest wait after the first request for more to join its batch.
            window_fraction: The wait as a fraction of the recent mean call time.
            max_inflight: Calls running at the same time at most.
        """
        if max_batch_size < 1 or max_inflight < 1 or window_s < 0 or window_fraction < 0:
            raise ConfigError(
                "MicroBatcher needs max_batch_size >= 1, max_inflight >= 1, window_s >= 0 and window_fraction >= 0"
            )
        self._fn = fn
        self.name = name
        self.max_batch_size = max_batch_size
        self.window_s = window_s
        self.window_fraction = window_fraction
        self.max_inflight = max_inflight
        self.batch_sizes: collections.deque[int] = collections.deque(
            maxlen=1000
        )  # recent calls, for tests and benchmarks
        self._mean_call_s: float | None = None
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()

    async def generate(
        self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams, *, adapter: str | None = None
    ) -> list[Completion]:
        """Queue every conversation and wait for their completions, in order.

        Args:
            conversations: The chats to complete.
            sampling: The sampling settings for all of them.
            adapter: The LoRA adapter to generate with; ``None``: the backend's default.
        """
        return list(await asyncio.gather(*(self.submit(c, sampling, adapter=adapter) for c in conversations)))

    async def submit(
        self, conversation: Sequence[Message], sampling: SamplingParams, *, adapter: str | None = None
    ) -> Completion:
        """Queue one conversation and wait for its completion (possibly ``finish_reason="error"``)."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None or state.worker is None or state.worker.done():
            state = _LoopState(asyncio.Queue())
            state.worker = loop.create_task(self._run(state), name="autodidact-microbatcher")
            self._loops[loop] = state
        future: asyncio.Future[Completion] = loop.create_future()
        state.queue.put_nowait(_Pending(conversation, sampling, adapter, future))
        return await future

    async def aclose(self) -> None:
        """Stop the workers; requests still waiting get an error completion."""
        current = asyncio.get_running_loop()
        for loop, state in list(self._loops.items()):
            tasks = [t for t in (state.worker, *state.running) if t is not None]
            if loop is current:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                while not state.queue.empty():
                    self._resolve(
                        [state.queue.get_nowait()], [self._error("the model is shutting down; send the request again")]
                    )
            elif not loop.is_closed():
                for t in tasks:
                    loop.call_soon_threadsafe(t.cancel)
        self._loops.clear()

    def current_window_s(self) -> float:
        """How long the next batch's first request waits for company, in seconds."""
        if self._mean_call_s is None:
            return self.window_s
        return min(self.window_s, self.window_fraction * self._mean_call_s)

    async def _run(self, state: _LoopState) -> None:
        queue = state.queue
        slots = asyncio.Semaphore(self.max_inflight)
        while True:
            await slots.acquire()
            batch = [await queue.get()]
            window = self.current_window_s()
            if window > 0 and len(batch) < self.max_batch_size:
                # A plain sleep, not wait_for(queue.get()): on 3.11 a timed-out wait_for can drop an item.
                await asyncio.sleep(window)
            while len(batch) < self.max_batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            task = asyncio.create_task(self._dispatch(batch))
            state.running.add(task)
            task.add_done_callback(state.running.discard)
            task.add_done_callback(lambda _t: slots.release())

    async def _dispatch(self, batch: list[_Pending]) -> None:
        groups: dict[tuple[SamplingParams, str | None], list[_Pending]] = {}
        for p in batch:
            groups.setdefault((p.sampling, p.adapter), []).append(p)
        try:
            for (sampling, adapter), group in groups.items():  # one after another: they share the model
                await self._call(sampling, adapter, group)
        except asyncio.CancelledError:
            self._resolve(batch, [self._error("the model is shutting down; send the request again")] * len(batch))
            raise

    async def _call(self, sampling: SamplingParams, adapter: str | None, group: list[_Pending]) -> None:
        start = time.perf_counter()
        self.batch_sizes.append(len(group))
        conversations = [p.conversation for p in group]
        try:
            if adapter is None:
                results = await self._fn(conversations, sampling)
            else:
                results = await self._fn(conversations, sampling, adapter=adapter)
            took = time.perf_counter() - start
            mean = self._mean_call_s
            self._mean_call_s = took if mean is None else 0.8 * mean + 0.2 * took
            if len(results) != len(group):
                raise RuntimeError(f"generate returned {len(results)} completions for {len(group)} conversations")
        except Exception as e:
            results = [self._error(f"backend {self.name} failed: {type(e).__name__}: {e}")] * len(group)
        self._resolve(group, results)

    def _error(self, message: str) -> Completion:
        return Completion(text="", finish_reason="error", error=message, model=self.name)

    @staticmethod
    def _resolve(group: Sequence[_Pending], results: Sequence[Completion]) -> None:
        for p, c in zip(group, results, strict=True):
            if not p.future.done():  # the caller may have gone away
                p.future.set_result(c)
