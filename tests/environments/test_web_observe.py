"""What a person can act on is in the observation: one page of its own for each class of element
that was missing (widgets attached outside the task area, inline elements clickable by a
handler or a pointer cursor, icons, snapshot lines whose key the YAML quoted)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from autodidact import registry
from autodidact.types import Action, Task
from environments.tasks import load_suite
from environments.web.actions import make_action
from environments.web.env import WebEnvironment
from environments.web.observe import elements, find, render
from environments.web.sites.base import Request, Response, Verdict, page


def test_a_line_whose_key_the_yaml_quoted_is_rendered_as_an_element() -> None:
    snap = (
        "- list [ref=e1]:\n"
        "  - listitem [ref=e2]:\n"
        "    - 'link \"Tab #1\" [ref=e3] [cursor=pointer]':\n"
        '      - /url: "#tabs-1"\n'
        "  - 'button \"It''s: here\" [ref=e4]'\n"
        "  - generic [ref=e5] [cursor=pointer]: Save\n"
        "  - generic [ref=e6] [cursor=pointer]:\n"
        "    - paragraph [ref=e7]: Card body\n"
        '  - img "logo" [ref=e8] [cursor=pointer]\n'
        "  - dialog [ref=e9]:\n"
        '    - button "Close" [ref=e10]\n'
    )
    assert render(snap).text.splitlines() == [
        '[e3] link "Tab #1"',
        '[e4] button "It\'s: here"',
        '[e5] clickable "Save"',
        "[e6] clickable",
        "  [e7] Card body",
        '[e8] img "logo" clickable',
        "[e9] dialog",
        '  [e10] button "Close"',
    ]
    assert find(render(snap).text, "link", "Tab #1") == "e3" and find(render(snap).text, "clickable", "Save") == "e5"


class _OnePage:
    """A site of one page, for looking at what the observation shows of it (scored 0)."""

    name = ""

    def new_state(self, task: Task) -> dict[str, Any]:
        return {}

    def judge(self, task: Task, state: Any, answer: str | None, stopped: bool) -> Verdict:
        return Verdict(0.0, answer is not None or stopped, False)

    def tasks(self) -> list[Task]:
        return []

    def reference_action(self, task: Task, observation: Any) -> Action:
        return make_action("stop")


class ClickSite(_OnePage):
    """One page of inline words clickable three ways, an icon, and a dialog added to ``<body>``."""

    name = "clicklab"

    def handle(self, request: Request, state: Any) -> Response:
        body = (
            "<p id=words>Pick <span onclick=\"say('attr')\">alpha</span>, "
            "<span id=listen>beta</span> or <span style='cursor:pointer' onclick=\"say('css')\">gamma</span>"
            " <span class='icon star' style='display:inline-block;width:9px;height:9px'"
            " onclick=\"say('icon')\"></span> and <span>plain</span>.</p><p id=out>none</p>"
            "<script>function say(w) { document.getElementById('out').textContent = 'clicked ' + w; }"
            "document.getElementById('listen').addEventListener('click', () => say('listener'));"
            "setTimeout(() => { const d = document.createElement('div'); d.setAttribute('role', 'dialog');"
            "d.innerHTML = '<button onclick=\"this.parentNode.remove()\">Dismiss</button>';"
            "document.body.appendChild(d); }, 10);</script>"
        )
        return Response(page("Words", body, site="clicklab"))


@pytest.fixture(scope="module")
def clicklab() -> Iterator[None]:
    registry.register("site", "clicklab", f"{__name__}:ClickSite")
    yield


def test_an_element_shown_as_its_text_alone_is_read_back_as_text() -> None:
    snap = (
        "- generic [ref=e1]:\n"
        "  - generic [ref=e8]: Sara-Ann\n"
        "  - listitem [ref=e9]: button clicks\n"
        '  - heading "Drag items" [level=2] [ref=e10]\n'
        '  - button "OK" [ref=e11]\n'
    )
    text = render(snap).text
    assert text.splitlines()[:2] == ["[e8] Sara-Ann", "[e9] button clicks"]
    assert elements(text) == [
        ("e8", "text", "Sara-Ann", ""),
        ("e9", "button", "", "clicks"),  # a text that starts with a role word reads as that role
        ("e10", "heading", "Drag items", ""),
        ("e11", "button", "OK", ""),
    ]
    assert find(text, "text", "Sara-Ann") == "e8" and elements(text, "text") == [("e8", "text", "Sara-Ann", "")]


async def test_inline_words_clickable_by_handler_or_cursor_and_icons_get_refs(clicklab: None) -> None:
    env = WebEnvironment()
    task = Task(id="clicklab/1", suite="clicklab", prompt="Click.", payload={"kind": "site", "site": "clicklab"})
    try:
        obs = await env.reset(task)
        clickable = {name: ref for ref, _, name, _ in elements(obs, "clickable")}
        # the attribute handler, the addEventListener handler, the pointer cursor, the icon (named by its class)
        assert set(clickable) == {"alpha", "beta", "gamma", "icon star"}, obs.text
        assert "plain" not in clickable and "Pick" in obs.text  # the rest of the paragraph stays text
        for name, said in [("beta", "listener"), ("alpha", "attr"), ("icon star", "icon"), ("gamma", "css")]:
            ref = find(obs, "clickable", name)
            assert ref is not None
            obs = (await env.step(make_action("click", ref))).observation
            assert f"clicked {said}" in obs.text, obs.text
        dismiss = find(obs, "button", "Dismiss")  # a dialog a script appended to <body>
        assert dismiss is not None and find(obs, "dialog") is not None
        obs = (await env.step(make_action("click", dismiss))).observation
        assert find(obs, "button", "Dismiss") is None
    finally:
        await env.close()


class RowSite(_OnePage):
    """One page of clickable rows (an inbox) whose icons have handlers of their own (a trash icon
    named by its class, a send icon with only an id), an icon button and an image link."""

    name = "rowlab"

    def handle(self, request: Request, state: Any) -> Response:
        icon = "display:inline-block;width:12px;height:12px;background:#888"
        body = (
            "<div class=row style='cursor:pointer' onclick=\"say('row')\"><span>Ada</span>"
            f"<span class=trash style='{icon}'></span></div>"
            f"<div style='cursor:pointer'><span id=send-reply style='{icon}'></span></div><p id=out>none</p>"
            "<button class='ql-bold' onclick=\"say('bold')\"><svg width=9 height=9><rect width=9 height=9 /></svg></button>"
            "<a href='#top' class=logo><img alt=Home width=9 height=9 src='data:image/gif;base64,R0lGODlhAQABAAAAACw='></a>"
            "<script>function say(w) { document.getElementById('out').textContent = 'clicked ' + w; }"
            "document.querySelector('.trash').addEventListener('click', (e) => { e.stopPropagation(); say('trash'); });"
            "document.getElementById('send-reply').addEventListener('click', () => say('send'));</script>"
        )
        return Response(page("Rows", body, site="rowlab"))


async def test_icons_inside_a_clickable_and_icon_buttons_are_named_buttons() -> None:
    """The snapshot marks only the outermost pointer cursor, so an icon inside a clickable row
    would be invisible: it is shown as a button, named by its class (or else its id). A button
    with only an icon is named by its class; a link named by its image's alt keeps that name."""
    registry.register("site", "rowlab", f"{__name__}:RowSite")
    env = WebEnvironment()
    try:
        obs = await env.reset(
            Task(id="rowlab/1", suite="rowlab", prompt="Act.", payload={"kind": "site", "site": "rowlab"})
        )
        buttons = {name: ref for ref, _, name, _ in elements(obs, "button")}
        assert set(buttons) == {"trash", "send reply", "ql bold"}, obs.text
        assert find(obs, "link", "logo") is None and 'img "Home"' in obs.text, obs.text  # named by its image
        for name, said in [("trash", "trash"), ("send reply", "send"), ("ql bold", "bold")]:
            obs = (await env.step(make_action("click", buttons[name]))).observation
            assert f"clicked {said}" in obs.text, obs.text
    finally:
        await env.close()


