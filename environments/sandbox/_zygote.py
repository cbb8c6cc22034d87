"""The warm worker that runs inside a bubblewrap container (see ``process.py``): the "zygote".

Started once per pool slot as ``python3 -I -c <this file's text>`` and pid 1 of its own pid
namespace. It reads one JSON job per line on stdin and answers one JSON result per line on
stdout. For each job it forks: the child sets the job's rlimits, takes fresh pipes as its
stdin/stdout/stderr and runs the code in a fresh ``__main__``, the way ``python3 -c`` would, in
an interpreter that has already started and imported the common standard library (which is
what makes a warm job cost milliseconds instead of an interpreter start).

When the child ends, or its time runs out, everything else in the namespace is killed with
``kill(-1, SIGKILL)`` (pid 1 is spared; setsid daemons are not) and reaped; then ``/tmp`` and
``/dev/shm`` are emptied and System V IPC objects removed, so the next job starts clean.

This file is only ever run inside the sandbox; it imports nothing from the project.
"""

import atexit
import base64  # noqa: F401  (preloaded: jobs do not pay for the import)
import bisect  # noqa: F401  (preloaded: jobs do not pay for the import)
import cmath  # noqa: F401  (preloaded: jobs do not pay for the import)
import collections  # noqa: F401  (preloaded: jobs do not pay for the import)
import contextlib
import copy  # noqa: F401  (preloaded: jobs do not pay for the import)
import ctypes
import dataclasses  # noqa: F401  (preloaded: jobs do not pay for the import)
import datetime  # noqa: F401  (preloaded: jobs do not pay for the import)
import decimal  # noqa: F401  (preloaded: jobs do not pay for the import)
import faulthandler  # noqa: F401  (preloaded: jobs do not pay for the import)
import fractions  # noqa: F401  (preloaded: jobs do not pay for the import)
import functools  # noqa: F401  (preloaded: jobs do not pay for the import)
import gc
import hashlib  # noqa: F401  (preloaded: jobs do not pay for the import)
import heapq  # noqa: F401  (preloaded: jobs do not pay for the import)
import importlib  # noqa: F401  (preloaded: jobs do not pay for the import)
import io  # noqa: F401  (preloaded: jobs do not pay for the import)
import itertools  # noqa: F401  (preloaded: jobs do not pay for the import)
import json
import math  # noqa: F401  (preloaded: jobs do not pay for the import)
import operator  # noqa: F401  (preloaded: jobs do not pay for the import)
import os
import pickle  # noqa: F401  (preloaded: jobs do not pay for the import)
import random  # noqa: F401  (preloaded for jobs; reseeds itself in each forked child)
import re  # noqa: F401  (preloaded: jobs do not pay for the import)
import resource
import select
import shutil
import signal
import stat
import statistics  # noqa: F401  (preloaded: jobs do not pay for the import)
import string  # noqa: F401  (preloaded: jobs do not pay for the import)
import subprocess  # noqa: F401  (preloaded: jobs do not pay for the import)
import sys
import tempfile  # noqa: F401  (preloaded: jobs do not pay for the import)
import time
import traceback
import types
import typing  # noqa: F401  (preloaded: jobs do not pay for the import)

MB = 1024 * 1024
PRECOMPILE_MAX_CHARS = 200_000
CLEAN_DIRS = ("/tmp", "/dev/shm")
PROTO_IN = os.dup(0)
PROTO_OUT = os.dup(1)
_devnull = os.open("/dev/null", os.O_RDWR)
for _fd in (0, 1, 2):
    os.dup2(_devnull, _fd)
os.close(_devnull)


def run_child(job: dict, fds: tuple[int, int, int], code: types.CodeType | SyntaxError | None) -> None:
    """In the forked child: become the job and never return."""
    exit_code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, 1024)  # the protocol pipes and the other pipe ends
        mem = job["memory_mb"] * MB
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (job["cpu_s"], job["cpu_s"] + 1))
        fsize = job["max_file_mb"] * MB
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        # The zygote itself counts against the per-uid process limit.
        resource.setrlimit(resource.RLIMIT_NPROC, (job["max_processes"] + 1, job["max_processes"] + 1))
        os.chdir("/tmp")
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = main
        sys.argv = ["-c"]
        try:
            if isinstance(code, SyntaxError):  # printed the way python3 -c prints it
                traceback.print_exception(type(code), code, None)
                raise SystemExit(1)
            if code is None:
                code = compile(job["code"], "<string>", "exec")
            exec(code, main.__dict__)
            exit_code = 0
        except SystemExit as e:  # the same exit code python3 -c would give
            if e.code is None:
                exit_code = 0
            elif isinstance(e.code, int):
                exit_code = e.code & 0xFF
            else:
                print(e.code, file=sys.stderr)
                exit_code = 1
        except BaseException as e:  # the traceback python3 -c would print, without this file's frame
            traceback.print_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None)
            exit_code = 1
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
    finally:
        os._exit(exit_code)


