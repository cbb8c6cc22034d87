"""Web environment speed and memory, side by side with a plain Playwright loop (the floor).

Run: ``.venv/bin/python benchmarks/web.py [--episodes 40] [--tasks click-test,click-button,...]``.

Measured in one run, on the same MiniWoB++ tasks and the same Chromium:

- **floor**: a plain Playwright loop on one page: goto + start episode + aria snapshot (reset),
  click + aria snapshot (step) — no contexts, no refs, no safety route;
- **ours**: ``WebEnvironment.reset`` (a fresh isolated context per episode, allowlist route,
  observation) and ``step`` (typed action + judge + observation): p50/p90 latencies;
- episodes/s with 1, 8 and 32 episodes at once in one browser (each: reset + scripted steps
  until done), errors counted;
- memory per concurrent context: the browser's processes' proportional set size (PSS, from
  /proc/*/smaps_rollup) with N contexts open minus with none, divided by N.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from environments.tasks import load_suite
from environments.web import browser as browsers
from environments.web import miniwob
from environments.web.env import WebEnvironment
from environments.web.observe import find
from environments.web.policies import ReferencePolicy


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def floor(names: list[str], n: int) -> tuple[list[float], list[float]]:
    b = await browsers.browser()
    context = await b.new_context()
    page = await context.new_page()
    resets, steps = [], []
    for i in range(n):
        name = names[i % len(names)]
        t = time.perf_counter()
        await page.goto(f"{miniwob.origin()}/miniwob/{name}.html")
        await page.wait_for_function("() => window.core && core.cover_div")
        await page.evaluate(
            "(s) => { Math.seedrandom(s); core.EPISODE_MAX_TIME = 600000; core.startEpisodeReal(); }", i
        )
        await page.locator("#wrap").aria_snapshot()
        resets.append(time.perf_counter() - t)
        t = time.perf_counter()
        await page.locator("#area button, #area input[type=checkbox], #area input").first.click()
        await page.locator("#wrap").aria_snapshot()
        steps.append(time.perf_counter() - t)
    await context.close()
    return resets, steps


async def ours(names: list[str], n: int) -> tuple[list[float], list[float]]:
    tasks = {t.payload["name"]: t for t in load_suite("miniwob")}
    env = WebEnvironment()
    resets, steps = [], []
    for i in range(n):
        t = time.perf_counter()
        obs = await env.reset(tasks[names[i % len(names)]], seed=i)
        resets.append(time.perf_counter() - t)
        ref = find(obs, "button") or find(obs, "checkbox") or find(obs, "textbox")
        from environments.web.actions import make_action

        t = time.perf_counter()
        await env.step(make_action("click", ref))
        steps.append(time.perf_counter() - t)
    await env.close()
    return resets, steps


async def episodes_per_s(names: list[str], concurrency: int, episodes: int) -> tuple[float, int]:
    tasks = [t for t in load_suite("miniwob") if t.payload["name"] in names]
    policy = ReferencePolicy()
    errors = 0
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        nonlocal errors
        async with gate:
            env = WebEnvironment()
            task = tasks[i % len(tasks)]
            try:
                obs = await env.reset(task, seed=i)
                for _ in range(10):
                    r = await env.step(await policy.act(task, obs))
                    obs = r.observation
                    if r.terminated or r.truncated:
                        break
            except Exception:
                errors += 1
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


async def memory_per_context(names: list[str], n: int) -> float:
    tasks = [t for t in load_suite("miniwob") if t.payload["name"] in names]
    await asyncio.sleep(1.0)
    base = browser_pss_mb()
    envs = [WebEnvironment() for _ in range(n)]
    await asyncio.gather(*(e.reset(tasks[i % len(tasks)], seed=i) for i, e in enumerate(envs)))
    await asyncio.sleep(1.0)
    loaded = browser_pss_mb()
    for e in envs:
        await e.close()
    return (loaded - base) / n


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--tasks", default="click-test,click-button,enter-text,login-user,click-checkboxes")
    args = ap.parse_args()
    names = args.tasks.split(",")
    await browsers.browser()
    await floor(names, 5)  # warm caches for both
    await ours(names, 5)
    f_reset, f_step = await floor(names, args.episodes)
    o_reset, o_step = await ours(names, args.episodes)
    print(f"MiniWoB++ tasks: {', '.join(names)}; {args.episodes} episodes each side")
    print(f"{'':24}{'p50 s':>8}{'p90 s':>8}")
    for label, xs in [
        ("floor reset", f_reset),
        ("ours reset", o_reset),
        ("floor step", f_step),
        ("ours step", o_step),
    ]:
        print(f"{label:24}{pct(xs, 0.5):8.3f}{pct(xs, 0.9):8.3f}")
    print(
        f"ratio ours/floor (p50): reset {statistics.median(o_reset) / statistics.median(f_reset):.2f}x, "
        f"step {statistics.median(o_step) / statistics.median(f_step):.2f}x (target <= 1.25x)"
    )
    for c in (1, 8, 32):
        rate, errors = await episodes_per_s(names, c, max(args.episodes, 2 * c))
        print(f"concurrency {c:2}: {rate:6.2f} episodes/s, {errors} errors")
    for n in (8, 32):
        print(f"memory per context with {n} open: {await memory_per_context(names, n):.1f} MiB PSS (target <= 120)")
    await browsers.close_browsers()


if __name__ == "__main__":
    asyncio.run(main())
