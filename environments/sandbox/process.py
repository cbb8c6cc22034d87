"""The process sandbox: each job in a fresh bubblewrap container, as its own unprivileged uid.

Each job runs ``python3 -I -c CODE`` inside ``bwrap`` with every namespace unshared (user,
pid, net, ipc, uts, cgroup), a read-only ``/usr``, fresh ``/proc`` and ``/dev``, a private
size-limited tmpfs as ``/tmp`` (the working dir), a cleared environment, and rlimits set
between fork and exec: address space, CPU time, processes, file size, open files. When the
host runs as root, each concurrent slot gets its own unprivileged uid (60000 + slot), so
RLIMIT_NPROC binds and nothing runs as root.

Protects against: network access (only a private loopback, unless the request allows the
network); reading host files outside ``/usr`` (``/etc``, ``/root``, the project directory,
other jobs' files); the parent's environment variables; writing outside the private
``/tmp``; fork bombs (RLIMIT_NPROC per slot uid); infinite loops (wall-clock and CPU limits);
memory hogs (address-space limit); disk fill (tmpfs size, file-size limit); output floods
(stdout/stderr cut to a byte budget); daemons that try to outlive the job (the pid namespace
dies with it: ``setsid`` grandchildren included); killing the parent (``--die-with-parent``).

Does NOT protect against: kernel exploits (a namespace sandbox shares the host kernel);
reading what is under ``/usr`` (installed programs and libraries); CPU and memory-bandwidth
contention with the host; side channels. Memory is limited per process (RLIMIT_AS), not per
job (no per-sandbox memory cgroup on these hosts). For stronger isolation use the docker
backend.

The job runs as pid 1 of its namespace (``--as-pid-1``): when it ends, the namespace and
everything in it end, and bwrap reaps it — no orphan is left for a host init that may not reap.

**Warm pool.** Starting an interpreter in a fresh container costs ~25 ms, so by default jobs
run on warm workers instead: one long-lived container per worker (its own slot uid), whose
pid 1 is a "zygote" (``_zygote.py``) that forks a child per job, sets the job's rlimits in the
child and runs the code there — a few milliseconds a job. After each job the zygote kills every
other process in its namespace (``kill(-1, SIGKILL)``; setsid daemons included), empties
``/tmp`` and ``/dev/shm`` and removes System V IPC objects. What a warm job does NOT get that a
cold one does: a brand-new tmpfs (it gets the emptied one) and a brand-new interpreter image
(it inherits the zygote's memory, so a job could find traces of earlier jobs' code and data in
it; use ``pool_size=0`` when jobs of different trust domains share a sandbox). Requests with
the network on or a ``disk_mb`` other than the pool's run cold. Warm workers are shared by all
``ProcessSandbox`` instances with the same settings in a process (one pool per event loop),
and die with the process. A worker that dies during a job (killed from outside, its container
gone) or stops answering (no reply past the job's timeout plus a grace) is killed and
replaced by a new one for the next job; the job it was running raises
:class:`~autodidact.errors.SandboxUnavailableError` naming the worker and how it ended, since
its outcome is unknown (a fault of the sandbox, not a wrong answer of the program).

Without bubblewrap the sandbox refuses to run unless built with ``unsafe=True`` (or
``AUTODIDACT_UNSAFE_SANDBOX=1``): then jobs run as plain subprocesses under rlimits only,
with a loud warning.

Example:
    >>> result = await ProcessSandbox().run(ExecRequest(code="print(1)"))  # doctest: +SKIP
    >>> result.stdout
    '1\\n'
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

from autodidact.errors import SandboxUnavailableError
from environments.sandbox.base import ExecRequest, ExecResult

_MB = 1024 * 1024
SLOT_UID_BASE = 60000
SLOTS = 64  # uids SLOT_UID_BASE .. SLOT_UID_BASE + SLOTS - 1, shared by every process on the host
SLOT_DIR = Path(tempfile.gettempdir()) / "autodidact-sandbox-slots"
SANDBOX_PYTHON = "/usr/bin/python3"
SHM_MB = 16  # the size of a job's /dev/shm
WORKER_GRACE_S = 5.0  # how long past a job's timeout a warm worker may take to answer before it is replaced


class ProcessSandbox:
    """Runs each request in a new bubblewrap container (see the module docstring).

    Args:
        python: the interpreter inside the sandbox (it must live under ``/usr``).
        unsafe: without bubblewrap, run jobs as plain subprocesses instead of refusing.
        pool_size: warm workers (0: every job cold). Default: the number of CPUs.
        pool_disk_mb: the size of a warm worker's ``/tmp``; requests asking for another size run cold.
    """

    def __init__(
        self,
        *,
        python: str = SANDBOX_PYTHON,
        unsafe: bool | None = None,
        pool_size: int | None = None,
        pool_disk_mb: int = 64,
    ) -> None:
        self.bwrap = shutil.which("bwrap")
        if unsafe is None:
            unsafe = os.environ.get("AUTODIDACT_UNSAFE_SANDBOX") == "1"
        if self.bwrap is None and not unsafe:
            raise SandboxUnavailableError(
                "bubblewrap (bwrap) is not installed, so model-written code cannot be run safely: "
                "install it (apt-get install bubblewrap) or, only for code you trust, set AUTODIDACT_UNSAFE_SANDBOX=1"
            )
        if self.bwrap is None:
            warnings.warn(
                "UNSAFE SANDBOX: bubblewrap is missing; untrusted code runs as a plain subprocess of this user",
                RuntimeWarning,
                stacklevel=2,
            )
        if self.bwrap is not None and not python.startswith("/usr/"):
            raise SandboxUnavailableError(
                f"the sandbox python must live under /usr (only /usr is mounted), not {python!r}"
            )
        self.python = python if self.bwrap is not None or os.path.exists(python) else sys.executable
        self.as_root = os.geteuid() == 0
        if pool_size is not None and pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, not {pool_size}")
        # No pool without bubblewrap: the zygote's kill(-1) is only safe inside its own pid namespace.
        self.pool_size = 0 if self.bwrap is None else (os.cpu_count() or 2) if pool_size is None else pool_size
        self.pool_disk_mb = pool_disk_mb

    async def run(self, request: ExecRequest) -> ExecResult:
        """Run ``request`` and report stdout, stderr, exit code and which limit (if any) hit."""
        if self.pool_size and not request.network and request.disk_mb == self.pool_disk_mb:
            return await self._pool().run(request)
        if not self.as_root:
            return await self._run(request, None)
        slot, lock = await _acquire_slot()
        try:
            return await self._run(request, SLOT_UID_BASE + slot)
        finally:
            os.close(lock)  # releases the flock

    async def close(self) -> None:
        """Stop this event loop's warm workers for these settings (later runs start new ones)."""
        pool = _POOLS.pop((asyncio.get_running_loop(), self._pool_key()), None)
        if pool is not None:
            await pool.close()

    @staticmethod
    async def close_all() -> None:
        """Stop every warm worker of this event loop, whatever its settings."""
        loop = asyncio.get_running_loop()
        for key in [k for k in _POOLS if k[0] is loop]:
            await _POOLS.pop(key).close()

    def _pool_key(self) -> tuple[str, int]:
        return (self.python, self.pool_disk_mb)

    def _pool(self) -> _Pool:
        loop = asyncio.get_running_loop()
        for key in [k for k in _POOLS if k[0].is_closed()]:  # pools of finished event loops
            _POOLS.pop(key).abandon()
        pool = _POOLS.get((loop, self._pool_key()))
        if pool is None:
            pool = _POOLS[(loop, self._pool_key())] = _Pool(self)
        pool.grow(self.pool_size)
        return pool

    def _argv(self, request: ExecRequest) -> list[str]:
        code = [self.python, "-I", "-c", request.code]
        if self.bwrap is None:
            return code
        return self._bwrap_argv(network=request.network, disk_mb=request.disk_mb) + code

    def _bwrap_argv(self, *, network: bool, disk_mb: int) -> list[str]:
        assert self.bwrap is not None
        # /dev is bwrap's own small tmpfs: read-only, with a size-limited /dev/shm mounted on it.
        # fmt: off
        return [
            self.bwrap, "--unshare-all", *(["--share-net"] if network else []),
            "--die-with-parent", "--new-session", "--as-pid-1", "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(SHM_MB * _MB), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
            "--size", str(disk_mb * _MB), "--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp",
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0",
        ]
        # fmt: on

    async def _run(self, request: ExecRequest, uid: int | None) -> ExecResult:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="autodidact-job-") as work:
            if uid is not None:
                os.chown(work, uid, uid)
            proc = await asyncio.create_subprocess_exec(
                *self._argv(request),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=work,
                env={"PATH": "/usr/bin:/bin", "HOME": work, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"},
                start_new_session=True,
                preexec_fn=lambda: _drop_and_limit(request, uid),
            )
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            if request.stdin:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.write(request.stdin.encode())
            proc.stdin.close()
            readers = asyncio.ensure_future(
                asyncio.gather(
                    _read_capped(proc.stdout, request.max_output_bytes),
                    _read_capped(proc.stderr, request.max_output_bytes),
                    proc.wait(),
                )
            )
            done, _ = await asyncio.wait({readers}, timeout=request.timeout_s)
            timed_out = not done
            if timed_out:
                if uid is not None:
                    # Kill the job's processes but not bwrap itself: bwrap's pid-1 then exits and is
                    # reaped by its parent. Killing bwrap would orphan a zombie the host may never reap.
                    _kill_uid(uid, spare="bwrap")
                    await asyncio.wait({readers}, timeout=2.0)
                _kill_group(proc.pid)  # no bwrap, or it did not finish: the whole group goes
            try:  # without bwrap, a process that escaped the group can hold the pipes open
                (out, out_cut), (err, err_cut), _ = await asyncio.wait_for(readers, 5.0)
            except TimeoutError:
                (out, out_cut), (err, err_cut) = (b"", True), (b"(output lost: a process outlived the job)", True)
            _kill_group(proc.pid)  # anything left running in the group (the pid namespace took the rest)
        return _result(
            out.decode(errors="replace"),
            err.decode(errors="replace"),
            proc.returncode,
            timed_out=timed_out,
            truncated=out_cut or err_cut,
            start=start,
        )


def _result(
    stdout: str, stderr: str, code: int | None, *, timed_out: bool, truncated: bool, start: float
) -> ExecResult:
    return ExecResult(
        stdout=stdout,
        stderr=stderr,
        exit_code=code,
        timed_out=timed_out or code == -signal.SIGXCPU,  # SIGXCPU: the CPU-time limit hit
        memory_exceeded=code != 0 and "MemoryError" in stderr,
        output_truncated=truncated,
        duration_s=time.perf_counter() - start,
    )


class _Worker:
    """One warm container: bwrap running the zygote as its own slot uid, spoken to over pipes."""

    def __init__(self, proc: asyncio.subprocess.Process, lock: int | None, uid: int | None = None) -> None:
        self.proc, self.lock, self.uid = proc, lock, uid

    @classmethod
    async def start(cls, sandbox: ProcessSandbox) -> _Worker:
        uid, lock = None, None
        if sandbox.as_root:
            slot, lock = await _acquire_slot()
            uid = SLOT_UID_BASE + slot
        zygote = (Path(__file__).parent / "_zygote.py").read_text()
        argv = [*sandbox._bwrap_argv(network=False, disk_mb=sandbox.pool_disk_mb), sandbox.python, "-I", "-c", zygote]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            limit=_REPLY_LIMIT,
            preexec_fn=lambda: _drop_and_limit(None, uid),
        )
        worker = cls(proc, lock, uid)
        assert proc.stdout is not None
        try:
            ready = await asyncio.wait_for(proc.stdout.readline(), 30.0)
        except TimeoutError:
            ready = b""
        if not ready.startswith(b'{"ready"'):
            worker.abandon()
            raise SandboxUnavailableError(f"a warm sandbox worker did not start (bwrap: {sandbox.bwrap})")
        return worker

    async def run(self, request: ExecRequest) -> ExecResult:
        """The job's result; raises :class:`_WorkerLost` when the worker died or stopped answering
        (it is then killed)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        start = time.perf_counter()
        job = request.model_dump(include=_JOB_FIELDS)
        self.proc.stdin.write(json.dumps(job).encode() + b"\n")
        wait_s = request.timeout_s + WORKER_GRACE_S
        try:
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), wait_s)
        except TimeoutError:
            raise _WorkerLost(await self._lost(f"stopped answering (no reply within {wait_s:g} s)")) from None
        except (ConnectionError, ValueError):
            line = b""
        if not line:
            raise _WorkerLost(await self._lost("died"))
        reply = json.loads(line)
        return _result(
            reply["stdout"],
            reply["stderr"],
            reply["exit_code"],
            timed_out=reply.get("timed_out", False),
            truncated=reply.get("output_truncated", False),
            start=start,
        )

    async def _lost(self, what: str) -> str:
        """Kill this worker, which failed its job; say who it was, ``what`` happened and how it ended."""
        if self.proc.returncode is None and what == "died":  # its pipe closed: the exit status follows
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 1.0)
        code = self.proc.returncode
        self.abandon()
        how = ""
        if code is not None and code < 0:
            how = f" (killed by {_signal_name(-code)})"
        elif code is not None:
            how = f" (exit code {code})"
        uid = f", uid {self.uid}" if self.uid is not None else ""
        return f"sandbox worker (pid {self.proc.pid}{uid}) {what}{how}"

    def abandon(self) -> None:
        """Kill the container (its zygote dies with bwrap) and give back the slot."""
        if self.proc.returncode is None:
            _kill_group(self.proc.pid)
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None


class _WorkerLost(Exception):
    """A warm worker died or stopped answering during a job (the message says which and how)."""


class _Pool:
    """Up to ``size`` warm workers for one event loop; a job waits for a free one."""

    def __init__(self, sandbox: ProcessSandbox) -> None:
        self.sandbox = sandbox
        self.size = 0
        self.free: asyncio.Queue[_Worker | None] = asyncio.Queue()  # None: a worker yet to start
        self.workers: set[_Worker] = set()  # every live worker, free or busy

    def grow(self, size: int) -> None:
        for _ in range(size - self.size):
            self.free.put_nowait(None)
        self.size = max(self.size, size)

    async def run(self, request: ExecRequest) -> ExecResult:
        """Run ``request`` on a free worker (started when none is warm yet).

        Raises:
            SandboxUnavailableError: the worker died or stopped answering during the job (it
                is replaced: the next job gets a new one), or no worker could start.
        """
        worker = await self.free.get()
        result = None
        try:
            if worker is None:
                worker = await _Worker.start(self.sandbox)
                self.workers.add(worker)
            result = await worker.run(request)
            return result
        except _WorkerLost as e:
            raise SandboxUnavailableError(
                f"the {e} during this job, so its outcome is unknown; a new worker replaces it for the next job"
            ) from None
        finally:
            if worker is not None and result is None:  # died, or the caller was cancelled mid-job
                worker.abandon()
                self.workers.discard(worker)
            self.free.put_nowait(worker if result is not None else None)

    async def close(self) -> None:
        """Kill every worker and wait until each has exited."""
        workers = list(self.workers)
        self.abandon()
        await asyncio.gather(*(w.proc.wait() for w in workers))

    def abandon(self) -> None:
        """Kill every worker (also usable when the pool's event loop is gone: nothing is awaited)."""
        for worker in self.workers:
            worker.abandon()
        self.workers.clear()
        self.free = asyncio.Queue()
        self.size = 0


_JOB_FIELDS = {"code", "stdin", "timeout_s", "cpu_s", "memory_mb", "max_processes", "max_output_bytes", "max_file_mb"}
_REPLY_LIMIT = 64 * _MB
_POOLS: dict[tuple[asyncio.AbstractEventLoop, tuple[str, int]], _Pool] = {}


async def _acquire_slot() -> tuple[int, int]:
    """A slot no other job holds, in this process or any other: an flock on its lock file.

    A slot's uid runs one job at a time, which is what makes RLIMIT_NPROC and the final
    kill-by-uid safe. The lock goes with the file descriptor, also when a process dies.
    """
    SLOT_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    while True:
        for slot in range(SLOTS):
            fd = os.open(SLOT_DIR / f"{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return slot, fd
        await asyncio.sleep(0.005)  # all slots busy: wait for one


def _drop_and_limit(request: ExecRequest | None, uid: int | None) -> None:
    """Runs in the child between fork and exec: become the slot's uid, then set the limits.

    A warm worker (``request`` None) only drops privileges: its zygote sets each job's limits.
    """
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    if request is None:
        return
    mem = request.memory_mb * _MB
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (request.cpu_s, request.cpu_s + 1))
    fsize = request.max_file_mb * _MB
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    if os.geteuid() != 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (request.max_processes, request.max_processes))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _kill_uid(uid: int, spare: str) -> None:
    """SIGKILL every process owned by ``uid`` whose name is not ``spare`` (a slot's uid runs one job at a time)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(entry.path).st_uid == uid and Path(entry.path, "comm").read_text().strip() != spare:
                os.kill(int(entry.name), signal.SIGKILL)


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    """Read ``stream`` to its end, keeping the first ``cap`` bytes; report whether it was cut."""
    kept = bytearray()
    cut = False
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        if room > 0:
            kept += chunk[:room]
        if len(chunk) > room:
            cut = True
    return bytes(kept), cut
