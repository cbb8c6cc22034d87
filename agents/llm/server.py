"""``autodidact serve``: an OpenAI-compatible HTTP server over any :class:`~agents.llm.base.ChatModel`.

This module owns the server side of the OpenAI protocol: :func:`create_app` builds a FastAPI
app, :func:`serve` runs it with uvicorn, and :func:`running_server` / :func:`serving` run one
in the background on a free port of 127.0.0.1 (for tests, benchmarks and notebooks).

Routes:

* ``POST /v1/chat/completions`` — non-streaming. Returns ``usage``; ``choices[0].logprobs.content``
  when ``logprobs`` is asked for; ``choices[0].token_ids`` when ``return_token_ids`` is set (as
  vLLM does). Tokens in ``logprobs.content`` are written ``"token_id:<id>"`` (vLLM's
  ``return_tokens_as_token_ids`` form), since a ChatModel returns ids, not token strings.
* ``GET /v1/models`` (the served name, then each loaded adapter), ``GET /health``.
* ``POST /v1/load_lora_adapter`` ``{"lora_name", "lora_path"}`` / ``POST /v1/unload_lora_adapter``
  ``{"lora_name"}`` (vLLM's shape), dispatched to the model's ``load_adapter`` /
  ``unload_adapter`` when it has them, else 501. An adapter that cannot be loaded (no
  ``adapter_config.json``, a name in use, another base model) is a 400.

**LoRA hot-swap**: a request whose ``model`` is a loaded adapter's name is generated with that
adapter (``generate(..., adapter=name)``); the served name, or no ``model``, gets the model as
it was started (the base, or the adapter it was built with). The transformers backend keeps
every loaded adapter next to the base weights and batches requests per adapter, so one
server answers for several adapters at once without reloading anything.

Errors use OpenAI's shape ``{"error": {"message", "type", "code"}}``: a malformed request is a
400, an unknown model a 404, a completion that failed in the backend a 500 with its message.

**Batching** is the backend's job: each request becomes one ``generate`` call, made
concurrently with the others, and in-process backends (transformers, the vLLM engine) merge
concurrent calls into batches with :class:`~agents.llm.batching.MicroBatcher`.

Example:
    >>> from agents.llm.base import TransformersConfig
    >>> serve(TransformersConfig().build(), "embedded", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from agents.llm.base import ChatModel
from autodidact.errors import AutodidactError, ConfigError, ModelLoadError
from autodidact.types import Completion, Message, SamplingParams

__all__ = ["create_app", "running_app", "running_server", "serve", "serving"]

_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 500: "server_error", 501: "not_implemented"}


# --- request schema -----------------------------------------------------------------------


class _ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """The part of OpenAI's chat-completions request this server reads; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[_ChatMessage] = Field(min_length=1)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    logprobs: bool = False
    top_logprobs: int | None = None
    return_token_ids: bool = False


class _LoadAdapterRequest(BaseModel):
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)


class _UnloadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    lora_name: str = Field(min_length=1)


class _APIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": _ERROR_TYPES.get(status, "error"), "param": None, "code": status}},
        status_code=status,
    )


def _messages(req: ChatCompletionRequest) -> tuple[Message, ...]:
    out = []
    for i, m in enumerate(req.messages):
        role = "system" if m.role == "developer" else m.role
        if role not in ("system", "user", "assistant", "tool"):
            raise _APIError(400, f"messages[{i}].role is {m.role!r}; use system, user, assistant or tool")
        if isinstance(m.content, list):
            parts = []
            for part in m.content:
                if part.get("type") != "text":
                    raise _APIError(
                        400, f"messages[{i}] has a {part.get('type')!r} part; only text parts are supported"
                    )
                parts.append(str(part.get("text", "")))
            content = "".join(parts)
        else:
            content = m.content or ""
        out.append(Message(role=role, content=content))  # type: ignore[arg-type]  # role checked above
    return tuple(out)


def _sampling(req: ChatCompletionRequest, default_max_tokens: int) -> SamplingParams:
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    try:
        return SamplingParams(
            temperature=1.0 if req.temperature is None else req.temperature,  # OpenAI's default
            top_p=1.0 if req.top_p is None else req.top_p,
            max_tokens=req.max_completion_tokens or req.max_tokens or default_max_tokens,
            stop=stop,
            seed=req.seed,
            logprobs=req.logprobs,
        )
    except ValidationError as e:
        raise _APIError(400, "invalid sampling settings: " + _validation_message(e.errors())) from None


