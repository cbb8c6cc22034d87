"""The web environment: Playwright + Chromium, one isolated browser context per episode.

A task's payload says what the episode runs on:

- ``{"kind": "miniwob", "name": "click-test"}``: a MiniWoB++ task from the ``miniwob`` wheel,
  served on 127.0.0.1, started with the episode's seed and scored by the page itself
  (:mod:`environments.web.miniwob`);
- ``{"kind": "site", "site": "shop", ...}``: a bundled site (:mod:`environments.web.sites`)
  with a fresh per-episode state; the site's judge scores it after every step.

Observations (:class:`~autodidact.types.Observation`) carry the goal, URL, title and the
accessibility tree with a ref per element (:mod:`environments.web.observe`), cut to
``budget`` characters; ``data`` has ``url``, ``title``, ``goal``, ``cut``, ``step`` (the
actions taken so far in the episode) and, when ``screenshot=True``, a base64 PNG. Actions are
typed (:mod:`environments.web.actions`); an action whose ``kind`` is not one of them is parsed
from its ``text`` (model output).
A bad action — unparseable, an unknown ref, an element that cannot be clicked — yields an
observation that says what was wrong and shows the page again; it never ends the episode.
``answer(text)`` and ``stop()`` end it; ``max_steps`` actions truncate it.

Only the episode's own origin (and ``allow``) is reachable (:mod:`environments.web.safety`).

Faults that are not the agent's end the episode with an exception instead of an observation,
so that the rollout records it as errored: Chromium died (or the page's renderer crashed)
— :class:`~autodidact.errors.BrowserUnavailableError`; the server the episode's pages come
from stopped — :class:`~autodidact.errors.EnvironmentUnavailableError`. Each is checked
before and after every step. The next episode gets a relaunched browser and a new server.

Example:
    >>> env = WebEnvironment()
    >>> obs = await env.reset(load_suite("miniwob")[0], seed=1)  # doctest: +SKIP
    >>> (await env.step(make_action("click", "e5"))).reward  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import functools
from typing import Any

from autodidact import registry
from autodidact.errors import BrowserUnavailableError, EnvironmentUnavailableError, TaskDataError
from autodidact.types import Action, Observation, Task
from environments.base import StepResult
from environments.web import browser as browsers
from environments.web.actions import REF, SIGNATURES, ActionError, check_action, parse_action
from environments.web.observe import MARK_CLICKABLE, Rendered, elements, render
from environments.web.safety import check_url

ACTION_TIMEOUT_MS = 3000
SNAPSHOT_TRIES = 5  # reads of a page that keeps navigating before its observation is taken as it is


class WebEnvironment:
    """Web tasks in Chromium (see the module docstring).

    Args:
        max_steps: actions per episode before it is truncated.
        budget: characters of accessibility tree per observation.
        screenshot: add a base64 PNG of the viewport to every observation's ``data``.
        allow: extra origins the episode may reach (its own is always allowed).
        action_timeout_ms: how long an action waits for its element to be actionable.
        miniwob_episode_ms: MiniWoB's own episode clock (its pages end an episode after it).
    """

    id = "web"

    def __init__(
        self,
        *,
        max_steps: int = 30,
        max_attempts: int | None = None,
        budget: int = 6000,
        screenshot: bool = False,
        allow: tuple[str, ...] | list[str] = (),
        action_timeout_ms: int = ACTION_TIMEOUT_MS,
        miniwob_episode_ms: int = 600_000,
    ) -> None:
        self.max_steps = max_steps
        self.budget = budget
        self.screenshot = screenshot
        self.allow = list(allow)
        self.action_timeout_ms = action_timeout_ms
        self.miniwob_episode_ms = miniwob_episode_ms
        del max_attempts  # the rollout passes its per-episode budget to every environment; steps bound web episodes
        self._context: Any = None
        self._page: Any = None
        self._task: Task | None = None
        self._backend: Any = None
        self._steps = 0
        self._crashed = False  # the page's renderer crashed
        self._refs: frozenset[str] = frozenset()
        self._tree = ""
        self._goal = ""

    async def reset(self, task: Task, *, seed: int | None = None) -> Observation:
        """Open a fresh context, start the task, and observe."""
        await self.close()
        kind = task.payload.get("kind")
        if kind == "miniwob":
            from environments.web.miniwob import MiniWoBBackend

            self._backend = MiniWoBBackend(self.miniwob_episode_ms)
        elif kind == "site":
            self._backend = _SiteBackend(task)
        else:
            raise TaskDataError(f"task {task.id!r} is not a web task: payload kind must be 'miniwob' or 'site'")
        self._task, self._steps, self._crashed = task, 0, False
        allow = [self._backend.origin(), *self.allow]
        async with browsers.slot():
            self._context, self._page = await browsers.open_page(allow=allow)
            self._page.on("crash", self._on_crash)
            self._context.set_default_timeout(self.action_timeout_ms)
            self._context.set_default_navigation_timeout(30_000)
            self._goal = await self._backend.start(self._context, self._page, task, seed)
            obs = await self._observe()
        browsers.prepare_spare(allow)  # the next reset's context, made while this episode is played
        return obs

    async def step(self, action: Action) -> StepResult:
        """Apply one action (typed, or parsed from ``action.text``) and observe."""
        if self._task is None or self._backend is None:
            raise RuntimeError("step() before reset()")
        self._steps += 1
        self._check_alive()
        async with browsers.slot():
            return await self._step(action)

    def _on_crash(self, _page: Any) -> None:
        self._crashed = True

    def _check_alive(self) -> None:
        """Raise when the episode cannot go on: its browser or the server of its pages died."""
        page, context = self._page, self._context
        if page is not None and (self._crashed or page.is_closed() or not context.browser.is_connected()):
            what, next_one = (
                ("the page's renderer crashed", "gets a new page")
                if self._crashed and context.browser.is_connected()
                else ("Chromium died", "relaunches it")
            )
            raise BrowserUnavailableError(
                f"{what} during this episode, so it cannot go on; the next episode {next_one}"
            )
        why = self._backend.gone() if self._backend is not None else None
        if why:
            raise EnvironmentUnavailableError(
                f"{why} during this episode, so it cannot go on; the next episode starts a new server"
            )

    async def _step(self, action: Action) -> StepResult:
        error: str | None = None
        answer: str | None = None
        stopped = False
        try:
            action = check_action(action) if action.kind in SIGNATURES else parse_action(action.text)
            if action.kind == "answer":
                answer = str(action.args["text"])
            elif action.kind == "stop":
                stopped = True
            else:
                await self._apply(action)
        except ActionError as e:
            error = str(e)
        except Exception as e:  # Playwright: element detached, not visible, navigation failed…
            error = _playwright_error(e)
        try:
            reward, terminated, info = await self._backend.judge(self._page, self._task, answer, stopped)
        except Exception as e:  # the page went away: the episode ends, recorded
            reward, terminated, info = 0.0, True, {"error": f"judge failed: {_playwright_error(e)}"}
        info["kind"] = action.kind
        if error:
            info["error"] = error
        obs = await self._observe(error)
        self._check_alive()  # a failed action, judge or observation may have been a dead browser or server
        truncated = not terminated and self._steps >= self.max_steps
        return StepResult(obs, reward, terminated=terminated, truncated=truncated, info=info)

    async def close(self) -> None:
        """Close the episode's context (and forget its site state)."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if self._context is not None:
            context, self._context, self._page = self._context, None, None
            browsers.close_context(context)
        self._task = None

    # -- actions -----------------------------------------------------------------------------

    async def _apply(self, action: Action) -> None:
        page, a = self._page, action.args
        if a.get("ref") is not None:
            loc = page.locator(f"aria-ref={self._resolve(str(a['ref']))}")
        kind = action.kind
        if kind == "click":
            await loc.click()
        elif kind == "type":
            await loc.fill(str(a["text"]))
            if a.get("submit"):
                await loc.press("Enter")
        elif kind == "select":
            option = str(a["option"])
            try:
                await loc.select_option(label=option)
            except Exception:
                await loc.select_option(value=option)
        elif kind == "check":
            await loc.set_checked(bool(a.get("checked", True)))
        elif kind == "drag":
            await _drag(page, loc, page.locator(f"aria-ref={self._resolve(str(a['target_ref']))}"))
        elif kind == "press":
            await page.keyboard.press(str(a["key"]))
        elif kind == "scroll":
            if a.get("ref") is not None:  # the wheel scrolls what is under the mouse: a list, a text area
                await loc.hover()
            await page.mouse.wheel(0, 600 if str(a["direction"]).lower() == "down" else -600)
        elif kind == "goto":
            url = str(a["url"])
            if url.startswith("/"):
                url = self._backend.origin() + url  # type: ignore[union-attr]
            why = check_url(url, [self._backend.origin(), *self.allow])  # type: ignore[union-attr]
            if why:
                raise ActionError(why)
            await page.goto(url)
        elif kind == "back":
            await page.go_back()
        await page.wait_for_load_state("domcontentloaded")
        for other in self._context.pages:  # popups: the guard closes them too, but asynchronously
            if other is not page:
                await other.close()

    def _resolve(self, ref: str) -> str:
        """A ref of the current page: ``e12`` as shown, or an element's name (exact, then any case)."""
        ref = ref.strip("[] ")
        if REF.match(ref):
            if ref not in self._refs:
                raise ActionError(f"unknown ref {ref!r}: use one of the refs shown in brackets on the current page")
            return ref
        named = elements(self._tree)
        for match in (lambda n: n == ref, lambda n: n.strip().lower() == ref.strip().lower()):
            hits = [r for r, _, n, _ in named if match(n)]
            if hits:
                return hits[0]
        raise ActionError(f"no element named {ref!r} on this page: use a ref shown in brackets, like e12")

    async def _observe(self, error: str | None = None) -> Observation:
        page = self._page
        assert self._backend is not None
        try:
            snap, url, title = await self._snapshot()
        except Exception as e:
            snap, url, title = "", getattr(page, "url", ""), ""
            error = (error + "; " if error else "") + f"the page could not be read: {_playwright_error(e)}"
        full = render(snap)
        self._refs, self._tree = full.refs, full.text
        shown: Rendered = render(snap, self.budget) if len(full.text) > self.budget else full
        head = f"Goal: {self._goal}\nURL: {url}\nTitle: {title}\n"
        text = (f"Error: {error}\n" if error else "") + head + "\n" + shown.text
        data: dict[str, Any] = {
            "url": url,
            "title": title,
            "goal": self._goal,
            "cut": shown.cut,
            "step": self._steps,
        }
        if error:
            data["error"] = error
        if self.screenshot:
            data["screenshot"] = base64.b64encode(await page.screenshot(type="png")).decode()
        return Observation(text=text, data=data)

    async def _snapshot(self) -> tuple[str, str, str]:
        """The page's tree, URL and title, all of one parsed document.

        A navigation may commit at any moment (a form submitted by Enter, a script's timer): a
        snapshot taken then is of a half-parsed page, or of the old page under the new URL. So the
        document is read before and after the snapshot, and the snapshot is taken again (after the
        new document is parsed) until both reads name the same document.
        """
        page = self._page
        before = await self._document()
        for _ in range(SNAPSHOT_TRIES):
            snap = await page.locator("body").aria_snapshot(mode="ai")
            after = await self._document()
            if after is None or before is None or after[:2] == before[:2]:
                break
            before = after
        if after is None:
            return snap, page.url, await page.title()
        return snap, after[1], after[2]

    async def _document(self) -> tuple[float, str, str] | None:
        """(time origin, URL, title) of the current document once parsed, or None if unreadable.

        The time origin is unique to each navigation: two reads of one document give the same pair
        of origin and URL. The same call marks the page's clickable inline elements for the
        snapshot (:data:`~environments.web.observe.MARK_CLICKABLE`).
        """
        page = self._page
        for _ in range(SNAPSHOT_TRIES):
            try:
                doc = await page.evaluate(MARK_CLICKABLE)
                if doc[1] != "loading":
                    return float(doc[0]), str(doc[2]), str(doc[3])
            except Exception:  # the document was replaced during the call
                pass
            try:
                await page.wait_for_load_state("domcontentloaded")
            except Exception:
                return None
        return None


