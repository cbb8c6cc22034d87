"""The trajectory viewer (``autodidact view``): a real server, driven by a real Chromium through Playwright.

The store is a real SQLite file under the test's ``$AUTODIDACT_HOME`` holding a code run, a web run
(screenshots, several roles), a skill, a reflection, and one hostile episode; an evolve run's
directory holds a report and a plot. Each test attacks one property: what the page shows and
how it filters, that episode text is never run as HTML, that only an evolve run's own files are
served, and that a bad RUN is a clear error.
"""

from __future__ import annotations

import http.client
import math
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autodidact.errors import ConfigError
from autodidact.types import Action, Message, Observation, Step, Task, Trajectory
from memory.base import RunInfo, TrajectoryStore, open_store
from memory.embed import HashingEmbedder
from memory.reflections import Reflection, ReflectionMemory
from memory.testing import sample_trajectory
from memory.viewer import create_app, resolve_target
from skills.library import Skill, SkillLibrary

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def png(width: int, height: int) -> bytes:
    """A valid RGB PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x20\x80\xd0" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def web_episode() -> Trajectory:
    import base64

    shot = base64.b64encode(png(8, 6)).decode()
    task = Task(id="web/shop-cart", suite="web-bundled", prompt="Add the red shoes to the cart.")
    steps = (
        Step(
            index=0,
            role="solver",
            messages=(Message(role="system", content="You browse."), Message(role="user", content=task.prompt)),
            completion="Thought: the button.\nclick(e3)",
            action=Action(kind="click", text="click(e3)", args={"ref": "e3"}),
            observation=Observation(text='[e3] button "Add to cart"\nCart: 1 item', data={"screenshot": shot}),
            latency_s=0.5,
        ),
        Step(index=1, role="reviewer", completion="Score: 0.9", output={"score": 0.9, "critique": "cart has it"}),
        Step(index=2, role="refiner", completion="stop()", reward=1.0, terminated=True, error="nothing to refine"),
    )
    base = sample_trajectory(run_id="run-web", seed=40, success=True)
    return base.model_copy(update={"task": task, "env_id": "web", "steps": steps, "reward": 1.0})


def hostile_episode() -> Trajectory:
    t = sample_trajectory(run_id="run-evil", seed=50, n_steps=1)
    bad_shot = '"><script>window.__pwned = 3</script>'
    step = t.steps[0].model_copy(
        update={"completion": HOSTILE, "observation": Observation(text=HOSTILE, data={"screenshot": bad_shot})}
    )
    return t.model_copy(update={"task": t.task.model_copy(update={"prompt": "<b>not bold</b>"}), "steps": (step,)})


@pytest.fixture
def filled(_isolated_home: Path) -> Iterator[tuple[TrajectoryStore, Path]]:
    """The test's default store, filled as the module docstring says, and an evolve run beside it."""
    home = _isolated_home
    with open_store() as store:
        store.put_run(RunInfo(id="run-code", kind="rollout", config={"suite": "bundled", "model": "smollm2"}))
        for i, success in enumerate([True, False, True, False]):
            t = sample_trajectory(run_id="run-code", task_id=f"bundled/t{i}", success=success, seed=i, n_steps=2)
            if i == 1:  # a reviewed failure, with a reward JSON cannot spell
                review = t.steps[1].model_copy(update={"role": "reviewer"})
                t = t.model_copy(update={"steps": (t.steps[0], review), "reward": math.nan})
            store.append(t)
        web = web_episode()
        store.append(web)
        store.append(hostile_episode())
        embedder = HashingEmbedder()
        ReflectionMemory(store, embedder).add(
            [Reflection(text="Check the cart badge before stopping.", task_id=web.task.id, trajectory_id=web.id)]
        )
        skill = Skill(name="add_to_cart", env="web", description="Add an item to the cart.", task=web.task)
        SkillLibrary(store, embedder).admit(skill)

        evolve = home / "evolve" / "demo"
        evolve.mkdir(parents=True)
        (evolve / "state.json").write_text('{"name": "demo", "stages": {"r0/evaluate": {}}, "finished": true}')
        (evolve / "success.png").write_bytes(png(30, 20))
        (evolve / "report.html").write_text('<!doctype html><h1>evolve demo</h1><img src="success.png">')
        (home / "secret.png").write_bytes(b"SECRET" + png(2, 2))
        (evolve / "leak.png").symlink_to(home / "secret.png")
        yield store, home


