"""Helpers for testing and benchmarking stores: a throwaway PostgreSQL server, sample episodes.

:func:`start_postgres` runs a private PostgreSQL cluster on 127.0.0.1 (a free port, a data
directory in a fresh temporary directory) and deletes it afterwards. PostgreSQL refuses to
run as root, so under root the server runs as the ``postgres`` system user. The tests'
``store`` fixture and ``benchmarks/store_ingest.py`` both use it. :class:`PostgresServer` is
the same server as an object that can also be stopped and started again (fault tests).

Example:
    >>> with start_postgres() as url:  # doctest: +SKIP
    ...     store = open_store(url)
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autodidact.errors import StoreError
from autodidact.types import Action, Message, Observation, PolicyRef, SamplingParams, Step, Task, Trajectory

_SERVER_USER = "postgres"


def postgres_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (newest Debian version first), or None."""
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if debian:
        return Path(debian[-1]).parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 that can be stopped and started again.

    Entering it creates the cluster (a data directory in a fresh temporary directory) and
    starts the server on a free port; :meth:`stop` and :meth:`start` take it down and bring it
    back on the same port (to test what clients do when the database goes away); leaving it
    stops the server and deletes its files. Under root the server runs as the ``postgres``
    system user (PostgreSQL refuses to run as root).

    Args:
        durable: keep PostgreSQL's defaults (fsync, synchronous commit). Off by default,
            which makes tests fast; benchmarks turn it on to measure what users get.
        bin_dir: where ``initdb`` and ``pg_ctl`` are; found with :func:`postgres_bin_dir` if None.

    Example:
        >>> with PostgresServer() as server:  # doctest: +SKIP
        ...     server.stop(); server.start()
        ...     store = open_store(server.url)
    """

    def __init__(self, *, durable: bool = False, bin_dir: Path | None = None) -> None:
        self.durable = durable
        self.bin_dir = bin_dir or postgres_bin_dir()
        self.port = 0
        self.running = False
        self._as_server_user = ["runuser", "-u", _SERVER_USER, "--"] if os.geteuid() == 0 else []
        self._tmp: Path | None = None

    @property
    def url(self) -> str:
        """The superuser URL: ``postgresql://postgres@127.0.0.1:<port>/postgres``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def __enter__(self) -> PostgresServer:
        """Create the cluster and start the server on a free port.

        Raises:
            StoreError: no PostgreSQL binaries, or the server did not start (its log is quoted).
        """
        if self.bin_dir is None:
            raise StoreError("PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install -y postgresql")
        self._tmp = Path(tempfile.mkdtemp(prefix="autodidact-pg-"))
        try:
            if self._as_server_user:
                shutil.chown(self._tmp, _SERVER_USER, _SERVER_USER)
            self._run(
                self.bin_dir / "initdb", "-D", self._tmp / "data", "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--no-sync",
            )  # fmt: skip
            for attempt in range(3):  # another process may take the free port before the server does
                self.port = _free_port()
                try:
                    self.start()
                    break
                except StoreError:
                    if attempt == 2:
                        raise
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.running:
                self.stop()
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def start(self) -> None:
        """Start the server on its port and wait until it accepts connections."""
        assert self._tmp is not None and self.bin_dir is not None, "enter the PostgresServer first"
        settings = f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={self._tmp}"
        if not self.durable:
            settings += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        data, log = self._tmp / "data", self._tmp / "server.log"
        self._run(
            self.bin_dir / "pg_ctl",
            "-D",
            data,
            "-l",
            log,
            "-w",
            "-t",
            "60",
            "-o",
            f"{settings} -p {self.port}",
            "start",
        )
        self.running = True

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``: connections are cut, as in a crash)."""
        assert self._tmp is not None and self.bin_dir is not None, "enter the PostgresServer first"
        self._run(self.bin_dir / "pg_ctl", "-D", self._tmp / "data", "-m", "immediate", "-w", "stop")
        self.running = False

    def _run(self, *args: str | Path) -> None:
        assert self._tmp is not None
        cmd = [*self._as_server_user, *map(str, args)]
        done = subprocess.run(cmd, cwd=self._tmp, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self._tmp / "server.log"
            server_log = log.read_text()[-2000:] if log.exists() else ""
            raise StoreError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-2000:]}\n{server_log}")


@contextmanager
def start_postgres(*, durable: bool = False, bin_dir: Path | None = None) -> Iterator[str]:
    """Run a throwaway PostgreSQL server; yield a superuser URL; stop it and delete its files.

    (A :class:`PostgresServer` that is not stopped midway; use that class to stop and restart it.)

    Args:
        durable: keep PostgreSQL's defaults (fsync, synchronous commit). Off by default,
            which makes tests fast; benchmarks turn it on to measure what users get.
        bin_dir: where ``initdb`` and ``pg_ctl`` are; found with :func:`postgres_bin_dir` if None.

    Raises:
        StoreError: no PostgreSQL binaries, or the server did not start (its log is quoted).
    """
    with PostgresServer(durable=durable, bin_dir=bin_dir) as server:
        yield server.url


_WORDS = ("the", "a", "list", "of", "values", "returns", "function", "def", "return", "for", "in", "if", "else",
          "while", "sum", "count", "index", "error")  # fmt: skip


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    length = 0
    while length < chars:
        words.append(rng.choice(_WORDS))
        length += len(words[-1]) + 1
    return " ".join(words)[:chars]


def sample_trajectory(
    *,
    run_id: str = "run",
    task_id: str = "bundled/last",
    suite: str = "bundled",
    n_steps: int = 3,
    success: bool = False,
    round: int = 0,
    chars: int = 200,
    seed: int = 0,
) -> Trajectory:
    """A plausible code episode: ``n_steps`` steps with messages, tokens, logprobs, actions.

    ``chars`` sizes each message: the system prompt is 4x, the user turn 6x, the completion
    3x, the observation 2x (at 200, a step serializes to about 7.5 kB).
    """
    rng = random.Random(seed)
    steps = []
    for i in range(n_steps):
        completion = _text(rng, 3 * chars)
        n_tokens = max(1, len(completion) // 4)
        steps.append(
            Step(
                index=i,
                role="solver",
                messages=(
                    Message(role="system", content=_text(rng, 4 * chars)),
                    Message(role="user", content=_text(rng, 6 * chars)),
                ),
                completion=completion,
                token_ids=tuple(rng.randrange(49152) for _ in range(n_tokens)),
                logprobs=tuple(-rng.expovariate(2.0) for _ in range(n_tokens)),
                action=Action(kind="code", text=_text(rng, chars)),
                observation=Observation(text=_text(rng, 2 * chars), data={"exit_code": i % 2, "duration_s": 0.01}),
                reward=1.0 if success and i == n_steps - 1 else 0.0,
                terminated=i == n_steps - 1,
                latency_s=rng.random(),
            )
        )
    return Trajectory(
        id=f"{rng.getrandbits(128):032x}",
        run_id=run_id,
        task=Task(id=task_id, suite=suite, prompt=_text(rng, chars), payload={"tests": ["assert last([1]) == 1"]}),
        env_id="code",
        policy=PolicyRef(model="smollm2-135m", backend="transformers", sampling=SamplingParams(temperature=0.8)),
        steps=tuple(steps),
        reward=1.0 if success else 0.0,
        success=success,
        round=round,
        started_at=1_700_000_000.0 + seed,
        duration_s=rng.random() * 10,
    )
