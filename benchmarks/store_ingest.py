"""Ingest throughput of the trajectory stores: episodes/s and steps/s, SQLite vs PostgreSQL.

What it measures: the wall time of ``store.append`` for ``--episodes`` episodes of
``--steps`` steps into a fresh store, first from one thread, then from ``--threads`` threads
sharing one store object (how ``asyncio.to_thread`` rollouts use it); then the time of one
``store.query`` reading them all back. Episodes are built before the clock starts, so the
numbers cover serialization, SQL and commit. Each step is a realistic code-agent step of
about 7.5 kB of JSON (system and user messages, a completion with ~150 token ids and logprobs,
an action, an observation: ``memory.testing.sample_trajectory``).

Settings are each backend's defaults as users get them: SQLite is a file in a temporary
directory (WAL, ``synchronous=NORMAL``: a commit does not wait for fsync); PostgreSQL is a
throwaway local server started by ``memory.testing.start_postgres(durable=True)`` (fsync and
``synchronous_commit`` on: every commit waits for fsync), reached over TCP on 127.0.0.1.

Run:
    .venv/bin/python benchmarks/store_ingest.py
    .venv/bin/python benchmarks/store_ingest.py --episodes 500 --steps 10 --threads 4 --no-postgres
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from autodidact.types import Trajectory
from memory import TrajectoryQuery, TrajectoryStore, open_store
from memory.testing import postgres_bin_dir, sample_trajectory, start_postgres


def ingest(store: TrajectoryStore, episodes: list[Trajectory], threads: int) -> float:
    """Append ``episodes`` from ``threads`` threads (round-robin split); return the seconds taken."""
    chunks = [episodes[i::threads] for i in range(threads)]
    start = threading.Barrier(threads + 1)

    def write(chunk: list[Trajectory]) -> None:
        start.wait()
        for t in chunk:
            store.append(t)

    workers = [threading.Thread(target=write, args=(chunk,)) for chunk in chunks]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - t0


@contextmanager
def fresh_postgres_databases(server_url: str) -> Iterator[Callable[[], str]]:
    """A factory of URLs of new empty databases on ``server_url`` (created outside the timings)."""
    import psycopg

    base = server_url.rsplit("/", 1)[0]
    n = 0

    def new() -> str:
        nonlocal n
        n += 1
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE bench_{n}")
        return f"{base}/bench_{n}"

    yield new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()

    print(f"building {args.episodes} episodes x {args.steps} steps ...", flush=True)
    episodes = [sample_trajectory(run_id="bench", n_steps=args.steps, seed=i) for i in range(args.episodes)]
    step_bytes = sum(len(s.model_dump_json()) for s in episodes[0].steps) / args.steps
    n_steps = args.episodes * args.steps
    print(f"step JSON: {step_bytes / 1000:.1f} kB on average; {os.cpu_count()} CPUs; SQLite {sqlite3.sqlite_version}")

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="store-bench-")))
        backends: list[tuple[str, Callable[[], str]]] = []
        counter = iter(range(1_000_000))
        backends.append(("sqlite", lambda: str(tmp / f"bench-{next(counter)}.db")))
        if not args.no_postgres and postgres_bin_dir() is None:
            print("PostgreSQL binaries not found (apt-get install -y postgresql): SQLite only")
        elif not args.no_postgres:
            server = stack.enter_context(start_postgres(durable=True))
            backends.append(("postgres", stack.enter_context(fresh_postgres_databases(server))))

        rows = []
        for name, new_target in backends:
            for threads in (1, args.threads):
                with open_store(new_target()) as store:
                    seconds = ingest(store, episodes, threads)
                    t0 = time.perf_counter()
                    read = store.query(TrajectoryQuery(run_id="bench"))
                    read_s = time.perf_counter() - t0
                    assert len(read) == args.episodes
                rows.append((name, threads, seconds, read_s))
                print(f"  {name}, {threads} thread(s): {seconds:.2f} s", flush=True)

    header = f"{'backend':<9} {'threads':>7} {'seconds':>8} {'episodes/s':>11} {'steps/s':>9} {'MB/s':>6} {'read all, s':>12}"
    print(f"\n{args.episodes} episodes x {args.steps} steps, appended one episode per transaction\n")
    print(header)
    print("-" * len(header))
    for name, threads, seconds, read_s in rows:
        mb_s = n_steps * step_bytes / seconds / 1e6
        print(
            f"{name:<9} {threads:>7} {seconds:>8.2f} {args.episodes / seconds:>11.0f} {n_steps / seconds:>9.0f}"
            f" {mb_s:>6.1f} {read_s:>12.2f}"
        )


if __name__ == "__main__":
    main()
