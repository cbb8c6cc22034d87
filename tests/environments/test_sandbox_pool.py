"""The process sandbox's warm pool: each job starts clean, faults replace workers, odd requests run cold."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal

import pytest

from autodidact.errors import SandboxUnavailableError
from environments.sandbox import process
from environments.sandbox.base import ExecRequest
from environments.sandbox.process import ProcessSandbox

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (make setup installs it)"
)

PID_IN_NAMESPACE = "import os; print(os.getpid())"


async def test_jobs_run_on_warm_workers_and_each_starts_clean() -> None:
    box = ProcessSandbox(pool_size=1)
    first = await box.run(
        ExecRequest(
            code="open('/tmp/left', 'w').write('x'); open('/dev/shm/left', 'w').write('x'); import os; print(os.getpid())"
        )
    )
    assert first.ok and first.stdout.strip() != "1", first  # a forked child, not the container's pid 1
    second = await box.run(
        ExecRequest(code="import os; print(os.listdir('/tmp'), os.listdir('/dev/shm'), os.getppid())")
    )
    assert second.ok and second.stdout.split()[:2] == ["[]", "[]"], second
    assert second.stdout.split()[2] == "1"  # forked by the zygote, which is pid 1 of the worker's namespace
    assert len(process._POOLS) >= 1


async def test_a_daemon_left_by_one_job_is_gone_before_the_next() -> None:
    box = ProcessSandbox(pool_size=1)
    await box.run(
        ExecRequest(
            code="import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')"
        )
    )
    r = await box.run(ExecRequest(code="import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"))
    pids = eval(r.stdout)
    assert len(pids) == 2 and pids[0] == 1, r  # the zygote and this job, nothing else


async def test_each_job_has_its_own_random_state_and_a_fresh_main() -> None:
    box = ProcessSandbox(pool_size=1)
    a = await box.run(ExecRequest(code="import random; print(random.random()); x = 1"))
    b = await box.run(ExecRequest(code="import random; print(random.random()); print('x' in globals())"))
    assert a.stdout.split()[0] != b.stdout.split()[0]
    assert b.stdout.split()[1] == "False"


async def test_exit_codes_and_tracebacks_look_like_python_dash_c() -> None:
    box = ProcessSandbox(pool_size=1)
    assert (await box.run(ExecRequest(code="import sys; sys.exit(3)"))).exit_code == 3
    r = await box.run(ExecRequest(code="raise ValueError('boom')"))
    assert r.exit_code == 1 and r.stderr.splitlines()[1].strip() == 'File "<string>", line 1, in <module>'
    assert "_zygote" not in r.stderr
    assert (await box.run(ExecRequest(code="print(input())", stdin="hi\n"))).stdout == "hi\n"


async def test_a_dead_worker_is_replaced_and_the_job_reports_it() -> None:
    box = ProcessSandbox(pool_size=1)
    await box.run(ExecRequest(code="pass"))
    pool = process._POOLS[(asyncio.get_running_loop(), box._pool_key())]
    worker = pool.free._queue[0]  # type: ignore[attr-defined]
    job = asyncio.ensure_future(box.run(ExecRequest(code="import time; time.sleep(30)", timeout_s=20)))
    await asyncio.sleep(0.3)
    os.killpg(worker.proc.pid, signal.SIGKILL)
    with pytest.raises(
        SandboxUnavailableError, match=rf"worker \(pid {worker.proc.pid}.*\) died \(killed by SIGKILL\)"
    ):
        await asyncio.wait_for(job, 10)
    assert (await box.run(ExecRequest(code="print('next')"))).stdout == "next\n"


async def test_a_cancelled_job_does_not_poison_the_pool() -> None:
    box = ProcessSandbox(pool_size=1)
    job = asyncio.ensure_future(box.run(ExecRequest(code="import time; time.sleep(30)", timeout_s=20)))
    await asyncio.sleep(0.5)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert (await asyncio.wait_for(box.run(ExecRequest(code="print('next')")), 10)).stdout == "next\n"


async def test_more_jobs_than_workers_all_complete() -> None:
    box = ProcessSandbox(pool_size=2)
    results = await asyncio.gather(*(box.run(ExecRequest(code=f"print({i})")) for i in range(20)))
    assert [r.stdout.strip() for r in results] == [str(i) for i in range(20)]


@pytest.mark.parametrize("request_kwargs", [{"network": True}, {"disk_mb": 8}], ids=["network", "other-disk"])
async def test_requests_the_pool_was_not_built_for_run_cold(request_kwargs: dict[str, object]) -> None:
    r = await ProcessSandbox(pool_size=1).run(ExecRequest(code=PID_IN_NAMESPACE, **request_kwargs))  # type: ignore[arg-type]
    assert r.ok and r.stdout.strip() == "1"  # a cold job is pid 1 of its own container


@pytest.mark.parametrize("pool_size", [0, 1], ids=["cold", "warm"])
async def test_dev_is_read_only_and_dev_shm_is_small(pool_size: int) -> None:
    r = await ProcessSandbox(pool_size=pool_size).run(
        ExecRequest(
            code=(
                "import os\n"
                "try:\n    open('/dev/x', 'w'); print('dev writable')\nexcept OSError: print('dev read-only')\n"
                "n = 0\n"
                "try:\n"
                "    for i in range(64):\n"
                "        with open(f'/dev/shm/f{i}', 'wb') as f: f.write(b'x' * 1024 * 1024)\n"
                "        n += 1\n"
                "except OSError: pass\n"
                "print(n)"
            )
        )
    )
    lines = r.stdout.split("\n")
    assert lines[0] == "dev read-only" and int(lines[1]) <= process.SHM_MB, r