@pytest.fixture
def server(filled: tuple[TrajectoryStore, Path]) -> Iterator[str]:
    """The viewer over ``filled``, served by uvicorn in a thread; its base URL."""
    import uvicorn

    store, home = filled
    sock = socket.create_server(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(create_app(store, home), log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started and thread.is_alive():
        threading.Event().wait(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
async def page(server: str) -> Any:
    """A fresh page in its own context of the session's shared Chromium."""
    from environments.web.browser import browser

    context = await (await browser()).new_context()
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    yield tab
    await context.close()
    assert errors == []  # the page's own script never failed


async def ready(page: Any, view: str) -> None:
    await page.wait_for_selector(f'main[data-state="ready"][data-view="{view}"]')


async def test_click_through_runs_filters_steps_memory_and_evolve(
    server: str, page: Any, filled: tuple[TrajectoryStore, Path]
) -> None:
    from playwright.async_api import expect

    store, home = filled
    await page.goto(server + "/")
    await ready(page, "runs")
    runs = page.locator("#runs tr.link")
    await expect(runs).to_have_count(3)
    await expect(page.locator("#evolve")).to_contain_text("demo")

    # a run, then filters: each narrows the list as the store says
    await runs.filter(has_text="run-code").click()
    await ready(page, "trajectories")
    count, rows = page.locator("#count"), page.locator("#trajectories tr.link")
    await expect(count).to_have_text("4 trajectories, showing 1–4")
    await page.select_option("select[name=success]", "no")
    await page.click("#filters button[type=submit]")
    await expect(count).to_have_text("2 trajectories, showing 1–2")
    await expect(rows).to_have_count(2)
    for text in await rows.all_inner_texts():
        assert "✗ failure" in text and ("bundled/t1" in text or "bundled/t3" in text)
    await page.select_option("select[name=success]", "")
    await page.fill("input[name=role]", "reviewer")
    await page.click("#filters button[type=submit]")
    await expect(count).to_have_text("1 trajectory, showing 1–1")
    await expect(rows).to_contain_text(["bundled/t1"])  # the reviewed one; its NaN reward shown, not a crash
    await page.fill("input[name=run]", "")
    await page.click("#filters button[type=submit]")
    await expect(count).to_have_text("2 trajectories, showing 1–2")  # every run's reviewed episodes

    # one web episode step by step
    await rows.filter(has_text="web/shop-cart").click()
    await ready(page, "trajectory")
    await expect(page.locator(".task-prompt")).to_have_text("Add the red shoes to the cart.")
    steps = page.locator("section.step")
    await expect(steps.locator(".role")).to_have_text(["solver", "reviewer", "refiner"])
    first = steps.nth(0)
    await expect(first.locator(".completion")).to_have_text("Thought: the button.\nclick(e3)")
    await expect(first.locator(".action")).to_contain_text("click(e3)")
    await expect(first.locator(".observation")).to_have_text('[e3] button "Add to cart"\nCart: 1 item')
    await expect(steps.nth(1).locator(".output")).to_contain_text('"critique": "cart has it"')
    await expect(steps.nth(2)).to_contain_text("terminated")
    await expect(steps.nth(2).locator(".error")).to_have_text("nothing to refine")
    shot = first.locator("img.screenshot")
    await expect(shot).to_have_count(1)
    assert await shot.evaluate("img => img.decode().then(() => img.naturalWidth)") == 8
    await first.locator("details.prompt summary").click()
    await expect(first.locator("details.prompt pre").nth(1)).to_have_text("Add the red shoes to the cart.")

    # the skill library and the reflections
    await page.click("#nav-memory")
    await ready(page, "memory")
    await expect(page.locator(".skill summary")).to_contain_text("add_to_cart v1")
    await expect(page.locator("tr.reflection")).to_contain_text("Check the cart badge before stopping.")

    # the evolve run (opened as `autodidact view demo` would): its plot loads, its report links its plots
    await page.goto(f"{server}/#{resolve_target(store, home, 'demo')}")
    await ready(page, "evolve")
    plot = page.locator(".plots img")
    await expect(plot).to_have_count(1)
    assert await plot.evaluate("img => img.decode().then(() => img.naturalWidth)") == 30
    report = await page.locator("#report").get_attribute("href")
    await page.goto(server + str(report))
    assert await page.evaluate("document.images[0].decode().then(() => document.images[0].naturalWidth)") == 30


async def test_episode_text_is_shown_as_text_never_run(server: str, page: Any) -> None:
    from playwright.async_api import expect

    await page.goto(server + "/#view=trajectories&run=run-evil")
    await ready(page, "trajectories")
    await page.locator("#trajectories tr.link").click()
    await ready(page, "trajectory")
    await expect(page.locator(".completion")).to_have_text(HOSTILE)
    await expect(page.locator(".observation")).to_have_text(HOSTILE)
    await expect(page.locator(".task-prompt")).to_have_text("<b>not bold</b>")
    assert await page.evaluate("window.__pwned") is None
    # nothing of the episode became an element: no script, image or bold; a screenshot that is no PNG is left out
    assert await page.locator("main script, main b, main img").count() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/evolve/demo/../../secret.png",
        "/api/evolve/demo/..%2F..%2Fsecret.png",
        "/api/evolve/../secret.png",
        "/api/evolve/%2E%2E/secret.png",
        "/api/evolve/demo/leak.png",  # a link out of the run's directory
        "/api/evolve/demo/state.json",  # a file of the run, but neither a plot nor the report
    ],
)
def test_only_an_evolve_runs_own_plots_and_report_are_served(server: str, path: str) -> None:
    conn = http.client.HTTPConnection(server.removeprefix("http://"), timeout=10)
    conn.request("GET", path)  # sent as written: no client-side normalisation of the dots
    got = conn.getresponse()
    body = got.read()
    assert got.status == 404 and b"SECRET" not in body and b"finished" not in body
    conn.request("GET", "/api/evolve/demo/success.png")
    ok = conn.getresponse()
    assert ok.status == 200 and ok.getheader("content-type") == "image/png" and ok.read().startswith(b"\x89PNG")


def test_api_answers_only_loopback_host_names(server: str) -> None:
    conn = http.client.HTTPConnection(server.removeprefix("http://"), timeout=10)
    conn.request("GET", "/api/runs", headers={"Host": "rebound.example.com"})
    got = conn.getresponse()
    assert got.status == 400 and b"run-code" not in got.read()


def test_view_with_a_bad_run_names_what_exists(filled: tuple[TrajectoryStore, Path]) -> None:
    from autodidact.cli import app

    store, home = filled
    assert resolve_target(store, home, "run-c") == "run=run-code"  # a unique prefix
    done = CliRunner().invoke(app, ["view", "nope"])
    # (autodidact.cli.main turns a ConfigError into one line and exit code 2)
    assert isinstance(done.exception, ConfigError)
    message = str(done.exception)
    assert "no run or evolve run 'nope'" in message
    assert all(name in message for name in ("run-code", "run-web", "demo", "autodidact trajectories list"))
    ambiguous = CliRunner().invoke(app, ["view", "run-"])
    assert isinstance(ambiguous.exception, ConfigError) and "ambiguous" in str(ambiguous.exception)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = CliRunner().invoke(app, ["view", "--port", str(taken.getsockname()[1])])
    assert isinstance(busy.exception, ConfigError) and "cannot listen on 127.0.0.1" in str(busy.exception)
