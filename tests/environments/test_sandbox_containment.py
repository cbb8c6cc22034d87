"""The process sandbox, attacked one property at a time. After each attack the host and the
sandbox still serve the next job."""

from __future__ import annotations

import os
import shutil
import socket
import textwrap
from pathlib import Path

import pytest

from environments.sandbox.base import ExecRequest, ExecResult
from environments.sandbox.process import SLOT_UID_BASE, SLOTS, ProcessSandbox

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (make setup installs it)"
)

PROJECT = Path(__file__).resolve().parents[2]


async def run(code: str, **limits: object) -> ExecResult:
    sandbox = ProcessSandbox()
    result = await sandbox.run(ExecRequest(code=textwrap.dedent(code), **limits))  # type: ignore[arg-type]
    after = await sandbox.run(ExecRequest(code="print('still here')"))
    assert after.ok and after.stdout == "still here\n", after  # the sandbox serves the next job
    return result


async def test_no_tcp_to_a_listener_on_the_hosts_loopback() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        r = await run(f"import socket\nprint(socket.socket().connect_ex(('127.0.0.1', {port})))")
    assert r.ok and r.stdout.strip() != "0"


async def test_no_dns() -> None:
    r = await run(
        "import socket\ntry:\n    socket.getaddrinfo('pypi.org', 443)\n    print('resolved')\nexcept OSError:\n    print('no dns')"
    )
    assert r.stdout.strip() == "no dns"


async def test_host_secrets_and_the_project_are_invisible() -> None:
    r = await run(
        f"""
        import os
        print(os.path.exists('/etc/shadow'), os.path.exists({str(PROJECT)!r}), os.path.exists('/root'))
        """
    )
    assert r.stdout.split() == ["False", "False", "False"]


async def test_the_parents_environment_is_not_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTODIDACT_TEST_SECRET", "hunter2")
    r = await run(
        "import os\nprint(os.environ.get('AUTODIDACT_TEST_SECRET'), open('/proc/1/environ','rb').read().count(b'hunter2'))"
    )
    assert r.stdout.split() == ["None", "0"]


async def test_writing_outside_the_private_tmp_fails() -> None:
    r = await run(
        """
        for path in ('/usr/evil', '/etc/evil', '/evil'):
            try:
                open(path, 'w').write('x')
                print('wrote', path)
            except OSError:
                print('refused')
        """
    )
    assert r.stdout.split() == ["refused"] * 3


async def test_fork_bomb_is_contained() -> None:
    r = await run(
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


async def test_infinite_loop_is_stopped() -> None:
    r = await run("while True: pass", timeout_s=1)
    assert r.timed_out and r.duration_s < 5


async def test_memory_hog_is_stopped() -> None:
    r = await run("x = bytearray(2 * 1024**3)", memory_mb=256)
    assert r.memory_exceeded and not r.ok


async def test_disk_fill_hits_the_private_tmpfs_limit() -> None:
    r = await run(
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


async def test_output_flood_is_truncated() -> None:
    r = await run("import sys\nwhile True: sys.stdout.write('x' * 65536)", timeout_s=2, max_output_bytes=10_000)
    assert r.output_truncated and len(r.stdout) == 10_000


async def test_a_daemon_does_not_outlive_the_job() -> None:
    r = await run(
        """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(300)
            os._exit(0)
        print('parent done')
        """
    )
    assert r.stdout.strip() == "parent done"
    slot_uids = range(SLOT_UID_BASE, SLOT_UID_BASE + SLOTS)
    alive = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
                if os.stat(entry.path).st_uid in slot_uids and state != "Z":
                    alive.append(entry.name)
            except OSError:
                pass
    assert alive == []


async def test_the_job_cannot_kill_the_host_process() -> None:
    host = os.getpid()  # the pid of this test process, as the host sees it
    r = await run(
        f"""
        import os, signal
        print(os.getpid(), os.getppid())  # pid 1 of its own namespace; the parent is outside it
        try:
            os.kill({host}, signal.SIGKILL)
            print('killed')
        except OSError as e:
            print(type(e).__name__)
        """
    )
    assert r.ok and r.stdout.split() == ["1", "0", "ProcessLookupError"]
