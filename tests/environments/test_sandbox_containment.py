"""Every sandbox backend (process and docker), attacked one property at a time. After each
attack the host and the same sandbox still serve the next job."""

from __future__ import annotations

import os
import socket
import textwrap
from pathlib import Path

import pytest

from environments.sandbox.base import ExecRequest, ExecResult
from tests.environments.conftest import Backend

PROJECT = Path(__file__).resolve().parents[2]


async def run(backend: Backend, code: str, **limits: object) -> ExecResult:
    request = ExecRequest(code=textwrap.dedent(code), **limits)  # type: ignore[arg-type]
    result = await backend.sandbox.run(request)
    after = await backend.sandbox.run(ExecRequest(code="print('still here')"))
    assert after.ok and after.stdout == "still here\n", after  # the sandbox serves the next job
    return result


async def test_no_tcp_to_a_listener_on_the_hosts_loopback(backend: Backend) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        r = await run(backend, f"import socket\nprint(socket.socket().connect_ex(('127.0.0.1', {port})))")
    assert r.ok and r.stdout.strip() != "0"


async def test_the_network_is_there_only_when_the_request_allows_it(backend: Backend) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        r = await run(backend, f"import socket\nprint(socket.socket().connect_ex(('127.0.0.1', {port})))", network=True)
    assert r.ok and r.stdout.strip() == "0", r  # the control for the test above: the probe itself works


async def test_no_dns(backend: Backend) -> None:
    r = await run(
        backend,
        "import socket\ntry:\n    socket.getaddrinfo('pypi.org', 443)\n    print('resolved')\nexcept OSError:\n    print('no dns')",
    )
    assert r.stdout.strip() == "no dns"


async def test_host_secrets_and_the_project_are_invisible(backend: Backend) -> None:
    r = await run(
        backend,
        f"""
        import os
        print(os.path.exists('/etc/shadow'), os.path.exists({str(PROJECT)!r}), os.path.exists('/root'))
        """,
    )
    assert r.stdout.split() == ["False", "False", "False"]


async def test_the_parents_environment_is_not_inherited(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTODIDACT_TEST_SECRET", "hunter2")
    r = await run(
        backend,
        """
        import os
        def count(path):  # the job's own environment, and its namespace's pid 1 (when readable)
            try:
                return open(path, 'rb').read().count(b'hunter2')
            except OSError:
                return 0
        print(os.environ.get('AUTODIDACT_TEST_SECRET'), count('/proc/self/environ') + count('/proc/1/environ'))
        """,
    )
    assert r.stdout.split() == ["None", "0"]


async def test_writing_outside_the_private_tmp_fails(backend: Backend) -> None:
    r = await run(
        backend,
        """
        for path in ('/usr/evil', '/etc/evil', '/evil'):
            try:
                open(path, 'w').write('x')
                print('wrote', path)
            except OSError:
                print('refused')
        """,
    )
    assert r.stdout.split() == ["refused"] * 3


async def test_fork_bomb_is_contained(backend: Backend) -> None:
    r = await run(
        backend,
        """
        import os
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    import time; time.sleep(30)
                children += 1
        except OSError:
            print('stopped after', children)
        """,
        timeout_s=5,
    )
    assert "stopped after" in r.stdout


async def test_infinite_loop_is_stopped(backend: Backend) -> None:
    r = await run(backend, "while True: pass", timeout_s=1)
    assert r.timed_out and r.duration_s < 5


async def test_memory_hog_is_stopped(backend: Backend) -> None:
    r = await run(backend, "x = bytearray(2 * 1024**3)", memory_mb=256)
    assert r.memory_exceeded and not r.ok


async def test_disk_fill_hits_the_private_tmpfs_limit(backend: Backend) -> None:
    r = await run(
        backend,
        """
        try:
            with open('/tmp/fill', 'wb') as f:
                for _ in range(64):
                    f.write(b'0' * 1024 * 1024)
            print('filled')
        except OSError as e:
            print('full', e.errno)
        """,
        disk_mb=8,
        max_file_mb=1024,
    )
    assert r.stdout.startswith("full")


async def test_output_flood_is_truncated(backend: Backend) -> None:
    r = await run(
        backend, "import sys\nwhile True: sys.stdout.write('x' * 65536)", timeout_s=2, max_output_bytes=10_000
    )
    assert r.output_truncated and len(r.stdout) == 10_000


async def test_a_daemon_does_not_outlive_the_job(backend: Backend) -> None:
    marker = "300.0424242"  # the daemon's argument, to find it among the host's processes
    r = await run(
        backend,
        f"""
        import os
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv('/usr/bin/sleep', ['sleep', '{marker}'])
            os._exit(0)
        print('parent done')
        """,
    )
    assert r.stdout.strip() == "parent done"
    alive = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
                if Path(entry.path, "cmdline").read_bytes() == f"sleep\0{marker}\0".encode() and state != "Z":
                    alive.append(entry.name)
            except OSError:
                pass
    assert alive == []


async def test_the_job_cannot_kill_the_host_process(backend: Backend) -> None:
    host = os.getpid()  # the pid of this test process, as the host sees it
    r = await run(
        backend,
        f"""
        import os, signal
        try:
            os.kill({host}, signal.SIGKILL)  # the job has its own pid namespace: the host's pids are not there
            print('killed')
        except OSError as e:
            print(type(e).__name__)
        """,
    )
    assert r.ok and r.stdout.split() == ["ProcessLookupError"]