def _validation_message(errors: Sequence[Any]) -> str:
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _response(c: Completion, model: str, req: ChatCompletionRequest) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": c.text},
        "finish_reason": c.finish_reason,
        "logprobs": None,
    }
    if req.logprobs and c.logprobs is not None:
        ids: Sequence[int | None] = c.token_ids if c.token_ids is not None else [None] * len(c.logprobs)
        choice["logprobs"] = {
            "content": [
                {"token": f"token_id:{t}" if t is not None else "", "logprob": lp, "bytes": None, "top_logprobs": []}
                for t, lp in zip(ids, c.logprobs, strict=False)
            ]
        }
    if req.return_token_ids:
        choice["token_ids"] = list(c.token_ids) if c.token_ids is not None else None
    completion_tokens = len(c.token_ids) if c.token_ids is not None else len(c.logprobs or ())
    prompt_tokens = c.prompt_tokens or 0
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


# --- the app ------------------------------------------------------------------------------


async def _call(fn: Callable[..., Any], *args: Any) -> None:
    # A backend's adapter methods may be async or blocking; a blocking one runs in a thread.
    if inspect.iscoroutinefunction(fn):
        await fn(*args)
    else:
        result = await asyncio.to_thread(fn, *args)
        if inspect.isawaitable(result):
            await result


