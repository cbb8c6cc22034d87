"""The docker sandbox: jobs run in containers of a Docker-compatible engine (Docker Engine or Podman).

Containers are created through the Docker SDK (``docker`` on PyPI, the ``docker`` extra) with
every limit the engine offers: no network (``network_mode="none"``), a memory cgroup
(``mem_limit``), a pids cgroup (``pids_limit``), a read-only root filesystem, a size-limited
tmpfs as ``/tmp`` (the working dir) and a small ``/dev/shm``, all capabilities dropped,
``no-new-privileges``, an init that reaps orphans, ulimits (open files, no core dumps), and
two unprivileged uids: the container's own process (``sleep infinity`` under the engine's
init) runs as ``INIT_UID``, every job as ``JOB_UID``, so a job cannot signal the process that
keeps its container alive.

**Warm pool.** A job in a new container costs ~0.3–0.7 s, so ``pool_size`` containers are
started once and a job is an ``exec`` in one of them (~0.14 s on Podman). A fixed ``sh``
wrapper, run as ``JOB_UID``, first empties ``/tmp``, ``/dev/shm`` and ``/dev/mqueue`` and
removes System V IPC objects an earlier job left, sets the job's rlimits (CPU time, address
space, file size), runs ``python3 -I -c CODE`` under coreutils ``timeout -s KILL`` with the
request's stdin streamed in over the exec's attach socket, and afterwards kills every process
of ``JOB_UID`` in the container (``kill -9 -1``; ``setsid`` daemons included). Before the
container goes back to the pool the host lists its processes through the engine (``top``): if
any process of the job is still alive it is killed again, and a container that is still not
clean is removed and replaced. So when a job starts, no process of an earlier job is alive to
interfere with the wrapper. A host-side guard kills the job from outside when it runs past its
wall time plus a grace (a job can stop or kill its own ``timeout``: it runs as the same uid).
Requests with limits the warm containers were not created with (network on, or another
``memory_mb``, ``disk_mb`` or ``max_processes``) run cold: in a fresh container, removed after.

Protects against: network access (no interface but a private loopback, unless the request
allows the network — then the container shares the host's network); reading host files (the
container sees only its image: a Debian rootfs with ``python3``, no ``/root``, no
``/etc/shadow``); the parent's environment variables; writing outside ``/tmp`` and
``/dev/shm`` (read-only root); fork bombs (pids cgroup); infinite loops (wall-clock and CPU
limits); memory hogs (address-space rlimit per process, memory cgroup for the whole job);
disk fill (tmpfs sizes, file-size rlimit); output floods (stdout/stderr cut to a byte budget);
daemons that try to outlive the job (killed after it, and the host checks); privilege
escalation through setuid binaries or capabilities (none are left).

Does NOT protect against: kernel exploits (containers share the host kernel; without a user
namespace, ``JOB_UID`` is the same uid on the host); CPU and memory-bandwidth contention with
the host and other jobs; side channels; what the engine itself gets wrong. Within the job, the
wrapper and ``timeout`` share the job's uid, so the job can kill them: the exec then ends early
(its result says killed) and the host's check kills what is left. ``code`` travels as one
argument, so at most 128 KiB (the kernel's limit, as with the process backend); stdin may be
large. A job killed by signal N reports exit code -N (a job that exits with 128+N itself reads
the same); one killed by SIGKILL before its wall time is reported as ``memory_exceeded`` (the
memory cgroup's OOM killer sends SIGKILL).

Example:
    >>> async with DockerSandbox(base_url="unix:///run/podman/podman.sock") as box:  # doctest: +SKIP
    ...     result = await box.run(ExecRequest(code="print(input())", stdin="hi"))
    >>> result.stdout  # doctest: +SKIP
    'hi\\n'

With no engine at hand, a sandbox given no ``base_url`` (and no ``$DOCKER_HOST`` elsewhere)
starts the project's Podman service itself (:func:`environments.sandbox.podman.start_on_demand`;
``make setup`` builds the image); ``python -m environments.sandbox.podman start`` starts it by
hand and prints the ``DOCKER_HOST`` to use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

from autodidact.errors import SandboxUnavailableError
from environments.sandbox.base import ExecRequest, ExecResult

DEFAULT_IMAGE = "localhost/autodidact-sandbox:bookworm-python3"
DOCKER_DEFAULT_URL = "unix:///var/run/docker.sock"
LABEL = "autodidact.sandbox"  # every container this backend starts carries it (value: the sandbox's id)
JOB_UID = 61000  # jobs run as this uid (the process backend uses 60000..60063)
INIT_UID = 61001  # the container's own process; jobs cannot signal it
SHM_MB = 16  # the size of a container's /dev/shm
PIDS_SLACK = 8  # pids beyond the job's max_processes: init, sleep, the wrapper, timeout, an exec starting
NPROC_PER_UID = 4096  # RLIMIT_NPROC in containers: counts every process of JOB_UID on the host
GUARD_S = 1.0  # the host kills a job still running this long past its wall time
KILL_GRACE_S = 3.0  # after the host's kill, how long the exec may take to end before its container is replaced
_JOB_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
_DEFAULTS = ExecRequest(code="")

# The job's wrapper, run by `sh -c` as JOB_UID. Arguments: code, CPU seconds (soft, hard),
# file-size limit (512-byte blocks), address-space limit (KiB), wall-clock seconds, whether to
# read what the job left of its stdin (so the engine's copy of it ends cleanly). Its own
# messages go to /dev/null; the job's stderr is fd 3, redirected inside a subshell because dash
# reports a killed command while that command's redirections are still in place. No process of
# an earlier job is alive when it starts (the host checked), so what it removes and the limits
# it sets cannot be interfered with.
_JOB_SCRIPT = r"""
code=$1 cpu=$2 cpu_hard=$3 fsize=$4 mem=$5 wall=$6 drain=$7
exec 3>&2 2>/dev/null
set --
for f in /tmp/* /tmp/.[!.]* /tmp/..?* /dev/shm/* /dev/shm/.[!.]* /dev/shm/..?* /dev/mqueue/*; do
    if [ -e "$f" ] || [ -L "$f" ]; then set -- "$@" "$f"; fi
done
if [ $# -gt 0 ]; then chmod -R u+rwx -- "$@"; rm -rf -- "$@"; fi
ipc=
for f in /proc/sysvipc/shm /proc/sysvipc/msg /proc/sysvipc/sem; do
    { read -r _ && read -r _ && ipc=1; } < "$f"
done
if [ -n "$ipc" ]; then ipcrm -a; fi
ulimit -S -t "$cpu" && ulimit -H -t "$cpu_hard" && ulimit -f "$fsize" && ulimit -v "$mem" \
    || { echo "sandbox: cannot set the limits" >&3; exit 125; }
(timeout -s KILL "$wall" python3 -I -c "$code" 2>&3 3>&-)
rc=$?
if [ "$drain" = 1 ]; then cat >/dev/null; fi
kill -9 -1
exit $rc
"""
# Run by the host when a job overstays or left processes behind.
_KILL_SCRIPT = "kill -9 -1"

T = TypeVar("T")


class DockerSandbox:
    """Runs each request in a container of a Docker-compatible engine (see the module docstring).

    Args:
        base_url: the engine's API, e.g. ``unix:///run/podman/podman.sock`` or
            ``tcp://host:2375``. Default: ``$DOCKER_HOST``; else the socket of the Podman service
            that ``environments.sandbox.podman`` runs, when it exists; else Docker's
            ``unix:///var/run/docker.sock``. Without a ``base_url``, when nothing answers there
            :meth:`start` falls back to Docker's socket, then starts the project's Podman service
            (:func:`~environments.sandbox.podman.start_on_demand`); a given one is used as is.
        image: the image jobs run in; it must have ``sh``, coreutils and ``python3``. It is never
            pulled: build it with ``python -m environments.sandbox.podman image``.
        pool_size: warm containers (0: every job gets a fresh container).
        memory_mb: the warm containers' memory limit; requests asking for another run cold.
        disk_mb: the size of the warm containers' ``/tmp``; requests asking for another run cold.
        max_processes: the warm containers' process limit; requests asking for another run cold.
        api_timeout_s: how long one engine call (create, inspect, remove) may take.

    Example:
        >>> box = DockerSandbox(pool_size=4)  # doctest: +SKIP
        >>> (await box.run(ExecRequest(code="print(1)"))).stdout  # doctest: +SKIP
        '1\\n'
        >>> await box.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        image: str = DEFAULT_IMAGE,
        pool_size: int = 2,
        memory_mb: int = _DEFAULTS.memory_mb,
        disk_mb: int = _DEFAULTS.disk_mb,
        max_processes: int = _DEFAULTS.max_processes,
        api_timeout_s: float = 60.0,
    ) -> None:
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, not {pool_size}")
        self.base_url = base_url or default_base_url()
        self._engine_given = base_url is not None  # else start() may fall back to the project's Podman
        self.image = image
        self.pool_size = pool_size
        self.memory_mb, self.disk_mb, self.max_processes = memory_mb, disk_mb, max_processes
        self.api_timeout_s = api_timeout_s
        self.label = uuid.uuid4().hex[:12]  # the value of LABEL on this sandbox's containers
        self._client: Any = None  # docker.APIClient, made by start()
        self._executor: ThreadPoolExecutor | None = None
        self._start_lock: asyncio.Lock | None = None
        self._idle: asyncio.Queue[str | None] | None = None  # warm slots: a container id, or None to create
        self._live: set[str] = set()  # every container of this sandbox not yet removed
        self._background: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DockerSandbox:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect to the engine, check the image and start the warm containers (``run`` does this itself).

        Raises:
            SandboxUnavailableError: the SDK is missing, the engine does not answer, or the image is missing.
        """
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._client is not None:
                return
            try:
                import docker  # noqa: F401  (the SDK loads only when this backend is used)
            except ImportError as e:
                raise SandboxUnavailableError(
                    "the docker sandbox needs the Docker SDK: pip install 'autodidact[docker]' (or pip install docker)"
                ) from e
            self._executor = ThreadPoolExecutor(max_workers=self.pool_size + 4, thread_name_prefix="docker-sandbox")
            try:
                try:
                    self._client = await self._call(self._connect)
                except _NoEngine:
                    if self._engine_given or not await self._call(self._fall_back):
                        raise
                    self._client = await self._call(self._connect)
            except BaseException:
                self._executor.shutdown(wait=False)
                self._executor = None
                raise
            self._idle = asyncio.Queue()
            # Start the warm containers now rather than on the first jobs.
            made = await asyncio.gather(*(self._create_warm() for _ in range(self.pool_size)), return_exceptions=True)
            for cid in made:
                self._idle.put_nowait(cid if isinstance(cid, str) else None)
            failed = [e for e in made if isinstance(e, BaseException)]
            if failed:
                raise failed[0]

    async def run(self, request: ExecRequest) -> ExecResult:
        """Run ``request`` in a warm container (or a fresh one for other limits) and report what happened.

        Raises:
            SandboxUnavailableError: the engine cannot be reached or cannot start a container.
        """
        await self.start()
        if not self._fits_warm(request):
            cid = await self._create(
                network=request.network,
                memory_mb=request.memory_mb,
                disk_mb=request.disk_mb,
                max_processes=request.max_processes,
            )
            try:
                result, _ = await self._exec_job(cid, request)
            finally:
                self._in_background(self._remove(cid))
            return result
        assert self._idle is not None
        slot = await self._idle.get()
        try:
            cid = slot if slot is not None else await self._create_warm()
        except BaseException:
            self._idle.put_nowait(None)
            raise
        keep = False
        try:
            try:
                result, keep = await self._exec_job(cid, request)
            except _ContainerGone:  # it died between jobs (or was removed): one retry in a new one
                self._in_background(self._remove(cid))
                cid = await self._create_warm()
                result, keep = await self._exec_job(cid, request)
            if keep:
                keep = await self._settle(cid)
        finally:
            if keep:
                self._idle.put_nowait(cid)
            else:
                self._retire(cid)
        return result

    async def close(self) -> None:
        """Remove every container of this sandbox (later runs start new ones)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        if self._client is None:
            return
        await asyncio.gather(*(self._call(self._remove_now, cid) for cid in list(self._live)), return_exceptions=True)
        client, executor = self._client, self._executor
        self._client, self._executor, self._idle, self._start_lock = None, None, None, None
        with contextlib.suppress(Exception):
            client.close()
        if executor is not None:
            executor.shutdown(wait=False)

    # -- engine calls (blocking; run in the executor) --------------------------------------------

    def _connect(self) -> Any:
        import docker
        import requests

        try:
            client = docker.APIClient(base_url=self.base_url, timeout=self.api_timeout_s, max_pool_size=16)
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
            raise _NoEngine(
                f"no Docker-compatible engine answers at {self.base_url} ({type(e).__name__}: {e}). "
                "Start one — Docker Engine, or Podman as this project runs it: `python -m environments.sandbox.podman start` "
                "(apt-get install podman runc catatonit debootstrap first) — and point DOCKER_HOST or base_url at it"
            ) from e
        try:
            client.inspect_image(self.image)
        except docker.errors.ImageNotFound as e:
            client.close()
            raise SandboxUnavailableError(
                f"the sandbox image {self.image} is not in the engine at {self.base_url}: build it with "
                "`python -m environments.sandbox.podman image` (what `make setup` runs; for Docker Engine, import "
                "a Debian rootfs with python3 under that name)"
            ) from e
        return client

    def _fall_back(self) -> bool:
        """Point :attr:`base_url` at Docker's socket or the project's Podman (started if need be), if either can serve."""
        from environments.sandbox.podman import start_on_demand

        try:
            url = start_on_demand(self.base_url)
        except SandboxUnavailableError as e:
            raise SandboxUnavailableError(
                f"no Docker-compatible engine answers at {self.base_url}, and the project's Podman service "
                f"could not start: {e}"
            ) from e
        if url is None:
            return False
        self.base_url = url
        return True

    def _create_now(self, *, network: bool, memory_mb: int, disk_mb: int, max_processes: int) -> str:
        import docker

        mb = 1024 * 1024
        host_config = self._client.create_host_config(
            init=True,
            network_mode="host" if network else "none",
            mem_limit=(memory_mb + disk_mb + SHM_MB) * mb,  # tmpfs pages are charged to the container too
            pids_limit=max_processes + PIDS_SLACK,
            read_only=True,
            tmpfs={"/tmp": f"size={disk_mb}m,mode=1777", "/var/tmp": "ro,size=4k"},
            shm_size=SHM_MB * mb,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            ulimits=[
                docker.types.Ulimit(name="nofile", soft=256, hard=256),
                docker.types.Ulimit(name="core", soft=0, hard=0),
                # Per uid on the host (jobs of all containers together); named, or the engine's default
                # may exceed the host's hard limit.
                docker.types.Ulimit(name="nproc", soft=NPROC_PER_UID, hard=NPROC_PER_UID),
            ],
        )
        container = self._client.create_container(
            self.image,
            command=["sleep", "infinity"],
            user=f"{INIT_UID}:{INIT_UID}",
            environment=_JOB_ENV,
            working_dir="/tmp",
            labels={LABEL: self.label},
            host_config=host_config,
        )
        cid: str = container["Id"]
        self._live.add(cid)
        try:
            self._client.start(cid)
        except BaseException:
            self._remove_now(cid)
            raise
        return cid

    def _remove_now(self, cid: str) -> None:
        with contextlib.suppress(Exception):  # already gone, or the engine went away: nothing more to do
            self._client.remove_container(cid, force=True)
        self._live.discard(cid)

    def _start_exec(self, cid: str, request: ExecRequest) -> tuple[str, Any]:
        import docker

        limits = [request.cpu_s, request.cpu_s + 1, request.max_file_mb * 2048, request.memory_mb * 1024]
        argv = ["sh", "-c", _JOB_SCRIPT, "sh", request.code, *map(str, limits), f"{request.timeout_s:.3f}"]
        argv.append("1" if request.stdin else "0")
        user = f"{JOB_UID}:{JOB_UID}"
        try:
            exec_id: str = self._client.exec_create(cid, argv, stdin=True, user=user, workdir="/tmp")["Id"]
            sock = self._client.exec_start(exec_id, socket=True)
        except docker.errors.APIError as e:
            if isinstance(e, docker.errors.NotFound) or not self._running(cid):
                raise _ContainerGone(f"container {cid[:12]} at {self.base_url} is gone: {e}") from e
            raise
        _raw(sock).settimeout(None)  # a job may be silent for longer than an API call may take
        return exec_id, sock

    def _running(self, cid: str) -> bool:
        import docker

        try:
            return bool(self._client.inspect_container(cid)["State"]["Running"])
        except docker.errors.NotFound:
            return False

    def _exit_code(self, exec_id: str) -> int | None:
        for _ in range(100):  # the stream can end a moment before the engine records the exit
            info = self._client.exec_inspect(exec_id)
            if not info.get("Running"):
                code = info.get("ExitCode")
                return code if isinstance(code, int) else None
            time.sleep(0.01)
        return None

    def _kill_jobs(self, cid: str) -> None:
        with contextlib.suppress(Exception):  # the container may already be gone
            exec_id = self._client.exec_create(cid, ["sh", "-c", _KILL_SCRIPT], user=f"{JOB_UID}:{JOB_UID}")["Id"]
            self._client.exec_start(exec_id)

    def _leftovers(self, cid: str) -> list[str] | None:
        """Processes in the container other than its own (None: the engine could not list them)."""
        try:
            try:  # Podman's own descriptors
                top = self._client.top(cid, ps_args="pid,user,state,comm")
            except Exception:  # Docker Engine runs ps(1) on the host
                top = self._client.top(cid, ps_args="-o pid,user,stat,comm")
            titles = [t.upper() for t in top["Titles"]]
            user, state = titles.index("USER"), next(i for i, t in enumerate(titles) if t in ("STATE", "STAT", "S"))
        except Exception:
            return None
        return [
            " ".join(p) for p in top["Processes"] or [] if p[user] != str(INIT_UID) and not p[state].startswith("Z")
        ]

    # -- the job ----------------------------------------------------------------------------------

    async def _exec_job(self, cid: str, request: ExecRequest) -> tuple[ExecResult, bool]:
        """Run one job in container ``cid``; also say whether the container may serve another."""
        import docker
        import requests

        start = time.perf_counter()
        try:
            exec_id, sock = await self._call(self._start_exec, cid, request)
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
            raise SandboxUnavailableError(f"the engine at {self.base_url} could not start a job: {e}") from e
        # Its own thread, not the executor's: the host's kill must find a free thread while pumps block.
        pump = _in_thread(_pump, sock, request.stdin.encode(), request.max_output_bytes)
        done, _ = await asyncio.wait({pump}, timeout=request.timeout_s + GUARD_S)
        guard_fired = not done
        clean = True
        if guard_fired:  # the job outlived its own timeout (it may have killed it): kill it from outside
            await self._call(self._kill_jobs, cid)
            done, _ = await asyncio.wait({pump}, timeout=KILL_GRACE_S)
            if not done:
                clean = False
                _shutdown(sock)  # ends the pump; the container is replaced
        try:
            out, out_cut, err, err_cut = await pump
        except Exception as e:  # the stream broke (the engine went away): not the program's fault
            raise SandboxUnavailableError(f"lost the job's output stream from {self.base_url}: {e}") from e
        finally:
            with contextlib.suppress(Exception):
                sock.close()
        try:
            rc = await self._call(self._exit_code, exec_id)
        except Exception:
            rc, clean = None, False
        elapsed = time.perf_counter() - start
        code = -(rc - 128) if rc is not None and 128 < rc <= 128 + 64 else rc  # the shell's 128+N: killed by N
        stderr = err.decode(errors="replace")
        killed = code == -signal.SIGKILL
        timed_out = guard_fired or (killed and elapsed >= request.timeout_s) or code == -signal.SIGXCPU
        result = ExecResult(
            stdout=out.decode(errors="replace"),
            stderr=stderr,
            exit_code=code,
            timed_out=timed_out,
            memory_exceeded=code not in (0, None) and ("MemoryError" in stderr or (killed and not timed_out)),
            output_truncated=out_cut or err_cut,
            duration_s=elapsed,
        )
        return result, clean and rc is not None

    async def _settle(self, cid: str) -> bool:
        """Whether no process of the last job is left in ``cid`` (killing what is left, once)."""
        left = await self._call(self._leftovers, cid)
        if left is None:
            return False
        if not left:
            return True
        await self._call(self._kill_jobs, cid)
        for _ in range(20):
            await asyncio.sleep(0.05)
            left = await self._call(self._leftovers, cid)
            if left == []:
                return True
        return False

    # -- the pool ---------------------------------------------------------------------------------

    def _fits_warm(self, request: ExecRequest) -> bool:
        return (
            self.pool_size > 0
            and not request.network
            and (request.memory_mb, request.disk_mb, request.max_processes)
            == (self.memory_mb, self.disk_mb, self.max_processes)
        )

    async def _create_warm(self) -> str:
        return await self._create(
            network=False, memory_mb=self.memory_mb, disk_mb=self.disk_mb, max_processes=self.max_processes
        )

    async def _create(self, *, network: bool, memory_mb: int, disk_mb: int, max_processes: int) -> str:
        import docker
        import requests

        try:
            return await self._call(
                lambda: self._create_now(
                    network=network, memory_mb=memory_mb, disk_mb=disk_mb, max_processes=max_processes
                )
            )
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
            raise SandboxUnavailableError(
                f"the engine at {self.base_url} could not start a sandbox container from {self.image}: {e}"
            ) from e

    def _retire(self, cid: str) -> None:
        """Replace a warm container that may not be clean: remove it, leave its slot empty."""
        self._in_background(self._remove(cid))
        if self._idle is not None:
            self._idle.put_nowait(None)

    async def _remove(self, cid: str) -> None:
        if self._executor is not None:
            await self._call(self._remove_now, cid)

    def _in_background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise SandboxUnavailableError("this DockerSandbox is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


class _NoEngine(SandboxUnavailableError):
    """Nothing answers at the engine's URL (as opposed to an engine that answers but lacks the image)."""


class _ContainerGone(SandboxUnavailableError):
    """The container to exec in does not exist or is not running (a warm one is replaced and the job retried)."""


def default_base_url() -> str:
    """``$DOCKER_HOST``; else the project's Podman socket when it exists; else Docker's default socket."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    from environments.sandbox.podman import default_root

    podman_socket = default_root() / "podman.sock"
    return f"unix://{podman_socket}" if podman_socket.exists() else DOCKER_DEFAULT_URL


def _in_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run ``fn(*args)`` on a new daemon thread; its result (or exception) completes the future."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)  # type: ignore[arg-type]

    def work() -> None:
        value, error = None, None
        try:
            value = fn(*args)
        except BaseException as e:
            error = e
        with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody waits for this any more
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=work, daemon=True, name="docker-sandbox-pump").start()
    return future


def _raw(sock: Any) -> socket.socket:
    """The OS socket under what ``exec_start(socket=True)`` returns (a SocketIO over unix sockets)."""
    return getattr(sock, "_sock", sock)  # type: ignore[no-any-return]


def _shutdown(sock: Any) -> None:
    with contextlib.suppress(OSError):
        _raw(sock).shutdown(socket.SHUT_RDWR)


def _pump(sock: Any, stdin: bytes, cap: int) -> tuple[bytes, bool, bytes, bool]:
    """Send ``stdin`` (then end it) and read the job's multiplexed output, keeping ``cap`` bytes of each stream.

    Runs in a worker thread. Stdin is written from a second thread when there is any, so a job
    that writes before it reads cannot deadlock against us.
    """
    from docker.utils.socket import frames_iter

    raw = _raw(sock)

    def send() -> None:
        with contextlib.suppress(OSError):
            if stdin:
                raw.sendall(stdin)
            raw.shutdown(socket.SHUT_WR)

    writer = None
    if stdin:
        writer = threading.Thread(target=send, daemon=True)
        writer.start()
    else:
        send()
    kept = {1: bytearray(), 2: bytearray()}
    cut = {1: False, 2: False}
    with contextlib.suppress(OSError):  # a reset after the exec ends (unread stdin) is the end of the stream
        for stream, chunk in frames_iter(sock, tty=False):
            if stream not in kept:
                continue
            room = cap - len(kept[stream])
            if room > 0:
                kept[stream] += chunk[:room]
            if len(chunk) > room:
                cut[stream] = True
    if writer is not None:
        _shutdown(sock)  # unblocks a writer still waiting on a job that never read its stdin
        writer.join()
    return bytes(kept[1]), cut[1], bytes(kept[2]), cut[2]