def precompile(source: str) -> types.CodeType | SyntaxError | None:
    """Compile here, before the fork: compiling in a forked child costs ~1 ms of copy-on-write faults.

    Only small sources (a large one could make the compiler itself expensive; the child
    compiles those under the job's limits). Returns None to leave compiling to the child.
    """
    if len(source) > PRECOMPILE_MAX_CHARS:
        return None
    try:
        return compile(source, "<string>", "exec")
    except SyntaxError as e:
        return e
    except Exception:  # ValueError (null bytes), RecursionError, MemoryError: let the child meet it
        return None


def run_job(job: dict) -> dict:
    """Run one job in a forked child; return its outcome."""
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    code = precompile(job["code"])
    pid = os.fork()
    if pid == 0:
        run_child(job, (stdin_r, out_w, err_w), code)
    for fd in (stdin_r, out_w, err_w):
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    cap = job["max_output_bytes"]
    kept = {out_r: bytearray(), err_r: bytearray()}
    cut = False
    pending = job["stdin"].encode()
    writing = stdin_w if pending else None
    if writing is None:
        os.close(stdin_w)
    else:
        os.set_blocking(stdin_w, False)
    deadline = time.monotonic() + job["timeout_s"]
    status = None
    reading = [out_r, err_r]
    timed_out = False
    while status is None or reading:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = status is None
            break
        watch = reading + ([pidfd] if status is None else [])
        ready_r, ready_w, _ = select.select(watch, [writing] if writing is not None else [], [], left)
        if ready_w and writing is not None:
            try:
                pending = pending[os.write(writing, pending[:65536]) :]
            except OSError:  # the child closed its stdin
                pending = b""
            if not pending:
                os.close(writing)
                writing = None
        for fd in ready_r:
            if fd == pidfd:
                status = os.waitpid(pid, 0)[1]
                kill_the_rest()  # a grandchild may hold the pipes open: it goes now
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                reading.remove(fd)
                continue
            room = cap - len(kept[fd])
            if room > 0:
                kept[fd] += chunk[:room]
            if len(chunk) > room:
                cut = True
    kill_the_rest()
    if status is None:
        status = os.waitpid(pid, 0)[1]
    reap_all()
    for fd in [out_r, err_r, pidfd] + ([writing] if writing is not None else []):
        os.close(fd)
    clean_state()
    return {
        "stdout": kept[out_r].decode(errors="replace"),
        "stderr": kept[err_r].decode(errors="replace"),
        "exit_code": os.waitstatus_to_exitcode(status),
        "timed_out": timed_out,
        "output_truncated": cut,
    }


def kill_the_rest() -> None:
    """SIGKILL every process of this pid namespace but pid 1 (this zygote)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)


def reap_all() -> None:
    """Wait for every child (the job's orphans are re-parented to pid 1, which is us)."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def clean_state() -> None:
    """Empty the writable directories and drop System V IPC objects the job left behind."""
    for top in CLEAN_DIRS:
        try:
            os.chmod(top, 0o755)
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, onerror=_force_remove)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass
    _remove_sysv_ipc()


def _force_remove(func, path, _exc) -> None:  # type: ignore[no-untyped-def]
    # The job may have taken away its own permissions on a directory: give them back, retry.
    try:
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, stat.S_IRWXU)
        func(path)
    except OSError:
        pass


_IPC_RMID = 0
_IPC_TABLES = (("/proc/sysvipc/shm", "shmctl"), ("/proc/sysvipc/sem", "semctl"), ("/proc/sysvipc/msg", "msgctl"))


def _remove_sysv_ipc() -> None:
    libc = None
    for path, call in _IPC_TABLES:
        try:
            with open(path) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            libc = libc or ctypes.CDLL(None, use_errno=True)
            ipc_id = int(row.split()[1])
            if call == "semctl":
                libc.semctl(ipc_id, 0, _IPC_RMID)
            else:
                getattr(libc, call)(ipc_id, _IPC_RMID, None)


def serve() -> None:
    """Answer jobs until the host closes the pipe."""
    gc.freeze()  # what exists now is never collected: a child's collections do not touch (and copy) it
    out = os.fdopen(PROTO_OUT, "wb", buffering=0)
    out.write(b'{"ready": true}\n')
    for line in os.fdopen(PROTO_IN, "rb"):
        start = time.monotonic()
        try:
            result = run_job(json.loads(line))
        except Exception as e:  # a zygote fault, reported rather than leaving the host waiting
            result = {"stdout": "", "stderr": f"sandbox worker error: {e!r}", "exit_code": None}
        result["duration_s"] = time.monotonic() - start
        out.write(json.dumps(result).encode() + b"\n")


serve()
