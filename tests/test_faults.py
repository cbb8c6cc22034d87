"""Faults a run survives, one test each, with the real part failing under a running rollout.

A sandbox worker, Chromium or an environment's server that dies mid-episode: that episode is
stored with an error naming what died, later episodes run on a replacement, the run finishes.
A model server restarted mid-run: requests are retried and every episode completes. The
store's disk full or its database gone: the run stops with a one-line StoreError, nothing is
stored in part, and resuming the run stores the rest. Models are scripted (the faults are the
point); the sandbox, browser, servers, disk and database are real.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from agents.llm.openai_compat import OpenAIChatModel
from agents.llm.server import running_server
from agents.rollout import RunConfig, run_rollout
from autodidact.errors import StoreError
from autodidact.types import Completion, Message, SamplingParams, Task
from environments.tasks import load_suite
from memory.base import TrajectoryQuery, open_store
from tests.agents.scripted import GOOD, TASK, ScriptedModel
from tests.test_end_to_end import cli

ROOT = Path(__file__).resolve().parents[1]
SLEEPY = "```python\ndef last(xs):\n    import time\n    time.sleep(30)\n    return xs[-1]\n```"


class FaultAt:
    """A ChatModel that runs ``fault`` once, before its ``at``-th call (1-based) is answered."""

    def __init__(self, model: object, at: int, fault: Callable[[], Awaitable[None] | None]) -> None:
        self.model, self.at, self.fault = model, at, fault
        self.name = getattr(model, "name", "faulty")
        self.calls = 0

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        self.calls += 1
        if self.calls == self.at:
            done = self.fault()
            if done is not None:
                await done
        return await self.model.generate(conversations, sampling)  # type: ignore[attr-defined,no-any-return]

    async def aclose(self) -> None:
        await self.model.aclose()  # type: ignore[attr-defined]


def _stored(store_url: str, run_id: str) -> list:  # type: ignore[type-arg]
    with open_store(store_url) as store:
        return store.query(TrajectoryQuery(run_id=run_id))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- a sandbox worker dies -----------------------------------------------------------------------


async def test_a_sandbox_worker_killed_mid_episode_errors_that_episode_and_is_replaced(tmp_path: Path) -> None:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed: no warm workers to kill (make setup installs it)")
    from environments.sandbox import process

    loop = asyncio.get_running_loop()
    killed: list[int] = []
    pools: list[process._Pool] = []

    async def kill_the_busy_worker() -> None:
        deadline = loop.time() + 10
        while loop.time() < deadline:
            for (owner, _), pool in list(process._POOLS.items()):
                busy = pool.workers - set(pool.free._queue)  # type: ignore[attr-defined]
                if owner is loop and busy:
                    await asyncio.sleep(0.3)  # the job is in its sleep by now
                    [worker] = busy
                    killed.append(worker.proc.pid)
                    pools.append(pool)
                    os.killpg(worker.proc.pid, signal.SIGKILL)  # bwrap; the zygote dies with it
                    return
            await asyncio.sleep(0.02)

    killer: list[asyncio.Task[None]] = []
    # The first answer's hidden tests sleep 30 s in the sandbox: its worker is killed meanwhile.
    model = FaultAt(
        ScriptedModel([SLEEPY, GOOD]), at=1, fault=lambda: killer.append(loop.create_task(kill_the_busy_worker()))
    )
    store_url = str(tmp_path / "s.db")
    with open_store(store_url) as store:
        # hidden-test feedback: one sandbox job per submission (visible feedback runs the visible tests beside it)
        cfg = RunConfig(run_id="sandbox-dies", samples_per_task=4, concurrency=1, env_options={"feedback": "hidden"})
        result = await asyncio.wait_for(run_rollout(cfg, model, store, tasks=[TASK], progress=False), 60)
    await killer[0]
    [pid] = killed
    first, *rest = _stored(store_url, "sandbox-dies")
    assert len(rest) == 3 and len(result.episodes) == 4
    assert first.error and "SandboxUnavailableError" in first.error and not first.success
    assert f"sandbox worker (pid {pid}" in first.error and "died (killed by SIGKILL)" in first.error
    assert all(t.success and t.error is None for t in rest)  # on a replacement worker
    [pool] = pools
    assert pid not in {w.proc.pid for w in pool.workers}  # the dead worker is gone,
    assert pool.workers and all(w.proc.returncode is None for w in pool.workers)  # its replacement is alive,
    assert pool.free.qsize() == pool.size  # and its place came back (a new worker starts in it on demand)


# -- Chromium dies --------------------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, command name)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        out[int(entry.name)] = (int(stat[stat.rindex(")") + 2 :].split()[1]), name)
    return out


def _my_browsers() -> list[int]:
    """The main Chromium processes this process started (through Playwright's driver)."""
    procs = _processes()

    def mine(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = procs.get(pid, (0, ""))[0]
        return False

    return [
        pid
        for pid, (parent, name) in procs.items()
        if "chrom" in name and "chrom" not in procs.get(parent, (0, ""))[1] and mine(pid)
    ]


def _miniwob(name: str) -> Task:
    pytest.importorskip("playwright", reason="the web environment needs Playwright")
    try:
        [task] = [t for t in load_suite("miniwob") if t.payload["name"] == name]
    except Exception as e:  # the miniwob wheel is missing
        pytest.skip(f"MiniWoB++ is not installed: {e}")
    return task


async def test_chromium_killed_mid_episode_errors_that_episode_and_is_relaunched(tmp_path: Path) -> None:
    task = _miniwob("click-test")
    from environments.web import browser

    before: list[int] = []

    async def kill_chromium() -> None:  # the episode's page is open: its reset ran
        before.extend(_my_browsers())
        assert before, "no Chromium found under this process"
        for pid in before:
            os.kill(pid, signal.SIGKILL)

    model = FaultAt(ScriptedModel(['click("Click Me!")']), at=1, fault=kill_chromium)
    store_url = str(tmp_path / "s.db")
    with open_store(store_url) as store:
        cfg = RunConfig(env="web", run_id="chromium-dies", samples_per_task=3, concurrency=1, max_steps=3)
        await asyncio.wait_for(run_rollout(cfg, model, store, tasks=[task], progress=False), 60)
    first, *rest = _stored(store_url, "chromium-dies")
    assert first.error and "BrowserUnavailableError: Chromium died during this episode" in first.error, first.error
    assert len(rest) == 2 and all(t.success and t.error is None for t in rest)
    after = _my_browsers()
    assert after and not set(after) & set(before)  # a new Chromium
    assert (await browser.browser()).is_connected()


# -- the environment's server dies -----------------------------------------------------------------


async def test_a_site_server_shut_down_mid_episode_errors_that_episode_and_is_replaced(tmp_path: Path) -> None:
    pytest.importorskip("playwright", reason="the web environment needs Playwright")
    from environments.web.sites.base import site_server

    tasks = [t for t in load_suite("forum") if t.payload["goal"]["family"] == "question"][:3]
    dead = []

    async def shut_down() -> None:  # between the episode's first and second action
        dead.append(site_server())
        await asyncio.to_thread(dead[0].shutdown)

    script = [a for t in tasks for a in ('goto("/forum/")', f'answer("{t.payload["goal"]["answer"]}")')]
    model = FaultAt(ScriptedModel(script), at=2, fault=shut_down)
    store_url = str(tmp_path / "s.db")
    with open_store(store_url) as store:
        cfg = RunConfig(env="web", run_id="site-dies", concurrency=1, max_steps=3)
        await asyncio.wait_for(run_rollout(cfg, model, store, tasks=tasks, progress=False), 60)
    first, *rest = sorted(_stored(store_url, "site-dies"), key=lambda t: tasks.index(t.task))
    assert first.error and "EnvironmentUnavailableError" in first.error
    assert f"the bundled sites' server at {dead[0].origin} stopped during this episode" in first.error
    assert [s.observation is not None for s in first.steps] == [True]  # the first action ran, the second never did
    assert len(rest) == 2 and all(t.success and t.error is None for t in rest)  # on a new server
    assert site_server() is not dead[0] and site_server().alive


# -- the model server restarts ----------------------------------------------------------------------


def _start_model_server(port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.scripted_server", str(port), str(log)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the scripted model server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the scripted model server did not start within 30 s")


async def test_a_model_server_restarted_mid_run_is_retried_and_every_episode_completes(tmp_path: Path) -> None:
    port, log = _free_port(), tmp_path / "requests.log"
    servers = [_start_model_server(port, log)]

    async def restart() -> None:  # a request is in flight: the server answers after 0.5 s
        await asyncio.sleep(0.15)
        servers[0].kill()
        await asyncio.to_thread(servers[0].wait)
        servers.append(await asyncio.to_thread(_start_model_server, port, log))

    restarting: list[asyncio.Task[None]] = []
    client = OpenAIChatModel(
        base_url=f"http://127.0.0.1:{port}/v1", model="scripted", timeout_s=10, max_retries=6, backoff_s=0.2
    )
    model = FaultAt(client, at=3, fault=lambda: restarting.append(asyncio.get_running_loop().create_task(restart())))
    store_url = str(tmp_path / "s.db")
    try:
        with open_store(store_url) as store:
            cfg = RunConfig(run_id="model-restarts", samples_per_task=6, concurrency=2, model="scripted")
            result = await asyncio.wait_for(run_rollout(cfg, model, store, tasks=[TASK], progress=False), 60)
        await restarting[0]
    finally:
        await client.aclose()
        for proc in servers:
            proc.kill()
            proc.wait()
    stored = _stored(store_url, "model-restarts")
    assert len(stored) == 6 and len(result.episodes) == 6
    assert all(t.success and t.error is None for t in stored), [t.error for t in stored]
    lines = [line.split() for line in log.read_text().splitlines()]
    old, new = str(servers[0].pid), str(servers[1].pid)
    started = sum(1 for pid, what in lines if pid == old and what == "start")
    answered = sum(1 for pid, what in lines if pid == old and what == "end")
    assert started > answered  # the killed server had requests in flight: they were sent again
    assert sum(1 for pid, what in lines if pid == new and what == "end") >= 6 - answered


# -- the store's disk is full ------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for the test (needs root: CI runs as root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> None:
    """Write a ballast file until the disk has no space left."""
    with open(disk / "ballast", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as e:
            assert e.errno == errno.ENOSPC


async def test_a_full_disk_stops_the_run_cleanly_and_resume_stores_the_rest(small_disk: Path) -> None:
    path = str(small_disk / "trajectories.db")
    cfg = RunConfig(run_id="disk-full", samples_per_task=8, concurrency=2)
    with open_store(path) as store:

        async def fill_once_two_are_stored() -> None:
            while await asyncio.to_thread(store.count, TrajectoryQuery(run_id="disk-full")) < 2:
                await asyncio.sleep(0.01)
            _fill(small_disk)

        model = FaultAt(ScriptedModel([GOOD]), at=4, fault=fill_once_two_are_stored)
        start = time.monotonic()
        with pytest.raises(StoreError) as caught:
            await asyncio.wait_for(run_rollout(cfg, model, store, tasks=[TASK], progress=False), 60)
        calls = model.calls
        message = str(caught.value)
        assert "disk is full; free some space" in message and "\n" not in message
        assert "run disk-full stopped" in message and "autodidact run --resume disk-full" in message
        assert time.monotonic() - start < 30
        stored = store.query(TrajectoryQuery(run_id="disk-full"))
    assert 2 <= len(stored) < 8
    assert all(t.success and len(t.steps) == 1 and t.steps[0].observation is not None for t in stored)  # whole
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    await asyncio.sleep(0.5)
    assert model.calls == calls < 8  # the episodes in flight were cancelled, the rest never started
    (small_disk / "ballast").unlink()  # space is free again
    with open_store(path) as store:
        result = await run_rollout(cfg, ScriptedModel([GOOD]), store, tasks=[TASK], progress=False, resume=True)
        after = store.query(TrajectoryQuery(run_id="disk-full"))
    assert result.skipped == len(stored) and len(result.episodes) == 8 - len(stored)
    assert len(after) == 8 and len({t.id for t in after}) == 8 and all(t.success for t in after)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# -- the database goes away ---------------------------------------------------------------------------


def test_postgres_stopped_mid_run_is_one_line_error_and_the_run_resumes(_isolated_home: Path) -> None:
    from memory.testing import PostgresServer, postgres_bin_dir

    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL binaries not found in /usr/lib/postgresql/*/bin (apt-get install -y postgresql)")
    import psycopg

    with PostgresServer(durable=True) as db:  # commits survive the crash-like stop
        # The model server stops the database before its third answer: episode 3 cannot be stored.
        model = FaultAt(ScriptedModel([GOOD]), at=3, fault=db.stop)
        with running_server(model, "scripted") as base_url:  # type: ignore[arg-type]
            args = ("--store", db.url, "--run-id", "pg-down", "--limit", "1", "--samples", "5")
            failed = cli(_isolated_home, "run", "--model", base_url, "--concurrency", "1", *args, ok=False)
            assert failed.returncode == 2, failed.stderr[-3000:]
            [line] = failed.stderr.strip().splitlines()
            assert line.startswith("error: ") and f"PostgreSQL at 127.0.0.1:{db.port}" in line, line
            assert "is the server running?" in line and "autodidact run --resume pg-down" in line
            db.start()
            with psycopg.connect(db.url) as conn:  # nothing stored in part: every step row has its episode
                [(episodes, steps, orphans)] = conn.execute(
                    "SELECT (SELECT count(*) FROM trajectories), (SELECT count(*) FROM steps),"
                    " (SELECT count(*) FROM steps s WHERE NOT EXISTS"
                    "  (SELECT 1 FROM trajectories t WHERE t.id = s.trajectory_id))"
                ).fetchall()
            assert episodes == 2 and steps == 2 and orphans == 0
            resumed = cli(_isolated_home, "run", "--resume", "pg-down", "--store", db.url)
        assert "2 already stored" in resumed.stdout
        stored = _stored(db.url, "pg-down")
        with open_store(db.url) as store:  # a store open in this process while the server restarts
            with store._pool.connection(), store._pool.connection():  # type: ignore[attr-defined]
                pass  # two idle connections, both dead once the server restarts
            db.stop()
            db.start()
            with pytest.raises(StoreError, match="lost the connection to PostgreSQL"):
                store.count()
            assert store.count(TrajectoryQuery(run_id="pg-down")) == 5  # the other dead one was dropped too
    assert len(stored) == 5 and all(t.success and t.error is None for t in stored)
