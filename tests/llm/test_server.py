"""`autodidact serve` (agents.llm.server): the OpenAI-compatible app over real HTTP on 127.0.0.1.

A scripted ChatModel pins down the server's logic (response shape, error mapping,
batching through a MicroBatcher, adapter dispatch); the slow tests put the real embedded model
behind the server, the last one hot-swapping real LoRA adapters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from agents.llm.batching import MicroBatcher
from agents.llm.openai_compat import OpenAIChatModel
from agents.llm.server import running_server, serving
from autodidact.errors import ModelLoadError, ModelServerError
from autodidact.types import Completion, Message, SamplingParams


class ScriptedChatModel:
    """A ChatModel whose answers are a function of the last message; records every batch.

    The last message's content steers it: ``LENGTH`` → finish_reason "length", ``FAIL`` → an
    error completion, ``RAISE`` → ``generate`` raises. Otherwise it echoes the content.
    """

    def __init__(self, name: str = "scripted", delay_s: float = 0.0) -> None:
        self.name = name
        self.delay_s = delay_s
        self.batches: list[tuple[int, SamplingParams]] = []

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        self.batches.append((len(conversations), sampling))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        out = []
        for conv in conversations:
            content = conv[-1].content
            if content == "RAISE":
                raise RuntimeError("scripted crash")
            if content == "FAIL":
                out.append(Completion(text="", finish_reason="error", error="scripted failure: out of memory"))
                continue
            out.append(
                Completion(
                    text=f"echo: {content}",
                    token_ids=(11, 12, 13),
                    logprobs=(-0.5, -0.25, -0.125) if sampling.logprobs else None,
                    finish_reason="length" if content == "LENGTH" else "stop",
                    prompt_tokens=7,
                    model=self.name,
                )
            )
        return out

    async def aclose(self) -> None:
        pass


class Batched:
    """A scripted model behind a MicroBatcher, as the in-process backends are."""

    def __init__(self, inner: ScriptedChatModel, **options: float) -> None:
        self.name = inner.name
        self.batcher = MicroBatcher(inner.generate, name=inner.name, **options)  # type: ignore[arg-type]

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        return await self.batcher.generate(conversations, sampling)

    async def aclose(self) -> None:
        await self.batcher.aclose()


class AdapterChatModel(ScriptedChatModel):
    """A scripted model that also loads adapters (as the transformers backend does) and
    records which adapter each ``generate`` call asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []
        self.adapters: list[str | None] = []

    async def generate(
        self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams, *, adapter: str | None = None
    ) -> list[Completion]:
        assert adapter is None or adapter in self.loaded, f"generate asked for {adapter!r}, not loaded"
        self.adapters.append(adapter)
        out = await super().generate(conversations, sampling)
        return [c.model_copy(update={"text": f"{c.text} [{adapter}]"}) for c in out]

    async def load_adapter(self, name: str, path: str) -> None:
        if path == "/missing":
            raise ModelLoadError(f"adapter dir {path!r} has no adapter_config.json")
        self.loaded.append(name)

    def unload_adapter(self, name: str) -> None:  # a blocking one: the server runs it in a thread
        self.loaded.remove(name)


def chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": "scripted", "messages": [{"role": "user", "content": content}], **extra}


