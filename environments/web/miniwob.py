"""MiniWoB++ (130 tasks) from the ``miniwob`` wheel, served on 127.0.0.1 and scored by its pages.

Two suites: ``miniwob``, one task per page, split by task (a held-out task is a page never
trained on; the goal from the task's ``seed``, 0 unless given), and ``miniwob-seeds``, the
seed split: every page with seeds 0–9, seeds 0–5 ``train``, 6–7 ``val``, 8–9 ``test``
(held-out goals of the pages trained on).

The wheel (``pip install --no-deps miniwob==1.1.0``; only its ``html/`` is used, MIT) is
served read-only by a threaded static server on loopback (``flight.*`` tasks need http).
An episode loads ``/miniwob/<task>.html`` in its own context, runs ``Math.seedrandom(seed);
core.EPISODE_MAX_TIME = ms; core.startEpisodeReal()``, waits for ``WOB_TASK_READY`` and
reads the goal from ``core.getUtterance()``. After every action the page's own score is
read: ``WOB_DONE_GLOBAL`` ends the episode, the reward is ``WOB_RAW_REWARD_GLOBAL``
(−1..1; success when > 0; the time-discounted ``WOB_REWARD_GLOBAL`` is in ``info``).
Observations show the whole page an episode can act on — the goal, the task area and what
its widgets attach to ``<body>`` (dialogs, date pickers, autocomplete menus) — but not the
score panel and click canvas MiniWoB++ adds for people, which are hidden when the episode starts.

Example:
    >>> tasks = miniwob_suite()  # doctest: +SKIP
    >>> len(tasks)  # doctest: +SKIP
    130
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import threading
from pathlib import Path
from typing import Any

from autodidact.errors import TaskDataError
from autodidact.types import Split, Task
from environments.tasks import stable_split
from environments.web.loopback import LoopbackServer, serve


def html_root() -> Path:
    """The ``html/`` folder of the installed ``miniwob`` wheel."""
    spec = importlib.util.find_spec("miniwob")  # locates the package without importing it (gymnasium)
    if spec is None or not spec.submodule_search_locations:
        raise TaskDataError("MiniWoB++ needs its wheel: pip install --no-deps miniwob==1.1.0")
    root = Path(next(iter(spec.submodule_search_locations))) / "html"
    if not (root / "miniwob").is_dir():
        raise TaskDataError(f"the miniwob wheel at {root.parent} has no html/miniwob folder")
    return root


def task_names() -> list[str]:
    """Every MiniWoB++ task name, sorted (130 in miniwob 1.1.0)."""
    return sorted(p.stem for p in (html_root() / "miniwob").glob("*.html"))


def miniwob_suite() -> list[Task]:
    """One task per MiniWoB++ page; the goal is drawn by the page from the episode's seed."""
    return [
        Task(
            id=f"miniwob/{name}",
            suite="miniwob",
            prompt=f"MiniWoB++ task {name}: the goal is shown on the page when the episode starts.",
            split=stable_split(f"miniwob/{name}"),
            payload={"kind": "miniwob", "name": name},
        )
        for name in task_names()
    ]


SEED_SPLIT: tuple[Split, ...] = ("train",) * 6 + ("val",) * 2 + ("test",) * 2  # by seed 0..9


def miniwob_seed_suite() -> list[Task]:
    """The seed split (how MiniWoB++ is used to measure learning): every task with seeds
    0–9, seeds 0–5 ``train``, 6–7 ``val``, 8–9 ``test`` — held-out episodes of the task
    families trained on. The page draws the goal from the seed, so the instances differ."""
    return [
        Task(
            id=f"miniwob-seeds/{name}/{seed}",
            suite="miniwob-seeds",
            prompt=f"MiniWoB++ task {name}: the goal is shown on the page when the episode starts.",
            split=split,
            payload={"kind": "miniwob", "name": name, "seed": seed},
        )
        for name in task_names()
        for seed, split in enumerate(SEED_SPLIT)
    ]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


_SERVER: tuple[str, LoopbackServer] | None = None
_LOCK = threading.Lock()


def file_server() -> tuple[str, LoopbackServer]:
    """This process's MiniWoB++ file server and its origin (started on first use, and again when it stopped)."""
    global _SERVER
    with _LOCK:
        if _SERVER is None or not _SERVER[1].alive:
            handler = functools.partial(_Quiet, directory=str(html_root()))
            _SERVER = serve(handler, "autodidact-miniwob")
        return _SERVER


def origin() -> str:
    """``http://127.0.0.1:<port>`` of this process's MiniWoB++ file server (see :func:`file_server`)."""
    return file_server()[0]


# One round trip: wait for the page's own onload (it shows the start screen; starting before it
# ran would leave the episode without its timer, and a later onload would cover it), seed and
# start the episode, wait until the task says it is ready (some load data first), read the goal.
_START = """async ([seed, ms, limit]) => {
  const until = async (ok, what) => {
    const end = Date.now() + limit;
    while (!ok()) {
      if (Date.now() > end) throw new Error(`MiniWoB++ page: ${what} not within ${limit} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  await until(() => window.core && core.cover_div, "start screen");
  Math.seedrandom(seed); core.EPISODE_MAX_TIME = ms; core.startEpisodeReal();
  for (const id of ["reward-display", "click-canvas"]) {  // the score panel: for people, not the agent
    const e = document.getElementById(id);
    if (e) e.style.display = "none";
  }
  await until(() => window.WOB_TASK_READY === true, "WOB_TASK_READY");
  const u = core.getUtterance();
  return typeof u === 'string' ? u : JSON.stringify(u);
}"""
_SCORE = "() => [!!window.WOB_DONE_GLOBAL, window.WOB_RAW_REWARD_GLOBAL || 0, window.WOB_REWARD_GLOBAL || 0]"


class MiniWoBBackend:
    """Starts and scores MiniWoB++ episodes for :class:`~environments.web.env.WebEnvironment`."""

    def __init__(self, episode_ms: int) -> None:
        self.episode_ms = episode_ms
        self._origin, self._server = file_server()  # the episode's server, for all its steps

    def origin(self) -> str:
        return self._origin

    def gone(self) -> str | None:
        """Why the episode cannot go on (its file server stopped), or None."""
        return None if self._server.alive else f"the MiniWoB++ file server at {self._origin} stopped"

    async def start(self, context: Any, page: Any, task: Task, seed: int | None) -> str:
        name = task.payload.get("name")
        if not name or not (html_root() / "miniwob" / f"{name}.html").is_file():
            raise TaskDataError(f"task {task.id!r}: no MiniWoB++ task named {name!r}")
        if seed is None:
            seed = int(task.payload.get("seed", 0))
        await page.goto(f"{self._origin}/miniwob/{name}.html")
        return str(await page.evaluate(_START, [seed, self.episode_ms, 10_000]))

    async def judge(
        self, page: Any, task: Task, answer: str | None, stopped: bool
    ) -> tuple[float, bool, dict[str, Any]]:
        done, raw, discounted = await page.evaluate(_SCORE)
        info = {"raw_reward": float(raw), "time_discounted_reward": float(discounted), "success": done and raw > 0}
        if done:
            return float(raw), True, info
        return 0.0, stopped or answer is not None, info

    def close(self) -> None:
        pass
