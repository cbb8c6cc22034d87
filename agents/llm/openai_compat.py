"""The OpenAI-compatible HTTP backend: any server that speaks ``/v1/chat/completions``.

This module owns :class:`OpenAIChatModel`, the :class:`~agents.llm.base.ChatModel` that talks
to a vLLM or SGLang server, Ollama, llama.cpp's server, a hosted API, or ``autodidact serve``
over :mod:`agents.llm.http` (a lean, strict HTTP/1.1 client: at 64 requests in flight
httpx's own CPU had bounded the rollout rate; no proxies). One conversation is one request; a
batch is sent concurrently, at most ``concurrency`` requests in flight per model object.

What it does for a caller:

* **Retries** on 429, 5xx, connection errors and timeouts, with exponential backoff and jitter
  (``backoff_s`` doubling each retry), honouring ``Retry-After`` (up to 60 s). Other 4xx are
  not retried. A conversation that still fails comes back as a completion with
  ``finish_reason="error"`` and an ``error`` that says what happened and what to do.
* **Logprobs and token ids** when the server offers them: it asks for ``logprobs: true`` and,
  as a vLLM extra (vLLM >= 0.10.2), ``return_token_ids: true``. A server that rejects either
  field with a 400 naming it is asked again without it, and the model object remembers.
* **Model discovery**: an empty ``model`` means the first id of ``GET /v1/models``.
* **Dynamic LoRA** on a vLLM server or ``autodidact serve`` (:meth:`OpenAIChatModel.load_adapter`);
  ``generate(..., adapter=name)`` sends ``name`` as the request's ``model``.

Example:
    >>> from agents.llm.base import OpenAIConfig
    >>> m = OpenAIChatModel(OpenAIConfig(base_url="http://127.0.0.1:8000/v1", model="policy"))
    >>> m.name
    'openai:policy'
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from agents.llm.base import OpenAIConfig
from agents.llm.http import HTTPClient, HTTPTransportError, Response, ResponseTooLargeError
from autodidact.errors import ConfigError, ModelServerError
from autodidact.types import Completion, Message, SamplingParams

# Fields a plain OpenAI-compatible server may reject; dropped (and remembered) on a 400 naming them.
_OPTIONAL_FIELDS = ("logprobs", "return_token_ids")
_MAX_RETRY_AFTER_S = 60.0
_EXCERPT_CHARS = 300


@dataclass(frozen=True)
class _Failure:
    """Why a request finally failed: the message for the caller and the attempts made."""

    message: str
    attempts: int


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "…"


def _error_text(resp: Response) -> str:
    """The message of an error response: OpenAI's ``{"error": {"message"}}``, vLLM's older
    ``{"message"}``, FastAPI's ``{"detail"}``, or else the raw body."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        for key in ("error", "message", "detail"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return resp.text


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def _normalize_base_url(url: str) -> str:
    # "http://host:8000" is almost always meant as "http://host:8000/v1"; any explicit path is kept.
    url = url.rstrip("/")
    if urlsplit(url).path in ("", "/"):
        url += "/v1"
    return url


def _retry_after_s(headers: dict[str, str]) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


