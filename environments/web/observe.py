"""The observation: URL, title and an accessibility-tree text with a short ref per element.

Playwright's AI-mode ARIA snapshot (``aria_snapshot(mode="ai")``) gives every element a
ref (``e12``) that stays the same while the element lives, and ``aria-ref=e12`` finds it
again. :func:`render` turns that YAML-like snapshot into a compact text for a model::

    [e3] heading "Search results"
    [e7] textbox "Search" value="red shoes"
    [e9] button "Add to cart"
      Price: $24.99

Interactive elements and elements with text keep their ref; containers with neither are
left out (their children move up a level); state is shown as words (``checked``,
``disabled``, ``selected``, ``expanded``); ``value=``/``placeholder=`` are shown for
fields. The text is cut at a line boundary to ``budget`` characters with a marker saying
how much was left out.

Example:
    >>> render('- generic [ref=e1]:\\n  - button "OK" [ref=e2]').text
    '[e2] button "OK"'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from autodidact.types import Observation

INTERACTIVE = frozenset(
    [
        "button",
        "link",
        "textbox",
        "searchbox",
        "checkbox",
        "radio",
        "combobox",
        "listbox",
        "option",
        "menuitem",
        "menuitemcheckbox",
        "menuitemradio",
        "tab",
        "slider",
        "spinbutton",
        "switch",
        "treeitem",
        "gridcell",
        "columnheader",
        "rowheader",
    ]
)
STATES = ("checked", "disabled", "selected", "expanded", "pressed")
_LINE = re.compile(r"^( *)- (.*)$")
_NODE = re.compile(r'^([A-Za-z]+)(?: ("(?:[^"\\]|\\.)*"))?((?: \[[^\]]*\])*)(?:(:)(?: (.*))?)?$')
_ATTR = re.compile(r"\[([^\]=]+)(?:=([^\]]*))?\]")


@dataclass(frozen=True)
class Rendered:
    """A rendered tree: the text, every ref it shows, and whether it was cut."""

    text: str
    refs: frozenset[str]
    cut: bool = False


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"'):
        try:
            return str(json.loads(value))
        except json.JSONDecodeError:
            return value.strip('"')
    if value.startswith("'") and value.endswith("'") and len(value) >= 2:
        return value[1:-1].replace("''", "'")
    return value


@dataclass
class _Node:
    depth: int
    role: str
    name: str
    attrs: dict[str, str]
    value: str
    props: dict[str, str]
    shown: bool = False


def render(snapshot: str, budget: int | None = None) -> Rendered:
    """Render an AI-mode ARIA snapshot (see the module docstring)."""
    nodes: list[_Node] = []
    for raw in snapshot.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        depth, body = len(m.group(1)) // 2, m.group(2)
        if body.startswith("/"):  # a property of the element above: /url, /placeholder
            key, _, val = body[1:].partition(":")
            if nodes:
                nodes[-1].props[key.strip()] = _unquote(val)
            continue
        if body.startswith("text:"):
            nodes.append(_Node(depth, "text", "", {}, _unquote(body[5:]), {}))
            continue
        n = _NODE.match(body)
        if not n:
            nodes.append(_Node(depth, "text", "", {}, _unquote(body), {}))
            continue
        role, name, attrs, _colon, value = n.groups()
        parsed = {k: (v or "") for k, v in _ATTR.findall(attrs or "")}
        nodes.append(_Node(depth, role, _unquote(name) if name else "", parsed, _unquote(value or ""), {}))

    lines: list[str] = []
    refs: set[str] = set()
    stack: list[tuple[int, int]] = []  # (snapshot depth, output depth) of shown ancestors
    for node in nodes:
        while stack and stack[-1][0] >= node.depth:
            stack.pop()
        out_depth = stack[-1][1] + 1 if stack else 0
        line = _line(node)
        if line is None:
            continue
        ref = node.attrs.get("ref")
        if ref and node.role != "text":
            line = f"[{ref}] {line}"
            refs.add(ref)
        lines.append("  " * out_depth + line)
        stack.append((node.depth, out_depth))
    text = "\n".join(lines)
    if budget is None or len(text) <= budget:
        return Rendered(text, frozenset(refs))
    kept, size = [], 0
    for line in lines:
        if size + len(line) + 1 > budget:
            break
        kept.append(line)
        size += len(line) + 1
    left = len(lines) - len(kept)
    kept.append(f"… [cut: {left} more lines not shown; scroll down or narrow the page to see them]")
    shown = {r for r in refs if any(f"[{r}]" in line for line in kept)}
    return Rendered("\n".join(kept), frozenset(shown), cut=True)


def _line(node: _Node) -> str | None:
    if node.role == "text":
        return node.value or None
    interactive = node.role in INTERACTIVE
    if not interactive and not node.name and not node.value:
        return None  # a bare container: its children move up
    if node.role in ("generic", "paragraph", "strong", "emphasis", "listitem", "cell", "LabelText"):
        text = node.name or node.value
        return f"{text}" if not interactive else None
    parts = [node.role]
    if node.name:
        parts.append(json.dumps(node.name, ensure_ascii=False))
    for state in STATES:
        if state in node.attrs and node.attrs[state] != "false":
            parts.append(state if node.attrs[state] in ("", "true") else f"{state}={node.attrs[state]}")
    if node.value and node.role in ("textbox", "searchbox", "combobox", "spinbutton", "slider"):
        parts.append(f"value={json.dumps(node.value, ensure_ascii=False)}")
    elif node.value:
        parts.append(json.dumps(node.value, ensure_ascii=False) if node.name else node.value)
    if "placeholder" in node.props and not node.value:
        parts.append(f"placeholder={json.dumps(node.props['placeholder'], ensure_ascii=False)}")
    return " ".join(parts)


_ELEMENT = re.compile(r'^\s*\[((?:f\d+)?e\d+)\] (\w+)(?: "((?:[^"\\]|\\.)*)")?(.*)$')


def elements(observation: Observation | str, role: str | None = None) -> list[tuple[str, str, str, str]]:
    """``(ref, role, name, rest)`` for every element line of an observation, optionally of one role."""
    out = []
    text = observation if isinstance(observation, str) else observation.text
    for line in text.splitlines():
        m = _ELEMENT.match(line)
        if m and (role is None or m.group(2) == role):
            out.append((m.group(1), m.group(2), m.group(3) or "", m.group(4).strip()))
    return out


def find(observation: Observation | str, role: str, name: str | None = None) -> str | None:
    """The ref of the first element with ``role`` (and exactly ``name`` when given)."""
    for ref, _, n, _ in elements(observation, role):
        if name is None or n == name:
            return ref
    return None
