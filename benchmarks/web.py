"""Web environment speed and memory, side by side with a plain Playwright loop (the floor).

Run: ``.venv/bin/python benchmarks/web.py [--episodes 40] [--tasks click-test,click-button,...]``.

Measured in one run, on the same MiniWoB++ tasks and the same Chromium:

- **floor**: a plain Playwright loop on one reused page: goto + start episode + aria snapshot
  (reset), click + aria snapshot (step) — no contexts, no refs, no safety route (the floor the
  issue names);
- **fresh-context floor**: the same loop, but each episode in a new browser context made just
  before it (what per-episode isolation costs by itself: a new renderer, an empty cache);
- **ours**: ``WebEnvironment.reset`` (a fresh isolated context per episode, allowlist route,
  observation) and ``step`` (typed action + judge + observation): p50/p90 latencies;
- all three sides idle ``--gap`` seconds, untimed, before every reset and every step: the
  model's turn in a real rollout (ours prepares the next episode's context in it);
- episodes/s with 1, 8 and 32 episodes at once in one browser (each: reset + scripted steps
  until done), errors counted;
- memory per concurrent context: the browser's processes' proportional set size (PSS, from
  /proc/*/smaps_rollup) with N contexts open minus with none, divided by N.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import time
from pathlib import Path
from typing import Any

from environments.tasks import load_suite
from environments.web import browser as browsers
from environments.web import miniwob
from environments.web.actions import make_action
from environments.web.env import WebEnvironment
from environments.web.observe import find
from environments.web.policies import ReferencePolicy


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _floor_episode(page: Any, name: str, i: int, gap: float) -> tuple[float, float]:
    await asyncio.sleep(gap)
    t = time.perf_counter()
    await page.goto(f"{miniwob.origin()}/miniwob/{name}.html")
    await page.evaluate(miniwob._START, [i, 600_000, 10_000])  # the same one-round-trip start as ours
    await page.locator("body").aria_snapshot(mode="ai")
    reset = time.perf_counter() - t
    await asyncio.sleep(gap)
    t = time.perf_counter()
    await page.locator("#area button, #area input[type=checkbox], #area input").first.click()
    await page.locator("body").aria_snapshot(mode="ai")
    return reset, time.perf_counter() - t


async def floor(names: list[str], n: int, gap: float, *, fresh: bool = False) -> tuple[list[float], list[float]]:
    b = await browsers.browser()
    context = await b.new_context()
    page = await context.new_page()
    resets, steps = [], []
    for i in range(n):
        if fresh:  # made untimed, like our spare context (which ours makes during the gap)
            await context.close()
            context = await b.new_context()
            page = await context.new_page()
        reset, step = await _floor_episode(page, names[i % len(names)], i, gap)
        resets.append(reset)
        steps.append(step)
    await context.close()
    return resets, steps


async def ours(names: list[str], n: int, gap: float) -> tuple[list[float], list[float]]:
    tasks = {t.payload["name"]: t for t in load_suite("miniwob")}
    env = WebEnvironment()
    resets, steps = [], []
    for i in range(n):
        await asyncio.sleep(gap)
        t = time.perf_counter()
        obs = await env.reset(tasks[names[i % len(names)]], seed=i)
        resets.append(time.perf_counter() - t)
        ref = find(obs, "button") or find(obs, "checkbox") or find(obs, "textbox")
        await asyncio.sleep(gap)
        t = time.perf_counter()
        await env.step(make_action("click", ref))
        steps.append(time.perf_counter() - t)
        await env.close()  # untimed, as a rollout ends an episode (the floor closes its context untimed too)
    return resets, steps


async def episodes_per_s(names: list[str], concurrency: int, episodes: int) -> tuple[float, list[str]]:
    """Episodes per second with ``concurrency`` at once, and the errors of those that failed."""
    tasks = [t for t in load_suite("miniwob") if t.payload["name"] in names]
    policy = ReferencePolicy()
    errors: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            env = WebEnvironment()
            task = tasks[i % len(tasks)]
            try:
                obs = await env.reset(task, seed=i)
                for _ in range(10):
                    r = await env.step(await policy.act(task, obs))
                    obs = r.observation
                    if "error" in r.info:
                        errors.append(str(r.info["error"]))
                    if r.terminated or r.truncated:
                        break
            except Exception as e:
                errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
            finally:
                await env.close()

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(episodes)))
    return episodes / (time.perf_counter() - t), errors


def browser_pss_mb() -> float:
    """PSS of every chromium process of ours, in MiB."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"chrom" not in cmd.split(b"\0")[0]:
                continue
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


async def memory_per_context(names: list[str], n: int) -> tuple[float, int]:
    """PSS per open context with ``n`` episodes reset at once, and how many resets failed."""
    tasks = [t for t in load_suite("miniwob") if t.payload["name"] in names]
    await asyncio.sleep(1.0)
    base = browser_pss_mb()
    envs = [WebEnvironment() for _ in range(n)]
    results = await asyncio.gather(
        *(e.reset(tasks[i % len(tasks)], seed=i) for i, e in enumerate(envs)), return_exceptions=True
    )
    await asyncio.sleep(1.0)
    loaded = browser_pss_mb()
    for e in envs:
        await e.close()
    return (loaded - base) / n, sum(isinstance(r, BaseException) for r in results)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--gap", type=float, default=1.0, help="idle seconds before each reset and step (the model's turn)")
    ap.add_argument("--tasks", default="click-test,click-button,enter-text,login-user,click-checkboxes")
    args = ap.parse_args()
    names = args.tasks.split(",")
    await browsers.browser()
    await floor(names, 5, args.gap)  # warm caches for all
    await floor(names, 5, args.gap, fresh=True)
    await ours(names, 5, args.gap)
    f_reset, f_step = await floor(names, args.episodes, args.gap)
    c_reset, c_step = await floor(names, args.episodes, args.gap, fresh=True)
    o_reset, o_step = await ours(names, args.episodes, args.gap)
    print(f"MiniWoB++ tasks: {', '.join(names)}; {args.episodes} episodes each side")
    print(f"{'':28}{'p50 s':>8}{'p90 s':>8}")
    for label, xs in [
        ("floor reset", f_reset),
        ("fresh-context floor reset", c_reset),
        ("ours reset", o_reset),
        ("floor step", f_step),
        ("fresh-context floor step", c_step),
        ("ours step", o_step),
    ]:
        print(f"{label:28}{pct(xs, 0.5):8.3f}{pct(xs, 0.9):8.3f}")
    med = statistics.median
    print(
        f"ratio ours/floor (p50): reset {med(o_reset) / med(f_reset):.2f}x, step {med(o_step) / med(f_step):.2f}x; "
        f"ours/fresh-context floor: reset {med(o_reset) / med(c_reset):.2f}x, step {med(o_step) / med(c_step):.2f}x "
        "(target <= 1.25x)"
    )
    for c in (1, 8, 32):
        rate, errors = await episodes_per_s(names, c, max(args.episodes, 2 * c))
        print(f"concurrency {c:2}: {rate:6.2f} episodes/s, {len(errors)} errors")
        for message, count in collections.Counter(errors).most_common(3):
            print(f"    {count} x {message}")
    for n in (8, 32):
        mib, errors = await memory_per_context(names, n)
        print(f"memory per context with {n} open: {mib:.1f} MiB PSS, {errors} errors (target <= 120)")
    await browsers.close_browsers()


if __name__ == "__main__":
    asyncio.run(main())
