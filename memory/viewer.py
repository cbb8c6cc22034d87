"""The trajectory viewer: a local web page over a store and the evolve runs beside it.

:func:`create_app` makes a FastAPI app serving one page (``/``, :file:`viewer.html`: plain
HTML, CSS and JavaScript, nothing fetched from elsewhere) and the JSON it reads:

- ``GET /api/runs``: the store's runs with their counts, and the evolve runs found under
  ``$AUTODIDACT_HOME/evolve/`` (state, plots, report, the store runs they made);
- ``GET /api/trajectories?run=&suite=&success=&round=&role=&limit=&offset=``: one page of
  trajectory summaries and the total that matches (a page at a time, never a whole run);
- ``GET /api/trajectories/{id}``: one trajectory, every step (screenshots as base64 PNG);
- ``GET /api/memory``: the skill library and the latest reflections;
- ``GET /api/evolve/{name}/{file}``: an evolve run's ``report.html`` or one of its PNG plots.

What it protects against: text from episodes (completions hold arbitrary code and HTML) is
only ever put in the page as text, and the page's Content-Security-Policy runs no script but
its own; files are served from an evolve run's directory only (names checked, paths resolved,
PNG and ``report.html`` only); a page from another site cannot read the API through DNS
rebinding while the server listens on 127.0.0.1 (the ``Host`` header is checked). What it does
not: there is no authentication, so bound to another address (``--host 0.0.0.0``) anyone who
can reach the port can read every trajectory.

Example:
    autodidact view                       # every run
    autodidact view my-evolve-run --port 8800

    >>> app = create_app(open_store(), home())  # doctest: +SKIP
    >>> uvicorn.run(app, port=8765)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import socket
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

from autodidact.errors import ConfigError
from memory.base import TrajectoryQuery, TrajectoryStore, TrajectorySummary

if TYPE_CHECKING:
    from fastapi import FastAPI

PAGE_LIMIT = 200
"""The most trajectories one ``/api/trajectories`` call returns."""

LOOPBACK = ("127.0.0.1", "localhost")
_EVOLVE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")  # the checkpoint naming rules (training.checkpoints)
_PLOT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}\.png$")
_REPORT = "report.html"
_PLOT_ORDER = ("success", "roles", "rewards", "data", "time")  # training.report.PLOTS, read without matplotlib


def _page() -> tuple[str, str]:
    """The page and the Content-Security-Policy that lets its one inline script (and nothing else) run."""
    html = resources.files("memory").joinpath("viewer.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    csp = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; img-src 'self' data:;"
        " connect-src 'self'; base-uri 'none'; form-action 'none'"
    )
    return html, csp


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as the strings ``"nan"``, ``"inf"``, ``"-inf"``: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def summary(row: TrajectorySummary) -> dict[str, Any]:
    """What the trajectory list shows of a trajectory."""
    t = row.trajectory
    return {
        "id": t.id,
        "run_id": t.run_id,
        "task_id": t.task.id,
        "suite": t.task.suite,
        "env_id": t.env_id,
        "success": t.success,
        "reward": t.reward,
        "round": t.round,
        "steps": len(row.roles),
        "roles": list(dict.fromkeys(row.roles)),
        "model": t.policy.model,
        "started_at": t.started_at,
        "duration_s": t.duration_s,
        "error": t.error,
        "parent_id": t.parent_id,
    }


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _own_file(home: Path, name: str, file: str) -> Path | None:
    """``home/evolve/name/file`` if it is a file in that directory, not a link out of it (nor a way up)."""
    if not _EVOLVE_NAME.match(name) or "/" in file or file in ("", ".", ".."):
        return None
    run = (home / "evolve").resolve() / name
    path = (run / file).resolve()
    return path if path.parent == run and path.is_file() else None


def evolve_runs(home: Path, store_runs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The evolve runs under ``home/evolve``, newest first: state, plots, report, and their ids in ``store_runs``."""
    root = home / "evolve"
    found = []
    for d in sorted(root.iterdir()) if root.is_dir() else ():
        has_state, has_report = (d / "state.json").is_file(), (d / _REPORT).is_file()
        if not (_EVOLVE_NAME.match(d.name) and d.is_dir() and (has_state or has_report)):
            continue
        state: dict[str, Any] = {}
        if has_state:
            try:
                state = _mapping(json.loads((d / "state.json").read_text()))
            except (OSError, ValueError):
                state = {}  # being rewritten, or damaged: the report and plots are still worth showing
        plots = sorted(
            (p.name for p in d.iterdir() if _PLOT.match(p.name) and _own_file(home, d.name, p.name)),
            key=lambda n: (_PLOT_ORDER.index(n[:-4]) if n[:-4] in _PLOT_ORDER else len(_PLOT_ORDER), n),
        )
        stages, incumbent = _mapping(state.get("stages")), _mapping(state.get("incumbent"))
        found.append(
            {
                "name": d.name,
                "modified": d.stat().st_mtime,
                "finished": bool(state.get("finished")),
                "current": state.get("current"),
                "model": incumbent.get("model"),
                "rounds": len({k.split("/")[0] for k in stages}),
                "report": has_report,
                "plots": plots,
                "runs": [r for r in store_runs if r.startswith(f"{d.name}-r")],
            }
        )
    return sorted(found, key=lambda e: -e["modified"])