def _proxy_set() -> bool:
    return any(os.environ.get(v) for v in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"))


def _finish_reason(raw: Any) -> Literal["stop", "length"]:
    # OpenAI: stop | length | tool_calls | content_filter; vLLM and others add "eos", "abort", None.
    return "length" if raw == "length" else "stop"


class OpenAIChatModel:
    """A :class:`~agents.llm.base.ChatModel` over an OpenAI-compatible chat-completions server.

    Build it from an :class:`~agents.llm.base.OpenAIConfig` or from its fields as keywords
    (which is how the registry makes it). Use ``async with`` or call :meth:`aclose` to close
    the connection pool. A base URL without a path gets ``/v1`` appended.

    Example:
        >>> model = OpenAIChatModel(base_url="http://127.0.0.1:8000/v1")  # doctest: +SKIP
        >>> [c] = await model.generate([[Message(role="user", content="Hi")]], SamplingParams())  # doctest: +SKIP
    """

    def __init__(self, config: OpenAIConfig | None = None, /, **fields: Any) -> None:
        """Keep the config; nothing is contacted until the first request.

        Args:
            config: The backend config; when omitted, ``fields`` build one.
            **fields: :class:`~agents.llm.base.OpenAIConfig` fields (only without ``config``).
        """
        if config is None:
            config = OpenAIConfig(**fields)
        elif fields:
            raise TypeError("pass either an OpenAIConfig or its fields as keywords, not both")
        self.config = config
        self.base_url = _normalize_base_url(config.base_url)
        self.model = config.model
        self.name = f"openai:{self.model or '?'}"
        self._disabled: set[str] = set()  # optional fields this server rejected
        self._client: HTTPClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._discover_lock: asyncio.Lock | None = None

    async def __aenter__(self) -> OpenAIChatModel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; the object can still be used afterwards (it reopens)."""
        client, self._client = self._client, None
        # A pool made on another event loop (one asyncio.run to generate, another to close) cannot
        # be closed from here: its connections went with their loop.
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.aclose()

    # --- plumbing -----------------------------------------------------------------------

    def _http(self) -> HTTPClient:
        """The connection pool (``concurrency`` connections). A pool and its asyncio primitives
        belong to one event loop; a new loop (a second asyncio.run) gets new ones rather than
        failing on the old loop's connections."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            headers = {}
            key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
            if key:
                headers["Authorization"] = f"Bearer {key}"
            try:
                self._client = HTTPClient(
                    self.base_url,
                    max_connections=self.config.concurrency,
                    headers=headers,
                    max_body_bytes=int(self.config.max_response_mb * 2**20),
                )
            except ValueError as e:  # the message never holds the key itself
                where = f"${self.config.api_key_env}" if key else "base_url"
                raise ConfigError(f"cannot send requests to {self.base_url}: {e}; check {where}") from None
            self._client_loop = loop
            self._semaphore = asyncio.Semaphore(self.config.concurrency)
            self._discover_lock = asyncio.Lock()
        return self._client

    def _delay_s(self, retry: int) -> float:
        """Backoff before retry number ``retry`` (1-based): doubling, with ±25% jitter."""
        return self.config.backoff_s * 2 ** (retry - 1) * random.uniform(0.75, 1.25)

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | _Failure:
        """Send one request with retries; the parsed JSON body, or why it failed.

        ``body`` is mutated when the server rejects an optional field (the field is removed).
        Only model listings and completions come here: neither changes the server's state, so
        either may be sent again (on a kept-alive connection found closed, or as a retry).
        """
        client = self._http()
        url = f"{self.base_url}{path}"
        attempts = 0
        retry = 0
        while True:
            attempts += 1
            wait: float | None = None
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    resp = await client.request(method, path, body, idempotent=True)
            except ResponseTooLargeError as e:  # the same request would get the same answer
                return _Failure(f"model server {url}: {e}", attempts)
            except TimeoutError:
                problem = (
                    f"model server {url} did not answer within {self.config.timeout_s:g}s after {_attempts(attempts)}; "
                    "it may be overloaded or the answer too long: raise timeout_s, or lower concurrency or max_tokens"
                )
            except HTTPTransportError as e:
                problem = (
                    f"cannot reach model server {url} after {_attempts(attempts)} ({type(e).__name__}: {e}); "
                    "is the server running? check base_url, or start one with `autodidact serve`"
                    + ("; note that HTTP(S)_PROXY is not used by this client" if _proxy_set() else "")
                )
            else:
                if resp.status < 400:
                    try:
                        data = resp.json()
                    except ValueError:
                        return _Failure(
                            f"model server {url} answered {resp.status} with a body that is not JSON: "
                            f"{_excerpt(resp.text)}; is base_url an OpenAI-compatible endpoint (usually ending in /v1)?",
                            attempts,
                        )
                    if not isinstance(data, dict):
                        return _Failure(
                            f"model server {url} answered with unexpected JSON: {_excerpt(resp.text)}", attempts
                        )
                    return data
                text = _error_text(resp)
                if resp.status in (400, 422) and body is not None:
                    rejected = [f for f in _OPTIONAL_FIELDS if f in body and f in text.lower()]
                    if rejected:
                        # The server does not know an optional extra: drop it for good and ask again.
                        for f in rejected:
                            body.pop(f, None)
                            self._disabled.add(f)
                        attempts -= 1
                        continue
                if resp.status != 429 and resp.status < 500:
                    return _Failure(self._client_error(url, resp.status, text), attempts)
                problem = f"model server {url} returned {resp.status} after {_attempts(attempts)}: {_excerpt(text)}"
                if resp.status == 429:
                    problem += "; it is rate-limiting: lower concurrency or raise max_retries/backoff_s"
                else:
                    problem += "; check the server's log"
                wait = _retry_after_s(resp.headers)
            if retry >= self.config.max_retries:
                return _Failure(problem, attempts)
            retry += 1
            await asyncio.sleep(wait if wait is not None else self._delay_s(retry))

    def _client_error(self, url: str, status: int, text: str) -> str:
        hint = {
            401: f"the server wants an API key: set ${self.config.api_key_env}",
            403: f"the API key in ${self.config.api_key_env} is not allowed to do this",
            404: f"check base_url (usually ending in /v1) and the model name {self.model!r} (see GET /v1/models)",
        }.get(status, "the request was rejected and is not retried; fix the request or the sampling settings")
        return f"model server {url} returned {status}: {_excerpt(text)}; {hint}"

    async def _ensure_model(self) -> str | _Failure:
        """The model name to send: the configured one, or the first of ``GET /v1/models``."""
        if self.model:
            return self.model
        self._http()
        assert self._discover_lock is not None  # set by _http()
        async with self._discover_lock:
            if self.model:
                return self.model
            data = await self._request("GET", "/models")
            if isinstance(data, _Failure):
                return _Failure(
                    f"cannot discover the model name ({data.message}); or set model= explicitly", data.attempts
                )
            ids = [m.get("id") for m in data.get("data") or [] if isinstance(m, dict) and m.get("id")]
            if not ids:
                return _Failure(f"model server {self.base_url}/models lists no models; set model= explicitly", 1)
            self.model = str(ids[0])
            self.name = f"openai:{self.model}"
            return self.model

    def _body(self, model: str, messages: Sequence[Message], sampling: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "n": 1,
            "stream": False,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.logprobs and "logprobs" not in self._disabled:
            body["logprobs"] = True
        if "return_token_ids" not in self._disabled:
            body["return_token_ids"] = True  # vLLM extra: the sampled token ids on the choice
        return body

    def _completion(self, data: dict[str, Any], url: str) -> Completion:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return self._error(f"model server {url} answered without choices: {_excerpt(str(data))}")
        choice = choices[0]
        if choice.get("finish_reason") == "abort":
            return self._error(f"model server {url} aborted the request; check the server's log")
        message = choice.get("message") or {}
        text = message.get("content") or ""
        logprobs: tuple[float, ...] | None = None
        content = (choice.get("logprobs") or {}).get("content")
        if isinstance(content, list) and content:
            logprobs = tuple(float(t.get("logprob", 0.0)) for t in content if isinstance(t, dict))
        token_ids = choice.get("token_ids")
        usage = data.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        return Completion(
            text=text,
            token_ids=tuple(int(t) for t in token_ids) if isinstance(token_ids, list) else None,
            logprobs=logprobs,
            finish_reason=_finish_reason(choice.get("finish_reason")),
            prompt_tokens=int(prompt_tokens) if isinstance(prompt_tokens, int) else None,
            model=str(data.get("model") or self.model),
        )

    def _error(self, message: str) -> Completion:
        return Completion(text="", finish_reason="error", error=message, model=self.model)

    async def _one(self, messages: Sequence[Message], sampling: SamplingParams, adapter: str | None) -> Completion:
        model = adapter or await self._ensure_model()
        if isinstance(model, _Failure):
            return self._error(model.message)
        assert self._semaphore is not None  # set by _http(), called in generate()
        async with self._semaphore:
            data = await self._request("POST", "/chat/completions", self._body(model, messages, sampling))
        if isinstance(data, _Failure):
            return self._error(data.message)
        return self._completion(data, f"{self.base_url}/chat/completions")

    # --- public API -----------------------------------------------------------------------

    async def generate(
        self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams, *, adapter: str | None = None
    ) -> list[Completion]:
        """One completion per conversation, in order; failures as ``finish_reason="error"``.

        Args:
            conversations: The chats to complete; each is sent as one request.
            sampling: Temperature, top_p, max_tokens, stop strings and seed for every request.
            adapter: A LoRA adapter loaded on the server (:meth:`load_adapter`), sent as the
                request's ``model``; ``None``: the configured (or discovered) model.

        Returns:
            One :class:`~autodidact.types.Completion` per conversation. Never raises for a
            server fault: such a conversation has ``finish_reason="error"`` and ``error`` set.

        Example:
            >>> out = await model.generate([[Message(role="user", content="2+2?")]], SamplingParams())  # doctest: +SKIP
            >>> out[0].finish_reason  # doctest: +SKIP
            'stop'
        """
        self._http()
        return list(await asyncio.gather(*(self._one(conv, sampling, adapter) for conv in conversations)))

    async def list_models(self) -> list[str]:
        """The model ids the server lists under ``GET /v1/models``.

        Raises:
            ModelServerError: When the server cannot be reached or answers with an error.
        """
        data = await self._request("GET", "/models")
        if isinstance(data, _Failure):
            raise ModelServerError(data.message)
        return [str(m["id"]) for m in data.get("data") or [] if isinstance(m, dict) and "id" in m]

    async def load_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter into a running server (``POST /v1/load_lora_adapter``).

        ``autodidact serve`` supports it as is; a vLLM server must run with ``--enable-lora`` and
        ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``. ``path`` is read by the server, so it must
        exist on the server's machine. Requests use the adapter when they name it as the model:
        ``generate(..., adapter=name)``, or a model object built with ``model=name``.

        Args:
            name: The adapter's name, used as ``model`` in later requests.
            path: The adapter directory (as the server sees it).

        Raises:
            ModelServerError: When the server does not support it or rejects the adapter.

        Example:
            >>> await model.load_adapter("round-3", "/ckpt/round-3/adapter")  # doctest: +SKIP
        """
        await self._lora_call("load_lora_adapter", {"lora_name": name, "lora_path": path}, f"load adapter {name!r}")

    async def unload_adapter(self, name: str) -> None:
        """Unload a LoRA adapter from a running server (``POST /v1/unload_lora_adapter``).

        Args:
            name: The name it was loaded under.

        Raises:
            ModelServerError: When the server does not support it or does not know the adapter.
        """
        await self._lora_call("unload_lora_adapter", {"lora_name": name}, f"unload adapter {name!r}")

    async def _lora_call(self, endpoint: str, body: dict[str, Any], what: str) -> None:
        client = self._http()
        url = f"{self.base_url}/{endpoint}"
        try:
            resp = await client.request("POST", f"/{endpoint}", body)
        except HTTPTransportError as e:
            raise ModelServerError(f"cannot {what}: model server {url} unreachable ({type(e).__name__}: {e})") from e
        if resp.status in (404, 405):
            raise ModelServerError(
                f"cannot {what}: {url} does not exist ({resp.status}); start vLLM with --enable-lora and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or use a backend that loads adapters"
            )
        if resp.status >= 400:
            raise ModelServerError(
                f"cannot {what}: model server {url} returned {resp.status}: {_excerpt(_error_text(resp))}"
            )
