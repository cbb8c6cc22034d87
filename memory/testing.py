"""Helpers for testing and benchmarking stores: a throwaway PostgreSQL server, sample episodes.

:func:`start_postgres` runs a private PostgreSQL cluster on 127.0.0.1 (a free port, a data
directory in a fresh temporary directory) and deletes it afterwards. PostgreSQL refuses to
run as root, so under root the server runs as the ``postgres`` system user. The tests'
``store`` fixture and ``benchmarks/store_ingest.py`` both use it.

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


@contextmanager
def start_postgres(*, durable: bool = False, bin_dir: Path | None = None) -> Iterator[str]:
    """Run a throwaway PostgreSQL server; yield a superuser URL; stop it and delete its files.

    Args:
        durable: keep PostgreSQL's defaults (fsync, synchronous commit). Off by default,
            which makes tests fast; benchmarks turn it on to measure what users get.
        bin_dir: where ``initdb`` and ``pg_ctl`` are; found with :func:`postgres_bin_dir` if None.

    Raises:
        StoreError: no PostgreSQL binaries, or the server did not start (its log is quoted).
    """
    bin_dir = bin_dir or postgres_bin_dir()
    if bin_dir is None:
        raise StoreError("PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install -y postgresql")
    as_server_user = ["runuser", "-u", _SERVER_USER, "--"] if os.geteuid() == 0 else []
    tmp = Path(tempfile.mkdtemp(prefix="autodidact-pg-"))
    data, log = tmp / "data", tmp / "server.log"

    def run(*args: str | Path) -> None:
        cmd = [*as_server_user, *map(str, args)]
        done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            server_log = log.read_text()[-2000:] if log.exists() else ""
            raise StoreError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-2000:]}\n{server_log}")

    try:
        if as_server_user:
            shutil.chown(tmp, _SERVER_USER, _SERVER_USER)
        run(bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
        settings = f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={tmp}"
        if not durable:
            settings += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        for attempt in range(3):  # another process may take the free port before the server does
            port = _free_port()
            try:
                run(bin_dir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o", f"{settings} -p {port}", "start")
                break
            except StoreError:
                if attempt == 2:
                    raise
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
