"""One Chromium per process, one isolated browser context per episode.

:func:`browser` returns this event loop's shared :class:`playwright.async_api.Browser`,
launching it on first use: ``/usr/bin/chromium`` when present (or ``$AUTODIDACT_CHROMIUM``),
otherwise the browser Playwright manages (``playwright install chromium``). Episodes open
their own context (cookies, storage, cache: nothing shared) with :func:`open_page`, which
also applies the origin allowlist (:mod:`environments.web.safety`) and keeps one spare
context ready so a reset does not wait for one. A browser that crashed
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
    """A fresh isolated context and its page, limited to ``allow``; fast on the reset path.

    Creating a context and a page costs a few hundred milliseconds, so one spare (never used
    before, nothing loaded) is prepared in the background for the next call. The guard is
    installed when the spare is taken, before anything is loaded in it.
    """
    from environments.web.safety import guard_context

    loop = asyncio.get_running_loop()
    spare = _SPARES.pop(loop, None)
    context = page = None
    if spare is not None:
        try:
            context, page = await spare
            if not context.browser.is_connected():
                context = page = None
        except Exception:  # the spare failed (browser died): make one now
            context = page = None
    if context is None:
        context, page = await _bare()
    await guard_context(context, allow=allow)
    _SPARES[loop] = loop.create_task(_bare())
    return context, page


async def _bare() -> tuple[Any, Any]:
    b = await browser()
    context = await b.new_context(viewport=VIEWPORT, accept_downloads=False, service_workers="block")
    return context, await context.new_page()


_SPARES: dict[asyncio.AbstractEventLoop, asyncio.Task[tuple[Any, Any]]] = {}


async def close_context(context: Any) -> None:
    """Close a context in the background: nothing waits for it."""
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
        spare.cancel()
        with contextlib.suppress(BaseException):
            await spare
    if _CLOSING:
        await asyncio.gather(*list(_CLOSING), return_exceptions=True)
    held = _BROWSERS.pop(loop, None)
    if held is not None:
        await _stop(held)


async def _stop(held: _Browser) -> None:
    with contextlib.suppress(Exception):  # already gone
        await held.browser.close()
    with contextlib.suppress(Exception):
        await held.playwright.stop()