def _miniwob(name: str) -> Task:
    [task] = [t for t in load_suite("miniwob") if t.payload["name"] == name]
    return task


async def test_miniwob_widgets_attached_to_the_body_are_observed_and_the_score_panel_is_not() -> None:
    env = WebEnvironment()
    try:
        obs = await env.reset(_miniwob("click-dialog"), seed=3)  # a jQuery UI dialog, appended to <body>
        assert find(obs, "dialog") is not None and "Last reward" not in obs.text and "Episodes done" not in obs.text
        result = await env.step(make_action("click", find(obs, "button", "Close")))
        assert result.terminated and result.reward > 0

        obs = await env.reset(_miniwob("choose-date"), seed=3)  # the date picker opens under <body>
        assert find(obs, "link", "15") is None
        box = find(obs, "textbox")
        assert box is not None
        obs = (await env.step(make_action("click", box))).observation
        assert find(obs, "link", "15") is not None and "Prev" in obs.text
    finally:
        await env.close()


async def test_miniwob_inline_links_tabs_and_icons_are_clickable_by_ref() -> None:
    env = WebEnvironment()
    try:
        obs = await env.reset(_miniwob("click-link"), seed=5)  # words in a paragraph, made links by a handler
        word = obs.data["goal"].split('"')[1]
        result = await env.step(make_action("click", find(obs, "clickable", word)))
        assert result.terminated and result.reward > 0, obs.text

        obs = await env.reset(_miniwob("click-tab"), seed=5)  # tab links whose key the snapshot quotes
        tab = obs.data["goal"].removeprefix("Click on ").rstrip(".")
        result = await env.step(make_action("click", find(obs, "link", tab)))
        assert result.terminated and result.reward > 0, obs.text

        obs = await env.reset(_miniwob("social-media"), seed=5)  # icons with no text, named by class
        names = [name for _, _, name, _ in elements(obs, "clickable")]
        assert {"reply", "retweet", "like", "more"} <= set(names), obs.text
    finally:
        await env.close()
