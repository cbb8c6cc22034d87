"""The in-process vLLM engine backend (GPU only): :class:`VLLMChatModel`.

A thin adapter from :class:`~agents.llm.base.ChatModel` to ``vllm.LLM.chat``: the whole batch
goes to the engine in one call (vLLM schedules it with continuous batching), run in a worker
thread so the event loop stays free, with ``SamplingParams(logprobs=1)`` so the sampled
tokens' ids and logprobs come back, and a ``LoRARequest`` when an adapter is configured or
named by the request (:meth:`VLLMChatModel.load_adapter` registers one under a name; vLLM
reads its weights on first use).

It is deliberately thin: vLLM cannot be installed on the machines this project is developed
and tested on (no CUDA, and its wheel is too large to carry to the lent GPU machines), so only
its mapping is tested, against a stand-in ``vllm`` module. Most users of vLLM run a vLLM
*server* and reach it through :mod:`agents.llm.openai_compat`, which is tested end to end.
``vllm`` is imported when a model is built, never when this module is imported.

Example:
    >>> from agents.llm.base import VLLMConfig
    >>> model = VLLMConfig(model="Qwen/Qwen2.5-1.5B-Instruct").build()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.llm.base import VLLMConfig
from autodidact.errors import ConfigError, ModelLoadError
from autodidact.types import Completion, Message, SamplingParams


class VLLMChatModel:
    """A :class:`~agents.llm.base.ChatModel` over vLLM's offline engine (``vllm.LLM``).

    Build it from a :class:`~agents.llm.base.VLLMConfig` or from its fields as keywords.
    Loading the model happens here and takes the GPU memory given by
    ``gpu_memory_utilization``; :meth:`aclose` drops the engine.

    Example:
        >>> model = VLLMChatModel(model="/models/policy", enable_lora=True, adapter="/ckpt/r3")  # doctest: +SKIP
        >>> out = await model.generate([[Message(role="user", content="Hi")]], SamplingParams())  # doctest: +SKIP
    """

    def __init__(self, config: VLLMConfig | None = None, /, **fields: Any) -> None:
        """Load the engine.

        Args:
            config: The backend config; when omitted, ``fields`` build one.
            **fields: :class:`~agents.llm.base.VLLMConfig` fields (only without ``config``).

        Raises:
            ModelLoadError: When vLLM is not installed or the engine cannot load the model.
        """
        if config is None:
            config = VLLMConfig(**fields)
        elif fields:
            raise TypeError("pass either a VLLMConfig or its fields as keywords, not both")
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError as e:
            raise ModelLoadError(
                "vLLM is not installed: pip install 'autodidact[gpu]' on a CUDA machine, "
                "or run a vLLM server and use the OpenAI-compatible backend (--model http://host:8000/v1)"
            ) from e
        self.config = config
        self._vllm = vllm
        self._lora_request = LoRARequest
        self._lora_enabled = config.enable_lora or config.adapter is not None
        try:
            self._llm: Any = vllm.LLM(
                model=config.model,
                tensor_parallel_size=config.tensor_parallel_size,
                gpu_memory_utilization=config.gpu_memory_utilization,
                max_model_len=config.max_model_len,
                enable_lora=self._lora_enabled,
            )
        except Exception as e:  # vLLM raises many kinds (ValueError, RuntimeError, OSError…)
            raise ModelLoadError(f"vLLM cannot load {config.model!r}: {type(e).__name__}: {e}") from e
        self._lora = LoRARequest("adapter", 1, config.adapter) if config.adapter else None
        self._loras: dict[str, Any] = {}  # name -> LoRARequest, registered with load_adapter
        self._lora_ids = itertools.count(2)  # vLLM caches adapters by id: a reloaded name gets a new one
        self.name = f"vllm:{config.model}" + (f"+{config.adapter}" if config.adapter else "")
        self._lock = threading.Lock()  # vllm.LLM is not safe to call from two threads at once

    async def generate(
        self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams, *, adapter: str | None = None
    ) -> list[Completion]:
        """One completion per conversation, in order; failures as ``finish_reason="error"``.

        Args:
            conversations: The chats to complete; all go to the engine in one call.
            sampling: Temperature, top_p, max_tokens, stop strings, seed; logprobs when asked.
            adapter: A name given to :meth:`load_adapter`; ``None``: the configured adapter, if any.

        Returns:
            One :class:`~autodidact.types.Completion` per conversation with token ids and
            (when ``sampling.logprobs``) the sampled tokens' logprobs.
        """
        if not conversations:
            return []
        lora = self._lora if adapter is None else self._loras.get(adapter)
        if lora is None and adapter is not None:
            loaded = ", ".join(self._loras) or "none"
            error = f"no adapter named {adapter!r} is loaded (loaded: {loaded}); load it first"
            return [Completion(text="", finish_reason="error", error=error, model=self.name) for _ in conversations]
        params = self._vllm.SamplingParams(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None,
            seed=sampling.seed,
            logprobs=1 if sampling.logprobs else None,
        )
        messages = [[{"role": m.role, "content": m.content} for m in conv] for conv in conversations]
        try:
            outputs = await asyncio.to_thread(self._chat, messages, params, lora)
        except Exception as e:  # the batch fails, the run goes on
            error = f"vLLM generation failed: {type(e).__name__}: {e}"
            return [Completion(text="", finish_reason="error", error=error, model=self.name) for _ in conversations]
        return [self._completion(out) for out in outputs]

    def _chat(self, messages: list[list[dict[str, str]]], params: Any, lora: Any) -> list[Any]:
        with self._lock:
            return list(self._llm.chat(messages, params, use_tqdm=False, lora_request=lora))

    async def load_adapter(self, name: str, path: str) -> None:
        """Register the LoRA adapter in ``path`` under ``name`` for ``generate(..., adapter=name)``.

        vLLM reads the weights when a request first uses it and keeps the most recently used
        ones (its ``max_loras``) on the GPU.

        Args:
            name: What requests send to use it.
            path: A local adapter dir (with ``adapter_config.json``).

        Raises:
            ConfigError: When the engine was built without LoRA support or ``name`` is taken.
            ModelLoadError: When ``path`` is no adapter dir.

        Example:
            >>> await model.load_adapter("round-3", "/ckpt/round-3/model")  # doctest: +SKIP
        """
        if not self._lora_enabled:
            raise ConfigError("this vLLM engine was built without LoRA support; build it with enable_lora: true")
        if not (Path(path) / "adapter_config.json").is_file():
            raise ModelLoadError(
                f"adapter dir {path!r} has no adapter_config.json; pass the dir that PEFT's save_pretrained wrote"
            )
        # No lock: generate takes its LoRARequest before the engine call, and the engine's lock
        # may be held by a long batch.
        if name in self._loras:
            raise ConfigError(f"an adapter named {name!r} is already loaded; unload it first or pick another name")
        self._loras[name] = self._lora_request(name, next(self._lora_ids), path)

    async def unload_adapter(self, name: str) -> None:
        """Forget the adapter registered under ``name`` (vLLM evicts its weights in time).

        Raises:
            ConfigError: When no adapter of that name was loaded.
        """
        if self._loras.pop(name, None) is None:
            loaded = ", ".join(self._loras) or "none"
            raise ConfigError(f"no adapter named {name!r} was loaded (loaded: {loaded})")

    def _completion(self, out: Any) -> Completion:
        choice = out.outputs[0]
        token_ids = tuple(int(t) for t in choice.token_ids)
        logprobs = None
        if choice.logprobs is not None:
            # One {token_id: Logprob} dict per position; the sampled token is always in it.
            logprobs = tuple(float(pos[t].logprob) for t, pos in zip(token_ids, choice.logprobs, strict=False))
        if choice.finish_reason == "abort":
            return Completion(text="", finish_reason="error", error="vLLM aborted the request", model=self.name)
        prompt_ids = getattr(out, "prompt_token_ids", None)
        return Completion(
            text=choice.text,
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            prompt_tokens=len(prompt_ids) if prompt_ids is not None else None,
            model=self.name,
        )

    async def aclose(self) -> None:
        """Drop the engine so its GPU memory can be freed."""
        self._llm = None
