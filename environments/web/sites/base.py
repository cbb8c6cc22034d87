"""What a bundled site is, and the loopback server that serves every site with per-episode state.

A site (:class:`Site`) is plain Python: it renders HTML for a :class:`Request` against the
state of one episode and judges that state against a task. :class:`SiteServer` serves all
registered sites from one threaded HTTP server on 127.0.0.1 (``/<site>/...``); each episode
opens a session (a fresh state from ``site.new_state(task)``) whose token travels as a cookie
in the episode's own browser context, so a cart, order or post made in one episode is
invisible to every other, also when they run at the same time. A session's state is only
touched under its lock, by the server's request threads and by the judge. A server that
stopped is replaced by the next :func:`site_server` call (sessions open on it are lost).

Adding a site: subclass nothing; provide ``name``, ``new_state``, ``handle``, ``judge`` and
``tasks`` (see :class:`Site`), and register its suite in :mod:`autodidact.builtins`.

Example:
    >>> server = site_server()  # doctest: +SKIP
    >>> token = server.open(shop, shop.new_state(task))  # doctest: +SKIP
"""

from __future__ import annotations

import html
import http.server
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from autodidact.types import Task
from environments.web.loopback import serve

COOKIE = "autodidact_episode"


@dataclass(frozen=True)
class Request:
    """One HTTP request to a site: the path below ``/<site>``, query and form fields."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    form: dict[str, list[str]] = field(default_factory=dict)

    def arg(self, name: str, default: str = "") -> str:
        """A form field, else a query parameter, else ``default`` (the first value)."""
        values = self.form.get(name) or self.query.get(name)
        return values[0] if values else default

    def args(self, name: str) -> list[str]:
        """Every value of a (repeatable) field or parameter."""
        return self.form.get(name) or self.query.get(name) or []


@dataclass(frozen=True)
class Response:
    """What a site answers: an HTML page, or a redirect when ``location`` is set."""

    body: str = ""
    status: int = 200
    location: str | None = None
    content_type: str = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Verdict:
    """A judge's reading of an episode's state: reward in [0, 1], success, and whether it is over."""

    reward: float
    success: bool
    done: bool
    detail: str = ""


class Site(Protocol):
    """A bundled website.

    ``handle`` must only read and change ``state`` (never module globals), and paths it links
    to are relative to the site root (``/<name>/...``). ``judge`` is called after every step
    with the answer given by an ``answer(...)`` action (or None) and whether the agent stopped.
    """

    name: str

    def new_state(self, task: Task) -> Any: ...

    def handle(self, request: Request, state: Any) -> Response: ...

    def judge(self, task: Task, state: Any, answer: str | None, stopped: bool) -> Verdict: ...

    def tasks(self) -> list[Task]: ...


def page(title: str, body: str, *, site: str, nav: str = "") -> str:
    """A complete HTML page with a title, an optional navigation bar and a body."""
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:1em;max-width:60em}nav a{margin-right:1em}"
        ".card{border:1px solid #ccc;padding:.5em;margin:.5em 0}</style></head>"
        f"<body>{f'<nav>{nav}</nav>' if nav else ''}<main>{body}</main></body></html>"
    )


@dataclass
class _Session:
    site: Site
    state: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


class SiteServer:
    """Every registered site on one loopback HTTP server, each episode with its own state."""

    def __init__(self) -> None:
        self.sites: dict[str, Site] = {}
        self._sessions: dict[str, _Session] = {}
        self._guard = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._serve(self, "GET")

            def do_POST(self) -> None:
                server._serve(self, "POST")

            def log_message(self, *args: Any) -> None:
                pass

        self.origin, self._httpd = serve(Handler, "autodidact-sites")

    def add(self, site: Site) -> None:
        """Serve ``site`` under ``/<site.name>/``."""
        self.sites.setdefault(site.name, site)

    def open(self, site: Site, state: Any) -> str:
        """Start a session (one episode) and return its token."""
        self.add(site)
        token = secrets.token_urlsafe(16)
        with self._guard:
            self._sessions[token] = _Session(site, state)
        return token

    def close(self, token: str) -> None:
        """Forget a session's state."""
        with self._guard:
            self._sessions.pop(token, None)

    def judge(self, token: str, task: Task, answer: str | None, stopped: bool) -> Verdict:
        """The site's verdict on a session's state, read under the session's lock."""
        session = self._sessions[token]
        with session.lock:
            return session.site.judge(task, session.state, answer, stopped)

    def state(self, token: str) -> Any:
        """A session's state (for tests and reference policies that inspect it)."""
        return self._sessions[token].state

    def _serve(self, h: http.server.BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        name, _, rest = parts.path.lstrip("/").partition("/")
        site = self.sites.get(name)
        token = _cookie(h.headers.get("Cookie", ""))
        session = self._sessions.get(token) if token else None
        if site is None or session is None or session.site is not site:
            why = f"no site {name!r}" if site is None else "no episode is open in this browser context"
            return _send(h, Response(page("Not found", f"<h1>Not found</h1><p>{html.escape(why)}</p>", site=""), 404))
        form: dict[str, list[str]] = {}
        if method == "POST":
            length = int(h.headers.get("Content-Length") or 0)
            form = parse_qs(h.rfile.read(length).decode("utf-8", "replace"), keep_blank_values=True)
        request = Request(method, "/" + rest, parse_qs(parts.query, keep_blank_values=True), form)
        try:
            with session.lock:
                response = site.handle(request, session.state)
        except Exception as e:  # a site bug is a 500 page, never a dead server
            response = Response(
                page("Error", f"<h1>Server error</h1><pre>{html.escape(repr(e))}</pre>", site=name), 500
            )
        _send(h, response)

    @property
    def alive(self) -> bool:
        """Still serving (not shut down, its thread not dead)."""
        return self._httpd.alive

    def shutdown(self) -> None:
        """Stop serving; its sessions' pages can no longer load (:func:`site_server` starts a new server)."""
        self._httpd.shutdown()
        self._httpd.server_close()


def _cookie(header: str) -> str | None:
    for part in header.split(";"):
        k, _, v = part.strip().partition("=")
        if k == COOKIE:
            return v
    return None


def _send(h: http.server.BaseHTTPRequestHandler, r: Response) -> None:
    body = r.body.encode()
    status = 303 if r.location else r.status
    h.send_response(status)
    if r.location:
        h.send_header("Location", r.location)
    h.send_header("Content-Type", r.content_type)
    h.send_header("Content-Length", str(len(body)))
    h.send_header("Cache-Control", "no-store")
    h.end_headers()
    h.wfile.write(body)


_SERVER: SiteServer | None = None
_SERVER_LOCK = threading.Lock()


def site_server() -> SiteServer:
    """The process's site server, started on first use and again when it stopped.

    A new server has a new origin and no sessions: episodes opened on the stopped one cannot
    go on (the web environment ends them with an error), later ones run on the new one.
    """
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None or not _SERVER.alive:
            _SERVER = SiteServer()
        return _SERVER
