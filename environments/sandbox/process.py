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


class ProcessSandbox:
    """Runs each request in a new bubblewrap container (see the module docstring).

    Args:
        python: the interpreter inside the sandbox (it must live under ``/usr``).
        unsafe: without bubblewrap, run jobs as plain subprocesses instead of refusing.
    """

    def __init__(self, *, python: str = SANDBOX_PYTHON, unsafe: bool | None = None) -> None:
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

    async def run(self, request: ExecRequest) -> ExecResult:
        """Run ``request`` and report stdout, stderr, exit code and which limit (if any) hit."""
        if not self.as_root:
            return await self._run(request, None)
        slot, lock = await _acquire_slot()
        try:
            return await self._run(request, SLOT_UID_BASE + slot)
        finally:
            os.close(lock)  # releases the flock

    def _argv(self, request: ExecRequest) -> list[str]:
        code = [self.python, "-I", "-c", request.code]
        if self.bwrap is None:
            return code
        # fmt: off
        return [
            self.bwrap, "--unshare-all", *(["--share-net"] if request.network else []),
            "--die-with-parent", "--new-session", "--as-pid-1", "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(request.disk_mb * _MB), "--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp",
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0",
            *code,
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
        code = proc.returncode
        stderr = err.decode(errors="replace")
        memory_exceeded = code != 0 and "MemoryError" in stderr
        if code == -signal.SIGXCPU:  # the CPU-time limit hit
            timed_out = True
        return ExecResult(
            stdout=out.decode(errors="replace"),
            stderr=stderr,
            exit_code=code,
            timed_out=timed_out,
            memory_exceeded=memory_exceeded,
            output_truncated=out_cut or err_cut,
            duration_s=time.perf_counter() - start,
        )


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


def _drop_and_limit(request: ExecRequest, uid: int | None) -> None:
    """Runs in the child between fork and exec: become the slot's uid, then set the limits."""
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    mem = request.memory_mb * _MB
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (request.cpu_s, request.cpu_s + 1))
    fsize = request.max_file_mb * _MB
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    if os.geteuid() != 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (request.max_processes, request.max_processes))


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