def create_app(
    model: ChatModel,
    served_name: str,
    *,
    default_max_tokens: int = 512,
) -> FastAPI:
    """Build the OpenAI-compatible app serving ``model`` under the name ``served_name``.

    The caller keeps ownership of ``model`` (the app does not close it).

    Args:
        model: Any ChatModel (transformers, vLLM engine, another server via the OpenAI backend).
        served_name: The model id clients send and ``/v1/models`` lists.
        default_max_tokens: ``max_tokens`` for requests that set none.

    Returns:
        A FastAPI app; run it with :func:`serve`, :func:`running_server` or any ASGI server.

    Example:
        >>> app = create_app(model, "policy")  # doctest: +SKIP
        >>> # uvicorn.run(app, port=8000)
    """
    adapters: list[str] = []  # names loaded through /v1/load_lora_adapter, listed and accepted as models

    app = FastAPI(title="autodidact serve")

    @app.exception_handler(_APIError)
    async def _api_error(_r: Request, e: _APIError) -> JSONResponse:
        return _error_response(e.status, e.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, e: RequestValidationError) -> JSONResponse:
        return _error_response(400, "invalid request: " + _validation_message(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_r: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error_response(e.status_code, str(e.detail))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        created = int(time.time())
        data = [{"id": served_name, "object": "model", "created": created, "owned_by": "autodidact"}]
        data += [
            {"id": a, "object": "model", "created": created, "owned_by": "autodidact", "parent": served_name}
            for a in adapters
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest) -> JSONResponse:
        if req.stream:
            raise _APIError(400, "streaming is not supported yet by autodidact serve; send stream: false")
        if req.n != 1:
            raise _APIError(400, f"n={req.n} is not supported; send n: 1 and repeat the request for more samples")
        if req.model and req.model != served_name and req.model not in adapters:
            known = ", ".join([served_name, *adapters])
            raise _APIError(404, f"model {req.model!r} is not served here; this server serves: {known}")
        conversation, sampling = _messages(req), _sampling(req, default_max_tokens)
        # Only adapter requests pass adapter=: a backend without adapters keeps its plain generate.
        options = {"adapter": req.model} if req.model in adapters else {}
        try:
            [completion] = await model.generate([conversation], sampling, **options)
        except Exception as e:  # a backend that breaks its contract still gets an OpenAI-shaped 500
            raise _APIError(500, f"backend {model.name} failed: {type(e).__name__}: {e}") from None
        if completion.finish_reason == "error":
            raise _APIError(500, completion.error or "the model failed without saying why; see the server's log")
        return JSONResponse(_response(completion, req.model or served_name, req))

    async def _adapter_call(method: str, args: tuple[str, ...], what: str) -> None:
        fn = getattr(model, method, None)
        if fn is None:
            raise _APIError(501, f"{what} is not supported by this backend ({model.name})")
        try:
            await _call(fn, *args)
        except (ModelLoadError, ConfigError, ValueError, FileNotFoundError, KeyError) as e:
            raise _APIError(400, f"{what} failed: {e}") from None
        except AutodidactError as e:
            raise _APIError(500, f"{what} failed: {e}") from None

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(req: _LoadAdapterRequest) -> PlainTextResponse:
        if req.lora_name == served_name:
            raise _APIError(400, f"{served_name!r} is the served model's own name; load the adapter under another name")
        await _adapter_call("load_adapter", (req.lora_name, req.lora_path), f"loading LoRA adapter {req.lora_name!r}")
        if req.lora_name not in adapters:
            adapters.append(req.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(req: _UnloadAdapterRequest) -> PlainTextResponse:
        await _adapter_call("unload_adapter", (req.lora_name,), f"unloading LoRA adapter {req.lora_name!r}")
        if req.lora_name in adapters:
            adapters.remove(req.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")

    return app


def serve(model: ChatModel, served_name: str, host: str = "127.0.0.1", port: int = 8000, **app_options: Any) -> None:
    """Serve ``model`` over HTTP until interrupted (what ``autodidact serve`` runs).

    Args:
        model: The ChatModel to serve; the caller closes it afterwards.
        served_name: The model id clients send.
        host: Interface to listen on; keep 127.0.0.1 unless the port is firewalled.
        port: TCP port.
        **app_options: Passed to :func:`create_app` (``default_max_tokens``).

    Example:
        >>> serve(TransformersConfig().build(), "embedded", port=8000)  # doctest: +SKIP
    """
    import uvicorn

    uvicorn.run(create_app(model, served_name, **app_options), host=host, port=port, log_level="info")


# --- background servers for tests, benchmarks and notebooks ----------------------------------

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def _bound_socket(host: str) -> socket.socket:
    # Binding port 0 ourselves and handing the socket to uvicorn avoids a find-then-bind race.
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and
    # without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def _uvicorn_server(app: ASGIApp, host: str) -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        # A background server must not take over the process's SIGINT/SIGTERM handlers.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        app, host=host, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
    )
    return _Server(config)


@contextlib.contextmanager
def running_app(app: ASGIApp, host: str = "127.0.0.1", startup_timeout_s: float = 10.0) -> Iterator[str]:
    """Run any ASGI app with uvicorn in a background thread on a free port; yield its root URL.

    Args:
        app: The ASGI app (a FastAPI or Starlette app).
        host: Interface to bind; 127.0.0.1 keeps it local.
        startup_timeout_s: How long to wait for the server to accept connections.

    Yields:
        ``http://<host>:<port>``, without a trailing slash.

    Example:
        >>> with running_app(app) as url:  # doctest: +SKIP
        ...     httpx.get(url + "/health")
    """
    sock = _bound_socket(host)
    port = sock.getsockname()[1]
    server = _uvicorn_server(app, host)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test server on {host}:{port} did not start within {startup_timeout_s:g}s")
            time.sleep(0.005)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()


@contextlib.contextmanager
def running_server(model: ChatModel, served_name: str, **app_options: Any) -> Iterator[str]:
    """Serve ``model`` in a background thread on a free port of 127.0.0.1; yield the ``/v1`` base URL.

    The model's ``generate`` then runs on the server thread's event loop, not the caller's.
    For a model bound to the caller's loop, use :func:`serving` instead.

    Args:
        model: The ChatModel to serve.
        served_name: The model id clients send.
        **app_options: Passed to :func:`create_app`.

    Yields:
        ``http://127.0.0.1:<port>/v1``, ready for :class:`~agents.llm.openai_compat.OpenAIChatModel`.

    Example:
        >>> with running_server(model, "fake") as base_url:  # doctest: +SKIP
        ...     client = OpenAIChatModel(base_url=base_url, model="fake")
    """
    with running_app(create_app(model, served_name, **app_options)) as url:
        yield url + "/v1"


@contextlib.asynccontextmanager
async def serving(
    model: ChatModel, served_name: str, host: str = "127.0.0.1", **app_options: Any
) -> AsyncIterator[str]:
    """Serve ``model`` on the current event loop on a free port; yield the ``/v1`` base URL.

    Args:
        model: The ChatModel to serve (its ``generate`` runs on this loop).
        served_name: The model id clients send.
        host: Interface to bind.
        **app_options: Passed to :func:`create_app`.

    Yields:
        ``http://<host>:<port>/v1``.

    Example:
        >>> async with serving(model, "embedded") as base_url:  # doctest: +SKIP
        ...     ...
    """
    sock = _bound_socket(host)
    port = sock.getsockname()[1]
    server = _uvicorn_server(create_app(model, served_name, **app_options), host)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises the startup error
                raise RuntimeError(f"the server on {host}:{port} stopped during startup")
            await asyncio.sleep(0.005)
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=5)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
        sock.close()
