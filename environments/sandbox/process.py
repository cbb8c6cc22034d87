"""The process sandbox: a fresh Python process per job, in its own session, under rlimits.

Protects against: infinite loops (wall-clock and CPU limits; the whole process group is
killed), memory hogs (address-space limit), huge files (file-size limit), output floods
(stdout/stderr cut to a byte budget), runaway descriptors (open-file limit), and leftovers
(a fresh temporary working dir, removed afterwards; a cleared environment).

Does NOT yet protect against: reading files the host user can read, network access,
processes that escape the process group with ``setsid``, or fork bombs when running as
root (RLIMIT_NPROC does not bind root). The bubblewrap isolation that closes these gaps is
the sandbox-hardening work; until then run only code you would run on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sys
import tempfile
import time

from environments.sandbox.base import ExecRequest, ExecResult

_MB = 1024 * 1024


class ProcessSandbox:
    """Runs each request in a new ``python3 -I`` process with limits set before exec."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    async def run(self, request: ExecRequest) -> ExecResult:
        """Run ``request`` and report stdout, stderr, exit code and which limit (if any) hit."""
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="autodidact-job-") as work:
            proc = await asyncio.create_subprocess_exec(
                self.python,
                "-I",  # isolated: no user site, no PYTHON* env vars, script dir not on sys.path
                "-c",
                request.code,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=work,
                env={"PATH": "/usr/bin:/bin", "HOME": work, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"},
                start_new_session=True,
                preexec_fn=lambda: _limit(request),
            )
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            if request.stdin:
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
                _kill_group(proc.pid)  # the pipes close, so the readers finish
            try:  # a process that escaped the group can hold the pipes open: do not wait for it
                (out, out_cut), (err, err_cut), _ = await asyncio.wait_for(readers, 5.0)
            except TimeoutError:
                (out, out_cut), (err, err_cut) = (b"", True), (b"(output lost: a process outlived the job)", True)
            _kill_group(proc.pid)  # anything the program left running in its group
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


def _limit(request: ExecRequest) -> None:
    """Runs in the child between fork and exec."""
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