# The boxes of the two items: each element's ancestor (or itself) that is a child of the element holding both.
_ITEM_BOXES = """(target, source) => {
  const item = (el, other) => {
    while (el.parentElement && !el.parentElement.contains(other)) el = el.parentElement;
    const r = el.getBoundingClientRect();
    return {x: r.x, y: r.y, width: r.width, height: r.height};
  };
  return [item(source, target), item(target, source)];
}"""


async def _drag(page: Any, source: Any, target: Any) -> None:
    """Drag ``source`` onto ``target`` with the mouse, as a person reorders a list: press on the
    source, move in steps (a sortable list follows the moves) to just before the middle of the
    target's item (its ancestor in the container holding both), then on past it in the direction
    of travel — forward (down, or right on the same row) or back — and let go there, so that a
    sortable list puts the dragged item in the target's place."""
    a, b = await target.evaluate(_ITEM_BOXES, await source.element_handle())
    if not (a["width"] and b["width"]):
        raise ActionError("drag: both elements must be visible on the page")
    sign = 1 if b["y"] > a["y"] + 1 or (abs(b["y"] - a["y"]) <= 1 and b["x"] > a["x"]) else -1
    x, y, dx, dy = b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, 0.3 * b["width"], 0.3 * b["height"]
    await source.hover()
    await page.mouse.down()
    await page.mouse.move(x - sign * dx, y - sign * dy, steps=5)
    await page.mouse.move(x + sign * dx, y + sign * dy, steps=5)
    await page.mouse.up()


