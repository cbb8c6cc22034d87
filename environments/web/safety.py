"""What a web episode may reach: allowlisted origins only, no downloads, popups or files.

:func:`guard_context` installs one route on a browser context that matches every URL
*outside* the allowlist and aborts it (the match runs inside Playwright's driver, so allowed
requests pay nothing), WebSockets to other origins are closed the same way, popups are
closed as they open, downloads are refused (``accept_downloads=False`` at creation), and
``file://`` is never allowed: Chromium refuses file URLs from http pages, and
:func:`check_url` refuses them for ``goto``.

What this does not do: it does not sandbox Chromium itself (it runs with ``--no-sandbox``
as these machines require), and pages of an allowed origin run whatever JavaScript they serve.

Example:
    >>> check_url("https://example.com/", ["http://127.0.0.1:8000"]) is not None
    True
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

ALWAYS = ("about:", "data:", "blob:")  # documents the browser makes itself, not network requests


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def outside(allow: list[str]) -> re.Pattern[str]:
    """A regex matching every URL that is not on an allowed origin (nor about:/data:/blob:)."""
    allowed = [re.escape(origin(a)) + r"(?:[/?#]|$)" for a in allow] + [re.escape(p) for p in ALWAYS]
    return re.compile(r"^(?!" + "|".join(allowed) + ")", re.IGNORECASE)


def check_url(url: str, allow: list[str], *, files: bool = False) -> str | None:
    """Why ``url`` may not be opened, or None when it may."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        return None if files else "file:// URLs are not allowed in this environment"
    if scheme not in ("http", "https"):
        return f"only http(s) URLs can be opened, not {scheme or 'a relative URL'!r}"
    if outside(allow).match(url):
        return f"{origin(url)} is not an allowed origin (allowed: {', '.join(allow)})"
    return None


async def guard_context(context: Any, *, allow: list[str], popups: bool = False) -> None:
    """Block every request and WebSocket outside ``allow``; close popups unless allowed."""
    pattern = outside(allow)
    await context.route(pattern, _abort)
    await context.route_web_socket(pattern, _close_socket)
    if not popups:
        context.on("page", _close_popup)


async def _abort(route: Any) -> None:
    await route.abort("blockedbyclient")


async def _close_socket(ws: Any) -> None:
    await ws.close(code=1008, reason="origin not allowed")


async def _close_popup(page: Any) -> None:
    if await page.opener() is not None:  # a page opened by another page (window.open, target=_blank)
        await page.close()
