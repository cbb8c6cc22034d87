"""The OpenAI-compatible backend (agents.llm.openai_compat) over real HTTP on 127.0.0.1.

Round trips go through `autodidact serve` with a scripted model; faults come from a tiny
scripted Starlette server whose every request takes the next step of a script.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agents.llm.base import OpenAIConfig
from agents.llm.openai_compat import OpenAIChatModel
from agents.llm.server import running_app, running_server
from autodidact.errors import ConfigError, ModelServerError
from autodidact.types import Message, SamplingParams
from tests.llm.test_http import echo_forever, handler, running, sized
from tests.llm.test_server import ScriptedChatModel

HI = [Message(role="user", content="hi")]


def ok_body(text: str = "fine", model: str = "m") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


class FaultServer:
    """A scripted chat-completions server. Steps (the last one repeats):

    ``("ok",)``, ``("status", code, text, headers)``, ``("hang", seconds)``,
    ``("reject_field", name)`` (400 naming ``name`` while the body has it, else ok).
    """

    def __init__(self, *script: tuple[Any, ...]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.times: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self.times.append(time.monotonic())
        step = self.script[min(len(self.requests) - 1, len(self.script) - 1)]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if step[0] == "hang":
                await asyncio.sleep(step[1])
                return JSONResponse(ok_body())
            if step[0] == "status":
                return Response(step[2], status_code=step[1], headers=step[3] if len(step) > 3 else None)
            if step[0] == "reject_field" and step[1] in body:
                return JSONResponse({"error": {"message": f"Unrecognized request argument supplied: {step[1]}"}}, 400)
            return JSONResponse(ok_body())
        finally:
            self.in_flight -= 1

    async def _models(self, _request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "discovered", "object": "model"}]})

    async def _lora(self, _request: Request) -> Response:
        return Response("Not Found", status_code=404)

    @contextmanager
    def running(self) -> Iterator[str]:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models),
                Route("/v1/load_lora_adapter", self._lora, methods=["POST"]),
            ]
        )
        with running_app(app) as url:
            yield url + "/v1"


def client(base_url: str, **overrides: Any) -> OpenAIChatModel:
    fields: dict[str, Any] = {"base_url": base_url, "model": "m", "backoff_s": 0.01, "max_retries": 3, **overrides}
    return OpenAIChatModel(OpenAIConfig(**fields))


# --- round trips through `autodidact serve` ------------------------------------------------


async def test_round_trip_through_the_server_keeps_text_logprobs_token_ids_and_finish() -> None:
    with running_server(ScriptedChatModel(), "scripted") as base:
        async with client(base, model="scripted", max_retries=0) as m:
            convs = [[Message(role="user", content=c)] for c in ("hello", "LENGTH", "FAIL")]
            ok, length, failed = await m.generate(convs, SamplingParams(max_tokens=8))
    assert ok.text == "echo: hello"
    assert ok.finish_reason == "stop"
    assert ok.token_ids == (11, 12, 13)
    assert ok.logprobs == (-0.5, -0.25, -0.125)
    assert ok.prompt_tokens == 7
    assert ok.model == "scripted"
    assert length.finish_reason == "length" and length.text == "echo: LENGTH"
    assert failed.finish_reason == "error" and failed.text == ""
    assert failed.error is not None and "scripted failure: out of memory" in failed.error


async def test_model_is_discovered_from_v1_models() -> None:
    with running_server(ScriptedChatModel(), "served-name") as base:
        m = OpenAIChatModel(base_url=base)  # no model: the first of /v1/models
        assert m.name == "openai:?"
        async with m:
            [c] = await m.generate([HI], SamplingParams())
    assert c.model == "served-name" and c.finish_reason == "stop"
    assert m.name == "openai:served-name"


async def test_base_url_without_a_path_gets_v1() -> None:
    with running_server(ScriptedChatModel(), "scripted") as base:
        async with OpenAIChatModel(base_url=base.removesuffix("/v1")) as m:
            [c] = await m.generate([HI], SamplingParams())
    assert c.text == "echo: hi"


async def test_request_body_maps_sampling_and_sends_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTODIDACT_TEST_KEY", "sk-test")
    server = FaultServer(("ok",))
    with server.running() as base:
        async with client(base, api_key_env="AUTODIDACT_TEST_KEY") as m:
            sampling = SamplingParams(temperature=0.5, top_p=0.8, max_tokens=9, stop=("\n\n",), seed=4)
            [c] = await m.generate([HI], sampling)
    assert c.text == "fine" and c.prompt_tokens == 3
    [body] = server.requests
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert {k: body[k] for k in ("model", "temperature", "top_p", "max_tokens", "stop", "seed", "stream")} == {
        "model": "m",
        "temperature": 0.5,
        "top_p": 0.8,
        "max_tokens": 9,
        "stop": ["\n\n"],
        "seed": 4,
        "stream": False,
    }
    assert body["logprobs"] is True and body["return_token_ids"] is True
    assert server.headers[0]["authorization"] == "Bearer sk-test"


# --- injected faults -------------------------------------------------------------------------


async def test_two_500s_then_success_is_retried_to_success() -> None:
    server = FaultServer(("status", 500, "boom"), ("status", 503, "busy"), ("ok",))
    with server.running() as base:
        async with client(base) as m:
            [c] = await m.generate([HI], SamplingParams())
    assert c.finish_reason == "stop" and c.text == "fine"
    assert len(server.requests) == 3


async def test_always_500_gives_an_error_completion_after_all_attempts() -> None:
    server = FaultServer(("status", 500, "internal explosion"))
    with server.running() as base:
        async with client(base, max_retries=3) as m:
            out = await m.generate([HI, HI], SamplingParams())
    assert len(server.requests) == 8  # 2 conversations x (1 + 3 retries)
    for c in out:
        assert c.finish_reason == "error" and c.text == ""
        assert c.error is not None
        assert f"model server {base}/chat/completions returned 500 after 4 attempts" in c.error
        assert "internal explosion" in c.error


async def test_429_honours_retry_after() -> None:
    server = FaultServer(("status", 429, "slow down", {"Retry-After": "1"}), ("ok",))
    with server.running() as base:
        async with client(base, backoff_s=0.001) as m:
            [c] = await m.generate([HI], SamplingParams())
    assert c.finish_reason == "stop"
    assert server.times[1] - server.times[0] >= 0.9  # waited as asked, not backoff_s


async def test_a_hanging_server_times_out_within_bounded_time() -> None:
    server = FaultServer(("hang", 0.8))
    with server.running() as base:
        async with client(base, timeout_s=0.2, max_retries=1) as m:
            start = time.monotonic()
            [c] = await m.generate([HI], SamplingParams())
            elapsed = time.monotonic() - start
    assert c.finish_reason == "error"
    assert c.error is not None and "did not answer within 0.2s after 2 attempts" in c.error
    assert elapsed < 1.0
    assert len(server.requests) == 2


async def test_connection_refused_names_the_url() -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/v1"
    async with client(base, max_retries=2) as m:
        [c] = await m.generate([HI], SamplingParams())
    assert c.finish_reason == "error"
    assert c.error is not None
    assert f"cannot reach model server {base}/chat/completions after 3 attempts" in c.error
    assert "is the server running?" in c.error


async def test_discovery_failure_is_an_error_completion() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with OpenAIChatModel(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0) as m:
        [c] = await m.generate([HI], SamplingParams())
    assert c.finish_reason == "error" and c.error is not None
    assert "cannot discover the model name" in c.error


async def test_400_is_not_retried() -> None:
    server = FaultServer(("status", 400, "max_tokens is too large for this model"))
    with server.running() as base:
        async with client(base) as m:
            [c] = await m.generate([HI], SamplingParams())
    assert len(server.requests) == 1
    assert c.finish_reason == "error" and c.error is not None
    assert "returned 400: max_tokens is too large" in c.error


@pytest.mark.parametrize("field", ["logprobs", "return_token_ids"])
async def test_a_rejected_optional_field_is_dropped_and_remembered(field: str) -> None:
    server = FaultServer(("reject_field", field))
    with server.running() as base:
        async with client(base) as m:
            [first] = await m.generate([HI], SamplingParams())
            [second] = await m.generate([HI], SamplingParams())
    assert first.finish_reason == "stop" and second.finish_reason == "stop"
    assert [field in body for body in server.requests] == [True, False, False]


async def test_concurrency_limit_is_respected() -> None:
    server = FaultServer(("hang", 0.05))
    with server.running() as base:
        async with client(base, concurrency=2) as m:
            out = await m.generate([HI] * 6, SamplingParams())
    assert all(c.finish_reason == "stop" for c in out)
    assert server.max_in_flight == 2


async def test_load_adapter_on_a_server_without_it_raises_a_clear_error() -> None:
    server = FaultServer(("ok",))
    with server.running() as base:
        async with client(base) as m:
            with pytest.raises(ModelServerError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
                await m.load_adapter("a", "/x")
    with running_server(ScriptedChatModel(), "scripted") as base:
        async with client(base) as m:
            with pytest.raises(ModelServerError, match="not supported by this backend"):
                await m.load_adapter("a", "/x")


def test_config_or_fields_but_not_both() -> None:
    assert OpenAIChatModel(base_url="http://h:1/v1", model="x").name == "openai:x"
    with pytest.raises(TypeError):
        OpenAIChatModel(OpenAIConfig(base_url="http://h:1/v1"), model="x")


def test_a_url_with_a_name_asks_for_that_model_on_the_server() -> None:
    from agents.llm.base import OpenAIConfig, resolve_model

    assert resolve_model("http://127.0.0.1:8000/v1#round-1") == OpenAIConfig(
        base_url="http://127.0.0.1:8000/v1", model="round-1"
    )
    assert resolve_model("http://127.0.0.1:8000/v1/") == OpenAIConfig(base_url="http://127.0.0.1:8000/v1", model="")


async def test_a_malformed_answer_is_retried_then_an_error_completion_not_a_crash() -> None:
    bad = b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n{}"
    async with running(handler(bad, then_close=True)) as (server, url):
        [c] = await OpenAIChatModel(base_url=url, model="m", max_retries=1, backoff_s=0).generate(
            [HI], SamplingParams()
        )
    assert c.finish_reason == "error" and c.error is not None
    assert "malformed Content-Length" in c.error and "after 2 attempts" in c.error
    assert server.connections == 2


async def test_an_oversized_answer_is_an_error_completion_and_not_retried() -> None:
    big = sized(b"x" * 2**20 + b"x")
    async with running(handler(big, then_close=True)) as (server, url):
        model = OpenAIChatModel(base_url=url, model="m", max_response_mb=1, max_retries=3, backoff_s=0)
        [c] = await model.generate([HI], SamplingParams())
    assert c.finish_reason == "error" and c.error is not None and "max_body_bytes" in c.error
    assert server.connections == 1


async def test_an_api_key_holding_a_line_break_is_a_config_error_that_does_not_show_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret\r\nX-Evil: 1")
    async with running(echo_forever) as (server, url):
        with pytest.raises(ConfigError, match=r"holds a line break.*check \$OPENAI_API_KEY") as e:
            await OpenAIChatModel(base_url=url, model="m").generate([HI], SamplingParams())
        assert "sk-secret" not in str(e.value) and server.connections == 0


def test_closing_on_another_event_loop_than_the_one_that_generated_works() -> None:
    """One asyncio.run to generate and another to close (benchmarks, scripts) must not raise."""
    with running_server(ScriptedChatModel(), "scripted") as url:
        model = OpenAIChatModel(base_url=url, model="scripted")
        [c] = asyncio.run(model.generate([HI], SamplingParams()))
        assert c.error is None
        asyncio.run(model.aclose())  # raised "Event loop is closed" from the old loop's transports
        [again] = asyncio.run(model.generate([HI], SamplingParams()))  # and it still works afterwards
        assert again.error is None