def resolve_target(store: TrajectoryStore, home: Path, ref: str) -> str:
    """Where the page should open for ``ref``: ``run=ID`` for a store run (id or unique prefix), ``evolve=NAME``.

    Raises:
        ConfigError: ``ref`` is neither; the message names the runs and evolve runs there are.

    Example:
        >>> resolve_target(store, home(), "3f2a")  # doctest: +SKIP
        'run=3f2a9c0e1b...'
    """
    runs = [r.run.id for r in store.runs()]
    evolve = [e["name"] for e in evolve_runs(home)]
    if ref in runs:
        return urlencode({"run": ref})
    if ref in evolve:
        return urlencode({"evolve": ref})
    prefixed = [r for r in runs if r.startswith(ref)] if ref else []
    if len(prefixed) == 1:
        return urlencode({"run": prefixed[0]})

    def some(names: list[str]) -> str:
        return ", ".join(names[:10]) + (f" (and {len(names) - 10} more)" if len(names) > 10 else "") or "none"

    if len(prefixed) > 1:
        raise ConfigError(f"run prefix {ref!r} is ambiguous: it matches {some(prefixed)}; give more of the id")
    raise ConfigError(
        f"no run or evolve run {ref!r} in {store!r} or {home / 'evolve'}; runs: {some(runs)}; evolve runs:"
        f" {some(evolve)} (see `autodidact trajectories list`)"
    )


def create_app(store: TrajectoryStore, home: Path, *, allowed_hosts: Sequence[str] = LOOPBACK) -> FastAPI:
    """The viewer's FastAPI app over ``store`` and the evolve runs under ``home``.

    Args:
        store: where runs, trajectories, skills and reflections are read (it stays open; the caller closes it).
        home: ``$AUTODIDACT_HOME``: evolve runs are its ``evolve/<name>/`` directories.
        allowed_hosts: the ``Host`` header values answered (``"*"``: any); the default guards against DNS rebinding.

    Example:
        >>> app = create_app(store, Path("runs"))  # doctest: +SKIP
    """
    from fastapi import FastAPI, HTTPException, Query
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from memory.reflections import KIND as REFLECTION

    class FiniteJSON(JSONResponse):
        def render(self, content: Any) -> bytes:
            return super().render(_finite(content))

    html, csp = _page()
    app = FastAPI(
        title="autodidact view", docs_url=None, redoc_url=None, openapi_url=None, default_response_class=FiniteJSON
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    # Sync endpoints: FastAPI runs them in its thread pool, where the (synchronous) store may block.

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"})

    @app.get("/api/runs")
    def runs() -> dict[str, Any]:
        summaries = store.runs()
        return {
            "store": repr(store),  # never store.url: a PostgreSQL URL may hold a password
            "runs": [
                {**s.run.model_dump(mode="json"), "episodes": s.episodes, "successes": s.successes} for s in summaries
            ],
            "evolve": evolve_runs(home, [s.run.id for s in summaries]),
        }

    @app.get("/api/trajectories")
    def trajectories(
        run: str | None = None,
        suite: str | None = None,
        success: Literal["yes", "no"] | None = None,
        round: int | None = Query(None, ge=0),
        role: str | None = None,
        limit: int = Query(50, ge=1, le=PAGE_LIMIT),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        q = TrajectoryQuery(
            run_id=run or None,
            suite=suite or None,
            success=None if success is None else success == "yes",
            round=round,
            role=role or None,
            limit=limit,
            offset=offset,
        )
        return {
            "total": store.count(q),
            "offset": offset,
            "limit": limit,
            "items": [summary(row) for row in store.summaries(q)],  # without the steps: a page stays small
        }

    @app.get("/api/trajectories/{trajectory_id}")
    def trajectory(trajectory_id: str) -> dict[str, Any]:
        t = store.get(trajectory_id)
        if t is None:
            raise HTTPException(404, f"no trajectory {trajectory_id!r}")
        return t.model_dump(mode="json")

    @app.get("/api/memory")
    def memory(limit: int = Query(200, ge=1, le=5000)) -> dict[str, Any]:
        from skills.library import KIND as SKILL

        skills = sorted(
            ({"id": e.id, **e.data} for e in store.memory(SKILL)),
            key=lambda s: (str(s.get("env")), str(s.get("name")), int(s.get("version") or 0)),
        )
        reflections = [
            {"id": e.id, "created_at": e.created_at, **e.data} for e in store.memory(REFLECTION, limit=limit)
        ]
        return {"skills": skills, "reflections": reflections, "reflection_limit": limit}

    @app.get("/api/evolve/{name}/{file}")
    def evolve_file(name: str, file: str) -> FileResponse:
        if not _EVOLVE_NAME.match(name) or not (file == _REPORT or _PLOT.match(file)):
            raise HTTPException(404, "an evolve run serves its report.html and its PNG plots only")
        path = _own_file(home, name, file)
        if path is None:
            raise HTTPException(404, f"no {file} in evolve run {name!r}")
        # The report is our own HTML: it may show its images and style itself, and run nothing.
        headers = {"Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"}
        return FileResponse(path, headers=headers)

    return app


def serve(store: TrajectoryStore, home: Path, *, host: str = "127.0.0.1", port: int = 8765, fragment: str = "") -> None:
    """Serve the viewer until Ctrl-C; print its URL first (``fragment`` picks what the page opens on).

    Raises:
        ConfigError: the address cannot be bound (the port is taken, the host is not this machine's).
    """
    import uvicorn

    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}; pass another --port or --host") from None
    bound = sock.getsockname()[1]
    app = create_app(store, home, allowed_hosts=LOOPBACK if host in LOOPBACK else ("*",))
    shown = f"[{host}]" if ":" in host else host
    print(f"autodidact view: http://{shown}:{bound}/{'#' + fragment if fragment else ''}  (Ctrl-C to stop)", flush=True)
    with sock:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