async def test_health_and_models() -> None:
    with running_server(ScriptedChatModel(), "scripted") as base:
        async with httpx.AsyncClient() as http:
            assert (await http.get(base.removesuffix("/v1") + "/health")).json() == {"status": "ok"}
            models = (await http.get(base + "/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["scripted"]


async def test_chat_completion_shape_usage_logprobs_and_token_ids() -> None:
    with running_server(ScriptedChatModel(), "scripted") as base:
        async with httpx.AsyncClient() as http:
            plain = (await http.post(base + "/chat/completions", json=chat("hi"))).json()
            full = (
                await http.post(base + "/chat/completions", json=chat("hi", logprobs=True, return_token_ids=True))
            ).json()
    assert plain["object"] == "chat.completion"
    assert plain["model"] == "scripted"
    choice = plain["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "echo: hi"}
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None and "token_ids" not in choice
    assert plain["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}

    choice = full["choices"][0]
    assert [t["logprob"] for t in choice["logprobs"]["content"]] == [-0.5, -0.25, -0.125]
    assert [t["token"] for t in choice["logprobs"]["content"]] == ["token_id:11", "token_id:12", "token_id:13"]
    assert choice["token_ids"] == [11, 12, 13]


async def test_sampling_settings_reach_the_model() -> None:
    model = ScriptedChatModel()
    body = chat("hi", temperature=0.7, top_p=0.9, max_tokens=12, stop="###", seed=3, logprobs=True)
    with running_server(model, "scripted") as base:
        async with httpx.AsyncClient() as http:
            assert (await http.post(base + "/chat/completions", json=body)).status_code == 200
    [(_, sampling)] = model.batches
    assert sampling == SamplingParams(temperature=0.7, top_p=0.9, max_tokens=12, stop=("###",), seed=3, logprobs=True)


async def test_concurrent_requests_reach_a_batching_backend_together() -> None:
    model = ScriptedChatModel(delay_s=0.05)
    with running_server(Batched(model), "scripted") as base:
        async with httpx.AsyncClient() as http:
            replies = await asyncio.gather(
                *(http.post(base + "/chat/completions", json=chat(f"q{i}")) for i in range(8))
            )
    texts = [r.json()["choices"][0]["message"]["content"] for r in replies]
    assert texts == [f"echo: q{i}" for i in range(8)]  # each reply went back to its own request
    sizes = [n for n, _ in model.batches]
    assert sum(sizes) == 8
    assert max(sizes) >= 4, f"requests were not batched: batch sizes {sizes}"


async def test_batches_are_grouped_by_sampling_settings() -> None:
    model = ScriptedChatModel()
    with running_server(Batched(model), "scripted") as base:
        async with httpx.AsyncClient() as http:
            await asyncio.gather(
                *(http.post(base + "/chat/completions", json=chat("q", temperature=0.1 * (i % 2))) for i in range(6))
            )
    temps = {s.temperature for _, s in model.batches}
    assert temps == {0.0, 0.1}
    assert sum(n for n, _ in model.batches) == 6


async def test_micro_batcher_respects_max_batch_size() -> None:
    model = ScriptedChatModel()
    batcher = MicroBatcher(model.generate, name=model.name, max_batch_size=3, window_s=0.02)
    conv = (Message(role="user", content="x"),)
    out = await asyncio.gather(*(batcher.submit(conv, SamplingParams()) for _ in range(7)))
    await batcher.aclose()
    assert len(out) == 7 and all(c.text == "echo: x" for c in out)
    assert [n for n, _ in model.batches] == [3, 3, 1]


async def test_micro_batcher_wait_adapts_to_the_model_speed() -> None:
    conv = (Message(role="user", content="x"),)
    fast = MicroBatcher(ScriptedChatModel().generate, window_s=0.05)
    slow = MicroBatcher(ScriptedChatModel(delay_s=0.1).generate, window_s=0.05)
    assert fast.current_window_s() == slow.current_window_s() == 0.05  # before any call: the cap
    await fast.submit(conv, SamplingParams())
    await slow.submit(conv, SamplingParams())
    await fast.aclose()
    await slow.aclose()
    assert fast.current_window_s() < 0.001  # a fast backend is not held up
    assert 0.004 < slow.current_window_s() < 0.01  # 5% of ~0.1 s


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (chat("hi", stream=True), 400, "streaming is not supported"),
        ({"model": "scripted"}, 400, "messages"),
        ({"model": "scripted", "messages": []}, 400, "messages"),
        (chat("hi", temperature=-1), 400, "temperature"),
        ({"model": "scripted", "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
        (chat("hi", n=2), 400, "n=2"),
        ({**chat("hi"), "model": "other"}, 404, "not served here"),
    ],
)
async def test_bad_requests_get_openai_error_json(body: dict[str, object], status: int, needle: str) -> None:
    with running_server(ScriptedChatModel(), "scripted") as base:
        async with httpx.AsyncClient() as http:
            r = await http.post(base + "/chat/completions", json=body)
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["code"] == status
    assert needle in error["message"]


async def test_backend_failures_become_http_500_with_the_reason() -> None:
    with running_server(ScriptedChatModel(), "scripted") as base:
        async with httpx.AsyncClient() as http:
            failed = await http.post(base + "/chat/completions", json=chat("FAIL"))
            crashed = await http.post(base + "/chat/completions", json=chat("RAISE"))
            after = await http.post(base + "/chat/completions", json=chat("still alive?"))
    assert failed.status_code == 500
    assert "scripted failure: out of memory" in failed.json()["error"]["message"]
    assert crashed.status_code == 500
    assert "RuntimeError: scripted crash" in crashed.json()["error"]["message"]
    assert after.status_code == 200


async def test_lora_endpoints_are_501_without_backend_support() -> None:
    with running_server(ScriptedChatModel(), "scripted") as base:
        async with httpx.AsyncClient() as http:
            r = await http.post(base + "/load_lora_adapter", json={"lora_name": "a", "lora_path": "/x"})
    assert r.status_code == 501
    assert "not supported by this backend" in r.json()["error"]["message"]


async def test_lora_endpoints_dispatch_to_the_backend() -> None:
    model = AdapterChatModel()
    hi = [[Message(role="user", content="hi")]]
    with running_server(model, "scripted") as base:
        client = OpenAIChatModel(base_url=base, model="scripted", max_retries=0)
        async with client:
            await client.load_adapter("round-1", "/ckpt/round-1")
            assert model.loaded == ["round-1"]
            assert await client.list_models() == ["scripted", "round-1"]
            [plain] = await client.generate(hi, SamplingParams())
            [tuned] = await client.generate(hi, SamplingParams(), adapter="round-1")
            assert (plain.text, plain.model) == ("echo: hi [None]", "scripted")
            assert (tuned.text, tuned.model) == ("echo: hi [round-1]", "round-1")
            assert model.adapters == [None, "round-1"]  # the served name means the base: no adapter
            await client.unload_adapter("round-1")
            assert model.loaded == []
            assert await client.list_models() == ["scripted"]
            [gone] = await client.generate(hi, SamplingParams(), adapter="round-1")
            assert gone.finish_reason == "error" and gone.error is not None and "404" in gone.error
            assert model.adapters == [None, "round-1"]  # the unloaded adapter's request never reached the model
            async with httpx.AsyncClient() as http:
                missing = await http.post(base + "/load_lora_adapter", json={"lora_name": "b", "lora_path": "/missing"})
                own_name = await http.post(
                    base + "/load_lora_adapter", json={"lora_name": "scripted", "lora_path": "/x"}
                )
    assert missing.status_code == 400
    assert "adapter_config.json" in missing.json()["error"]["message"]
    assert own_name.status_code == 400
    assert "served model's own name" in own_name.json()["error"]["message"]


async def test_micro_batcher_never_mixes_adapters_in_one_call() -> None:
    calls: list[tuple[int, str | None]] = []

    async def fn(
        conversations: Sequence[Sequence[Message]], sampling: SamplingParams, *, adapter: str | None = None
    ) -> list[Completion]:
        calls.append((len(conversations), adapter))
        return [Completion(text=f"{c[-1].content} via {adapter}") for c in conversations]

    batcher = MicroBatcher(fn, window_s=0.05)
    conv = (Message(role="user", content="q"),)
    out = await asyncio.gather(
        batcher.submit(conv, SamplingParams(), adapter="a1"),
        batcher.submit(conv, SamplingParams(), adapter="a2"),
        batcher.submit(conv, SamplingParams()),
        batcher.submit(conv, SamplingParams(), adapter="a1"),
    )
    await batcher.aclose()
    assert [c.text for c in out] == ["q via a1", "q via a2", "q via None", "q via a1"]
    assert sorted(calls, key=lambda c: c[1] or "") == [(1, None), (2, "a1"), (1, "a2")]  # one call per adapter


async def test_serving_on_the_current_loop() -> None:
    async with serving(ScriptedChatModel(), "scripted") as base, OpenAIChatModel(base_url=base) as client:
        [c] = await client.generate([[Message(role="user", content="same loop")]], SamplingParams())
    assert c.text == "echo: same loop"


@pytest.mark.slow
async def test_embedded_model_behind_the_server(embedded_model: object) -> None:
    start = time.perf_counter()
    with running_server(embedded_model, "embedded") as base:  # type: ignore[arg-type]
        async with OpenAIChatModel(base_url=base, timeout_s=120, max_retries=0) as client:
            convs = [[Message(role="user", content=q)] for q in ("What is 2+2?", "Name a colour.")]
            out = await client.generate(convs, SamplingParams(max_tokens=16))
    for c in out:
        assert c.finish_reason in ("stop", "length"), c.error
        assert c.text.strip()
        assert c.token_ids and c.logprobs and len(c.token_ids) == len(c.logprobs)
        assert all(lp <= 0 for lp in c.logprobs)
        assert c.prompt_tokens and c.prompt_tokens > 0
        assert c.model == "embedded"
    assert time.perf_counter() - start < 120


async def test_micro_batcher_serves_two_event_loops_at_once() -> None:
    # The CLI's loop and a server thread's loop may share one in-process model.
    import threading

    model = ScriptedChatModel(delay_s=0.01)
    batcher = MicroBatcher(model.generate, name=model.name, window_s=0.01)
    conv = (Message(role="user", content="x"),)
    from_thread: list[Completion] = []
    t = threading.Thread(
        target=lambda: from_thread.extend(
            asyncio.run(batcher.generate([conv] * 5, SamplingParams()))  # a loop that then closes
        )
    )
    t.start()
    here = await batcher.generate([conv] * 5, SamplingParams())
    t.join(timeout=10)
    assert [c.text for c in here + from_thread] == ["echo: x"] * 10
    await batcher.aclose()  # the thread's loop is closed by now: nothing to cancel there, no error
    assert (await batcher.generate([conv], SamplingParams()))[0].text == "echo: x"  # usable again
    await batcher.aclose()


@pytest.mark.slow
async def test_embedded_model_hot_swaps_lora_adapters(
    embedded_model: object, lora_adapters: tuple[Path, Path], tmp_path: Path
) -> None:
    from peft import PeftModel

    from agents.llm.hf_local import TransformersChatModel

    assert isinstance(embedded_model, TransformersChatModel)
    model_before = embedded_model.model
    grads_before = {n: p.requires_grad for n, p in model_before.named_parameters()}
    conv = [[Message(role="user", content="Name a colour.")]]
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    try:
        async with (
            serving(embedded_model, "embedded") as base_url,
            OpenAIChatModel(base_url=base_url, model="embedded", max_retries=0, timeout_s=120) as client,
        ):
            [start] = await client.generate(conv, greedy)
            [direct] = await embedded_model.generate(conv, greedy)
            assert start.finish_reason in ("stop", "length"), start.error
            assert start.token_ids == direct.token_ids  # the server is a window onto the model

            await client.load_adapter("a1", str(lora_adapters[0]))
            assert await client.list_models() == ["embedded", "a1"]
            [tuned] = await client.generate(conv, greedy, adapter="a1")
            [tuned_direct] = await embedded_model.generate(conv, greedy, adapter="a1")
            assert tuned.finish_reason in ("stop", "length"), tuned.error
            assert tuned.model == "a1"
            assert tuned.token_ids != start.token_ids, "the adapter did not change the output"
            assert tuned.token_ids == tuned_direct.token_ids
            [plain] = await client.generate(conv, greedy)
            assert plain.token_ids == start.token_ids  # the base is untouched while a1 is loaded
            # Concurrent base and a1 requests: batched per adapter, each gets its own output.
            both = await asyncio.gather(client.generate(conv, greedy), client.generate(conv, greedy, adapter="a1"))
            assert [b.token_ids for [b] in both] == [start.token_ids, tuned.token_ids]

            await client.unload_adapter("a1")
            assert await client.list_models() == ["embedded"]
            [gone] = await client.generate(conv, greedy, adapter="a1")
            assert gone.finish_reason == "error" and gone.error is not None and "404" in gone.error
            [end] = await client.generate(conv, greedy)
            assert end.token_ids == start.token_ids

            (tmp_path / "not-an-adapter").mkdir()
            with pytest.raises(ModelServerError, match=r"adapter_config\.json"):
                await client.load_adapter("a2", str(tmp_path / "not-an-adapter"))
    finally:
        for name in list(embedded_model.loaded_adapters):  # the session's model must stay as it was
            await embedded_model.unload_adapter(name)
    assert embedded_model.model is model_before and not isinstance(embedded_model.model, PeftModel)
    assert {n: p.requires_grad for n, p in embedded_model.model.named_parameters()} == grads_before
