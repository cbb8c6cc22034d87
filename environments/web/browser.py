"""One Chromium per process, one isolated browser context per episode.

:func:`browser` returns this event loop's shared :class:`playwright.async_api.Browser`,
launching it on first use: ``/usr/bin/chromium`` when present (or ``$AUTODIDACT_CHROMIUM``),
otherwise the browser Playwright manages (``playwright install chromium``). Episodes open
their own context (cookies, storage, cache: nothing shared) with :func:`open_page`, which
also applies the origin allowlist (:mod:`environments.web.safety`); :func:`prepare_spare`
makes the next one in the background so a reset does not wait for it. A browser that crashed
is relaunched on the next call. :func:`close_browsers` stops this loop's browser.

Example:
    >>> context, page = await open_page(allow=["http://127.0.0.1:8000"])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from dataclasses import dataclass
from typing import Any

from autodidact.errors import BrowserUnavailableError

# Flags checked on these machines (../shared/ENVIRONMENT.md): no sandbox inside a container,
# no GPU, nothing that phones home.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--mute-audio",
)
VIEWPORT = {"width": 1024, "height": 768}


def chromium_path() -> str | None:
    """The system Chromium to drive, or None to use Playwright's own browser."""
    explicit = os.environ.get("AUTODIDACT_CHROMIUM")
    if explicit:
        return explicit
    for name in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(name):
            return name
    return shutil.which("chromium")


@dataclass
class _Browser:
    playwright: Any
    browser: Any


_BROWSERS: dict[asyncio.AbstractEventLoop, _Browser] = {}
_LAUNCH_LOCKS: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}


async def browser() -> Any:
    """This event loop's Chromium, launched on first use (and again if it died)."""
    loop = asyncio.get_running_loop()
    for dead in [k for k in _BROWSERS if k.is_closed()]:
        _BROWSERS.pop(dead, None)
        _LAUNCH_LOCKS.pop(dead, None)
    lock = _LAUNCH_LOCKS.setdefault(loop, asyncio.Lock())
    async with lock:
        held = _BROWSERS.get(loop)
        if held is not None and held.browser.is_connected():
            return held.browser
        if held is not None:
            await _stop(held)
        _BROWSERS[loop] = held = await _launch()
        return held.browser


async def _launch() -> _Browser:
    try:
        from playwright.async_api import async_playwright
    except ImportError as e:
        raise BrowserUnavailableError(
            "the web environment needs Playwright: pip install 'autodidact[web]' (and a Chromium: "
            "apt-get install chromium, or playwright install chromium)"
        ) from e
    pw = await async_playwright().start()
    path = chromium_path()
    try:
        b = await pw.chromium.launch(executable_path=path, args=list(CHROMIUM_ARGS), headless=True)
    except Exception as e:
        await pw.stop()
        where = path or "Playwright's managed Chromium"
        raise BrowserUnavailableError(
            f"could not launch Chromium ({where}): {str(e).splitlines()[0]}; install it with "
            "'apt-get install chromium' or 'playwright install chromium', or set AUTODIDACT_CHROMIUM"
        ) from e
    return _Browser(pw, b)


async def open_page(*, allow: list[str]) -> tuple[Any, Any]:
    """A fresh isolated context and its page, reaching only ``allow``.

    Creating a context and a page and installing the guard costs a few hundred milliseconds, so
    this takes the spare that :func:`prepare_spare` made in the background for the same
    ``allow`` when there is one (never used, nothing loaded in it), and makes one otherwise.
    """
    loop = asyncio.get_running_loop()
    spare = _SPARES.pop(loop, None)
    if spare is not None:
        task, spare_allow = spare
        if spare_allow == tuple(allow):
            with contextlib.suppress(Exception):  # the spare failed (the browser died): make one now
                context, page = await task
                if context.browser.is_connected():
                    return context, page
        else:
            task.add_done_callback(_close_spare)
    return await _guarded(tuple(allow))


def prepare_spare(allow: list[str]) -> None:
    """Start making the next :func:`open_page` context for ``allow`` in the background.

    Call it once the current episode has started: made while a page is loading, the spare's
    new renderer would compete with that page for the CPU.
    """
    loop = asyncio.get_running_loop()
    if loop not in _SPARES:
        _SPARES[loop] = (loop.create_task(_guarded(tuple(allow))), tuple(allow))


async def _guarded(allow: tuple[str, ...]) -> tuple[Any, Any]:
    from environments.web.observe import RECORD_LISTENERS
    from environments.web.safety import guard_context

    b = await browser()
    context = await b.new_context(viewport=VIEWPORT, accept_downloads=False, service_workers="block")
    await guard_context(context, allow=list(allow))  # before anything is loaded in it
    await context.add_init_script(RECORD_LISTENERS)
    return context, await context.new_page()


def _close_spare(task: asyncio.Task[tuple[Any, Any]]) -> None:
    if not task.cancelled() and task.exception() is None:
        close_context(task.result()[0])


_SPARES: dict[asyncio.AbstractEventLoop, tuple[asyncio.Task[tuple[Any, Any]], tuple[str, ...]]] = {}


def slots() -> int:
    """How many pages may work at once in one browser: ``$AUTODIDACT_BROWSER_SLOTS``, else 2 per CPU."""
    explicit = os.environ.get("AUTODIDACT_BROWSER_SLOTS", "").strip()
    if explicit:
        if not explicit.isdigit() or int(explicit) < 1:
            raise ValueError(f"AUTODIDACT_BROWSER_SLOTS must be a positive integer, not {explicit!r}")
        return int(explicit)
    return 2 * (os.cpu_count() or 1)


def slot() -> asyncio.Semaphore:
    """This loop's turn-taking for page work (load, act, observe): ``async with slot(): ...``.

    Every page of a browser shares its CPUs. With more episodes at once than the machine can
    serve, unthrottled actions would all slow down together until they hit their timeouts;
    queued here, each action runs at full speed once its turn comes, and timeouts count from
    then. Episodes stay open meanwhile (the model's turn holds no slot).
    """
    loop = asyncio.get_running_loop()
    gate = _SLOTS.get(loop)
    if gate is None:
        for dead in [k for k in _SLOTS if k.is_closed()]:
            del _SLOTS[dead]
        gate = _SLOTS[loop] = asyncio.Semaphore(slots())
    return gate


_SLOTS: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def close_context(context: Any) -> None:
    """Close a context in the background (nothing waits for it; :func:`close_browsers` does)."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(_close_quietly(context))
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


_CLOSING: set[asyncio.Task[None]] = set()


async def _close_quietly(context: Any) -> None:
    with contextlib.suppress(Exception):
        await context.close()


async def close_browsers() -> None:
    """Stop this event loop's browser (and its Playwright driver)."""
    loop = asyncio.get_running_loop()
    spare = _SPARES.pop(loop, None)
    if spare is not None:
        spare[0].cancel()
        with contextlib.suppress(BaseException):
            await spare[0]
    mine = [t for t in _CLOSING if t.get_loop() is loop]  # another loop's closings are that loop's to await
    if mine:
        await asyncio.gather(*mine, return_exceptions=True)
    held = _BROWSERS.pop(loop, None)
    if held is not None:
        await _stop(held)


async def _stop(held: _Browser) -> None:
    with contextlib.suppress(Exception):  # already gone
        await held.browser.close()
    with contextlib.suppress(Exception):
        await held.playwright.stop()
