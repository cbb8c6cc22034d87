"""The web environment's core: actions, observations, safety and MiniWoB++, in a real Chromium."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from autodidact import registry
from autodidact.errors import TaskDataError
from autodidact.types import Action, Task
from environments.tasks import load_suite
from environments.web.actions import ActionError, make_action, parse_action
from environments.web.env import WebEnvironment
from environments.web.observe import find, render
from environments.web.safety import check_url
from environments.web.sites.base import Request, Response, Verdict, page

# -- actions and observations (no browser) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "args"),
    [
        ("click(e12)", "click", {"ref": "e12"}),
        (
            'Thought: search first.\ntype(e7, "red (big) shoes", submit=True)',
            "type",
            {"ref": "e7", "text": "red (big) shoes", "submit": True},
        ),
        ('```\nselect(e3, "Large")\n```', "select", {"ref": "e3", "option": "Large"}),
        ("check(e4, checked=False)", "check", {"ref": "e4", "checked": False}),
        ("click [e5]", "click", {"ref": "e5"}),
        ('I will click the "OK" button', "click", {"ref": "OK"}),
        ("scroll(down)", "scroll", {"direction": "down"}),
        ("scroll(up, e9)", "scroll", {"direction": "up", "ref": "e9"}),
        ("drag(e3, e7)", "drag", {"ref": "e3", "target_ref": "e7"}),
        ('answer("42")', "answer", {"text": "42"}),
        ("stop()", "stop", {}),
    ],
)
def test_parse_action_reads_each_form(text: str, kind: str, args: dict[str, Any]) -> None:
    action = parse_action(text)
    assert (action.kind, action.args) == (kind, args)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("I am not sure what to do.", "no action found"),
        ("type(e1)", "type needs text"),
        ("click(e1, e2)", "click takes 1 argument"),
        ("scroll(sideways)", "scroll takes 'up' or 'down'"),
        ('type(e1, "unclosed)', "no action found"),
    ],
)
def test_parse_action_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(ActionError, match=message):
        parse_action(text)


def test_render_keeps_refs_of_elements_and_drops_bare_containers() -> None:
    snap = (
        "- generic [ref=e1]:\n"
        '  - heading "Cart" [level=1] [ref=e2]\n'
        "  - generic [ref=e3]:\n"
        '    - checkbox "Gift wrap" [checked] [ref=e4]\n'
        '    - textbox "Name" [ref=e5]: Ada\n'
        "    - text: Total $3.00\n"
    )
    r = render(snap)
    assert r.text.splitlines() == [
        '[e2] heading "Cart"',
        '[e4] checkbox "Gift wrap" checked',
        '[e5] textbox "Name" value="Ada"',
        "Total $3.00",
    ]
    assert r.refs == {"e2", "e4", "e5"} and not r.cut


def test_render_cuts_to_budget_with_a_marker() -> None:
    snap = "\n".join(f'- link "Item {i}" [ref=e{i}]' for i in range(200))
    r = render(snap, budget=500)
    assert r.cut and len(r.text) < 600
    assert r.text.splitlines()[-1].startswith("… [cut: ")
    assert "e0" in r.refs and "e199" not in r.refs


def test_check_url_allows_only_listed_origins_and_never_files() -> None:
    allow = ["http://127.0.0.1:8000"]
    assert check_url("http://127.0.0.1:8000/shop/cart", allow) is None
    assert "not an allowed origin" in str(check_url("http://127.0.0.1:8001/", allow))
    assert "not an allowed origin" in str(check_url("https://example.com/", allow))
    assert "file://" in str(check_url("file:///etc/passwd", allow))
    assert "only http(s)" in str(check_url("javascript:alert(1)", allow))


# -- a tiny site for safety tests --------------------------------------------------------------


class _Outside:
    """A second origin on loopback that counts the requests reaching it."""

    def __init__(self) -> None:
        self.hits = 0
        owner = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(b"secret")

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


OUTSIDE: _Outside | None = None


class LabSite:
    """Pages that try to leave the allowlist, open popups, download files, or are very long."""

    name = "lab"

    def new_state(self, task: Task) -> dict[str, Any]:
        return {}

    def handle(self, request: Request, state: Any) -> Response:
        assert OUTSIDE is not None
        if request.path == "/fetch":
            script = (
                f"<script>fetch({OUTSIDE.url!r}).then(r => r.text()).then(t => document.getElementById('out')"
                ".textContent = 'got ' + t).catch(() => document.getElementById('out').textContent = 'blocked')"
                "</script>"
            )
            return Response(
                page("Fetch", f"<p id=out>waiting</p><img src='{OUTSIDE.url}x.png' alt=''>{script}", site="lab")
            )
        if request.path == "/popup":
            body = "<a href='/lab/long' target=_blank>Open long</a><button onclick=\"window.open('/lab/long')\">Pop</button>"
            return Response(page("Popup", body, site="lab"))
        if request.path == "/late":  # navigates after the click has returned
            body = "<button onclick=\"setTimeout(() => location.href = '/lab/slow', 300)\">Later</button>"
            return Response(page("Late", body, site="lab"))
        if request.path == "/slow":  # parsing stops at the script for a second
            return Response(page("Slow", "<p>Top</p><script src='/lab/wait.js'></script><p>Bottom</p>", site="lab"))
        if request.path == "/wait.js":
            time.sleep(1.0)
            return Response("", content_type="text/javascript")
        if request.path == "/widgets":  # a text area that reports its scrolling, two items that report a drop
            words = " ".join(f"word{i}" for i in range(600))
            script = (
                "<script>const out = document.getElementById('out'), area = document.getElementById('area');"
                "area.addEventListener('scroll', () => out.textContent = 'scrolled ' + (area.scrollTop > 0));"
                "let held = null;"
                "for (const id of ['first', 'second']) document.getElementById(id).addEventListener('mousedown', () => held = id);"
                "document.addEventListener('mouseup', (e) => { const under = document.elementFromPoint(e.clientX, e.clientY);"
                " if (held && under && under.id !== held) out.textContent = 'dropped ' + held + ' on ' + under.id; held = null; });"
                "</script>"
            )
            body = (
                f"<textarea id=area style='height:60px' readonly>{words}</textarea>"
                "<div id=first style='height:30px'>First</div><div id=second style='height:30px'>Second</div>"
                f"<p id=out>still</p>{script}"
            )
            return Response(page("Widgets", body, site="lab"))
        if request.path == "/download":
            return Response("data", content_type="application/octet-stream")
        if request.path == "/long":
            links = "".join(f"<p><a href='/lab/long?i={i}'>Item number {i}</a></p>" for i in range(400))
            return Response(page("Long", links, site="lab"))
        body = "<a href='/lab/download' download>Get file</a><a href='/lab/long'>Long page</a>"
        return Response(page("Lab", body, site="lab"))

    def judge(self, task: Task, state: Any, answer: str | None, stopped: bool) -> Verdict:
        return Verdict(1.0 if answer == "done" else 0.0, answer == "done", False)

    def tasks(self) -> list[Task]:
        return []

    def reference_action(self, task: Task, observation: Any) -> Action:
        return make_action("stop")


@pytest.fixture(scope="module")
def outside() -> Iterator[_Outside]:
    global OUTSIDE
    OUTSIDE = _Outside()
    registry.register("site", "lab", f"{__name__}:LabSite")
    yield OUTSIDE
    OUTSIDE.httpd.shutdown()


def lab_task(start: str = "/") -> Task:
    return Task(id="lab/1", suite="lab", prompt="Explore.", payload={"kind": "site", "site": "lab", "start": start})


async def test_requests_to_other_origins_are_blocked(outside: _Outside) -> None:
    env = WebEnvironment()
    try:
        await env.reset(lab_task("/fetch"))
        await asyncio.sleep(0.3)
        result = await env.step(make_action("scroll", "down"))
        assert "blocked" in result.observation.text and "got secret" not in result.observation.text
        assert outside.hits == 0  # neither the fetch nor the <img> left the browser
        result = await env.step(make_action("goto", outside.url))
        assert "not an allowed origin" in result.observation.text and outside.hits == 0
        result = await env.step(make_action("goto", "file:///etc/passwd"))
        assert "file:// URLs are not allowed" in result.observation.text
        assert "root:" not in result.observation.text
    finally:
        await env.close()


async def test_a_spare_context_is_never_handed_to_a_narrower_allowlist(outside: _Outside) -> None:
    wide, narrow = WebEnvironment(allow=[outside.url]), WebEnvironment()
    try:
        await wide.reset(lab_task("/fetch"))  # leaves a spare guarded for [site, outside] behind
        await asyncio.sleep(0.3)
        assert "got secret" in (await wide.step(make_action("scroll", "down"))).observation.text
        before = outside.hits
        await narrow.reset(lab_task("/fetch"))
        await asyncio.sleep(0.3)
        result = await narrow.step(make_action("scroll", "down"))
        assert "blocked" in result.observation.text and outside.hits == before
    finally:
        await wide.close()
        await narrow.close()


def test_browser_slots_are_configurable_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from environments.web import browser

    monkeypatch.setenv("AUTODIDACT_BROWSER_SLOTS", "3")
    assert browser.slots() == 3
    monkeypatch.setenv("AUTODIDACT_BROWSER_SLOTS", "many")
    with pytest.raises(ValueError, match="AUTODIDACT_BROWSER_SLOTS must be a positive integer"):
        browser.slots()


async def test_popups_are_closed_and_downloads_refused(outside: _Outside) -> None:
    env = WebEnvironment()
    try:
        obs = await env.reset(lab_task("/popup"))
        for name in ("Open long", "Pop"):
            await env.step(make_action("click", find(obs, "link", name) or find(obs, "button", name)))
            # the guard closes a popup as soon as it appears, which may be just after the step returned
            for _ in range(50):
                if len(env._context.pages) == 1:
                    break
                await asyncio.sleep(0.1)
            assert len(env._context.pages) == 1  # the popup was closed, the episode page remains
            assert env._context.pages[0] is env._page
        obs = await env.step(make_action("goto", "/lab/"))
        downloads: list[Any] = []
        env._page.on("download", lambda d: downloads.append(d))
        await env.step(make_action("click", find(obs.observation, "link", "Get file")))
        for _ in range(50):  # the event may come just after the step returned
            if downloads:
                break
            await asyncio.sleep(0.1)
        [download] = downloads  # Playwright reports the attempt; with downloads off nothing is saved
        assert download.url.endswith("/lab/download") and await download.failure() is not None
    finally:
        await env.close()


async def test_an_observation_is_of_one_parsed_document_while_the_page_navigates(outside: _Outside) -> None:
    """A navigation that commits between the action and the snapshot (here a script's timer, in
    CI a form submitted by Enter under load) must give the old page or the whole new one, under
    its own URL: never a half-parsed page, never the old page under the new URL."""
    env = WebEnvironment()
    try:
        obs = await env.reset(lab_task("/late"))
        await env.step(make_action("click", find(obs, "button", "Later")))
        seen = []
        for _ in range(100):
            obs = await env._observe()  # as every step ends, but without an action that waits for loading
            url = str(obs.data["url"])
            seen.append(url)
            if url.endswith("/lab/slow"):
                assert "Bottom" in obs.text and obs.data["title"] == "Slow", obs.text
                break
            assert url.endswith("/lab/late") and "Later" in obs.text and obs.data["title"] == "Late", obs.text
            await asyncio.sleep(0.01)
        assert seen[-1].endswith("/lab/slow"), seen
    finally:
        await env.close()


async def test_bad_actions_are_error_observations_not_crashes(outside: _Outside) -> None:
    env = WebEnvironment(max_steps=5)
    try:
        obs = await env.reset(lab_task("/"))
        assert "Goal: Explore." in obs.text and "URL: " in obs.text
        for action, message in [
            (make_action("click", "e999"), "unknown ref 'e999'"),
            (make_action("click", "No such thing"), "no element named 'No such thing'"),
            (Action(kind="text", text="what now?"), "no action found"),
        ]:
            result = await env.step(action)
            assert result.observation.text.startswith("Error: ") and message in result.observation.text
            assert result.info["error"] and not result.terminated
            assert find(result.observation, "link", "Long page")  # the page is shown again
        result = await env.step(make_action("click", "Long page"))  # a name works as a ref
        assert "error" not in result.info and "Title: Long" in result.observation.text
        result = await env.step(make_action("scroll", "down"))
        assert result.truncated and not result.terminated  # max_steps=5
    finally:
        await env.close()


async def test_scroll_moves_the_element_it_names_and_drag_drops_onto_the_target(outside: _Outside) -> None:
    env = WebEnvironment()
    try:
        obs = await env.reset(lab_task("/widgets"))
        result = await env.step(make_action("scroll", "down"))  # the page: the text area does not move
        assert "still" in result.observation.text
        await env.step(make_action("scroll", "down", find(obs, "textbox")))
        for _ in range(50):  # the wheel's scrolling may end after the step returned
            obs = await env._observe()
            if "scrolled true" in obs.text:
                break
            await asyncio.sleep(0.05)
        assert "scrolled true" in obs.text, obs.text
        first = find(obs, "clickable", "First")  # given a mousedown handler: clickable
        assert first is not None, obs.text
        result = await env.step(make_action("drag", first, "Second"))  # a target by name works too
        assert "dropped first on second" in result.observation.text, result.observation.text
    finally:
        await env.close()


async def test_long_pages_are_cut_and_screenshots_optional(outside: _Outside) -> None:
    env = WebEnvironment(budget=1500, screenshot=True)
    try:
        obs = await env.reset(lab_task("/long"))
        assert obs.data["cut"] and "… [cut: " in obs.text and len(obs.text) < 1800
        assert obs.data["screenshot"][:8] == "iVBORw0K"  # a base64 PNG
    finally:
        await env.close()


async def test_not_a_web_task_is_a_clear_error() -> None:
    env = WebEnvironment()
    with pytest.raises(TaskDataError, match="not a web task"):
        await env.reset(Task(id="x", suite="x", prompt="p", payload={"entry_point": "f"}))


# -- MiniWoB++ ----------------------------------------------------------------------------------


def test_miniwob_suite_has_all_130_tasks() -> None:
    tasks = load_suite("miniwob")
    assert len(tasks) == 130 and len({t.id for t in tasks}) == 130
    assert {t.split for t in tasks} == {"train", "test"}


async def test_the_seed_split_holds_out_seeds_of_every_trained_page() -> None:
    tasks = load_suite("miniwob-seeds")
    assert len(tasks) == 1300 and len({t.id for t in tasks}) == 1300
    by_page: dict[str, dict[str, set[int]]] = {}
    for t in tasks:
        by_page.setdefault(t.payload["name"], {}).setdefault(t.split, set()).add(t.payload["seed"])
    assert len(by_page) == 130
    for splits in by_page.values():  # every page in every split, on seeds of its own
        assert splits == {"train": {0, 1, 2, 3, 4, 5}, "val": {6, 7}, "test": {8, 9}}
    test = [t for t in load_suite("miniwob-seeds", split="test") if t.payload["name"] == "enter-text"]
    [plain] = [t for t in load_suite("miniwob") if t.payload["name"] == "enter-text"]
    env = WebEnvironment()
    try:  # an instance's goal is its seed's: the same as the plain task reset with that seed
        goals = [(await env.reset(t)).data["goal"] for t in test]
        assert goals == [(await env.reset(plain, seed=s)).data["goal"] for s in (8, 9)] and goals[0] != goals[1]
    finally:
        await env.close()


async def test_every_miniwob_task_resets_with_a_goal() -> None:
    # the pages the scripted policies play are reset (and solved) by tests/environments/test_web_policies.py
    from environments.web.miniwob_policies import MINIWOB

    queue = [t for t in load_suite("miniwob") if t.payload["name"] not in MINIWOB]
    goals: dict[str, str] = {}

    async def worker() -> None:  # one environment per worker: each reset opens a fresh context
        env = WebEnvironment()
        try:
            while queue:
                task = queue.pop()
                goals[task.id] = (await env.reset(task, seed=7)).data["goal"]
        finally:
            await env.close()

    await asyncio.gather(*(worker() for _ in range(4)))
    empty = [k for k, g in goals.items() if not g.strip()]
    assert len(goals) + len(MINIWOB) == 130 and not empty


async def test_a_wrong_miniwob_action_scores_below_zero() -> None:
    [task] = [t for t in load_suite("miniwob") if t.payload["name"] == "click-button"]
    env = WebEnvironment()
    try:
        obs = await env.reset(task, seed=3)
        goal = obs.data["goal"]
        from environments.web.observe import elements

        wrong = [ref for ref, _, name, _ in elements(obs, "button") if f'"{name}"' not in goal]
        result = await env.step(make_action("click", wrong[0]))
        assert result.terminated and result.reward < 0 and not result.info["success"]
    finally:
        await env.close()


async def test_seeds_make_miniwob_goals_reproducible() -> None:
    [task] = [t for t in load_suite("miniwob") if t.payload["name"] == "enter-text"]
    env = WebEnvironment()
    try:
        a = (await env.reset(task, seed=11)).data["goal"]
        b = (await env.reset(task, seed=11)).data["goal"]
        c = (await env.reset(task, seed=12)).data["goal"]
    finally:
        await env.close()
    assert a == b and a != c


def test_closing_one_loops_browsers_ignores_another_loops_pending_closes() -> None:
    """A context still closing on another event loop (a test's, a server thread's) must not make
    ``close_browsers`` on this loop fail: `evolve` runs one loop per stage in a process that may
    have others."""
    from environments.web.browser import _CLOSING, close_browsers, close_context

    other = asyncio.new_event_loop()
    never = other.create_future()

    class Stuck:
        async def close(self) -> None:
            await never

    async def start_closing() -> None:
        close_context(Stuck())
        await asyncio.sleep(0)  # the close task starts and waits on `never`

    other.run_until_complete(start_closing())
    try:
        assert any(t.get_loop() is other for t in _CLOSING)
        asyncio.run(close_browsers())  # raised "attached to a different loop" before
    finally:
        never.set_result(None)
        other.run_until_complete(asyncio.sleep(0.01))
        other.close()
    assert not any(t.get_loop() is other for t in _CLOSING)