def _playwright_error(e: Exception) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "Timeout" in type(e).__name__ or "Timeout" in first:
        return f"the element did not become actionable in time ({first})"
    return first[:300]


class _Backend:
    """What differs between MiniWoB and bundled sites: origin, start, judge."""

    def origin(self) -> str:
        raise NotImplementedError

    async def start(self, context: Any, page: Any, task: Task, seed: int | None) -> str:
        raise NotImplementedError

    async def judge(
        self, page: Any, task: Task, answer: str | None, stopped: bool
    ) -> tuple[float, bool, dict[str, Any]]:
        raise NotImplementedError

    def gone(self) -> str | None:
        """Why the episode cannot go on (the server of its pages stopped), or None."""
        return None

    def close(self) -> None:
        pass


@functools.cache
def site(name: str) -> Any:
    """The registered site ``name`` (one instance per process)."""
    return registry.make("site", name)


class _SiteBackend(_Backend):
    def __init__(self, task: Task) -> None:
        from environments.web.sites.base import site_server

        self.server = site_server()
        self.site = site(str(task.payload.get("site")))
        self.token: str | None = None

    def origin(self) -> str:
        return self.server.origin

    def gone(self) -> str | None:
        return None if self.server.alive else f"the bundled sites' server at {self.server.origin} stopped"

    async def start(self, context: Any, page: Any, task: Task, seed: int | None) -> str:
        from environments.web.sites.base import COOKIE

        self.token = self.server.open(self.site, self.site.new_state(task))
        await context.add_cookies([{"name": COOKIE, "value": self.token, "url": self.server.origin}])
        await page.goto(f"{self.server.origin}/{self.site.name}{task.payload.get('start', '/')}")
        return task.prompt

    async def judge(
        self, page: Any, task: Task, answer: str | None, stopped: bool
    ) -> tuple[float, bool, dict[str, Any]]:
        assert self.token is not None
        verdict = await asyncio.to_thread(self.server.judge, self.token, task, answer, stopped)
        done = verdict.done or stopped or answer is not None
        info = {"success": verdict.success, "detail": verdict.detail}
        return (verdict.reward if done else 0.0), done, info

    def close(self) -> None:
        if self.token is not None:
            self.server.close(self.token)
