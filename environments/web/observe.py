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

What a person can click is shown as such: an element whose pointer cursor its parent does
not have (Playwright marks it ``[cursor=pointer]``) is ``clickable``, with its ref — a word
or a card made clickable by a script, not only links and buttons. The snapshot folds inline
elements into their parent's text, so before each snapshot :data:`MARK_CLICKABLE` makes the
page's clickable inline elements ``inline-block`` (so they get a node and a ref), gives those
clickable only by a handler a pointer cursor, names an icon (no text, no name) by its class or
id, and makes an icon with a handler of its own inside another clickable (a row's trash icon) a
``button`` (the snapshot marks only the outermost pointer cursor), and gives a clickable with no
size yet (an icon whose image has not loaded) a 1-pixel minimum, without which the snapshot
gives it no ref; :data:`RECORD_LISTENERS` (an init script, run before the page's own) notes
which elements get click handlers. These are the only changes the environment makes to a page.

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
TEXT_ROLES = ("generic", "paragraph", "strong", "emphasis", "listitem", "cell", "LabelText")
# the words a rendered element line may start with: WAI-ARIA roles and ours (`clickable`); an element
# of a text role is rendered as its text alone, so a line that starts with another word is text
ROLES = INTERACTIVE | frozenset(
    [
        "alert",
        "alertdialog",
        "application",
        "article",
        "banner",
        "blockquote",
        "caption",
        "code",
        "complementary",
        "contentinfo",
        "definition",
        "deletion",
        "dialog",
        "directory",
        "document",
        "feed",
        "figure",
        "form",
        "grid",
        "group",
        "heading",
        "iframe",
        "img",
        "insertion",
        "list",
        "log",
        "main",
        "mark",
        "marquee",
        "math",
        "menu",
        "menubar",
        "meter",
        "navigation",
        "none",
        "note",
        "presentation",
        "progressbar",
        "radiogroup",
        "region",
        "row",
        "rowgroup",
        "scrollbar",
        "search",
        "separator",
        "status",
        "subscript",
        "superscript",
        "table",
        "tablist",
        "tabpanel",
        "term",
        "time",
        "timer",
        "toolbar",
        "tooltip",
        "tree",
        "treegrid",
        "clickable",
    ]
)

# Run in every page before its own scripts: elements given a click-like listener are noted.
RECORD_LISTENERS = """(() => {
  const clicked = new WeakSet();
  const kinds = new Set(["click", "dblclick", "mousedown", "mouseup", "pointerdown", "pointerup"]);
  const add = EventTarget.prototype.addEventListener;
  EventTarget.prototype.addEventListener = function (type, ...rest) {
    if (kinds.has(type) && this instanceof HTMLElement) clicked.add(this);
    return add.call(this, type, ...rest);
  };
  Object.defineProperty(window, "__autodidactClicked", { value: clicked });
})()"""

# Before a snapshot, on each clickable element — one whose pointer cursor its parent does not
# have, or a leaf given a click handler: an inline one becomes inline-block (the snapshot folds
# inline elements into their parent's text; a block gets a node and a ref), a handler-only one
# gets the pointer cursor that marks it, and one with no text and no name (an icon) is named by
# its class (or else its id), as is a button or link with no name (an icon button). An icon with a handler of its own inside another clickable (a trash
# icon on an inbox row) becomes a button: the snapshot marks only the outermost pointer cursor.
# Then (time origin, ready state, URL, title) of the document.
MARK_CLICKABLE = """() => {
  const clicked = window.__autodidactClicked;
  const skip = /^(HTML|BODY|INPUT|SELECT|TEXTAREA|OPTION|LABEL|SUMMARY|BR|WBR|IMG)$/;
  const labelOf = (el) => ((typeof el.className === "string" && el.className.trim()) || el.id).trim().replace(/[-_\\s]+/g, " ");
  const nameless = (el) => !el.textContent.trim() && !el.title && !el.hasAttribute("aria-label") &&
    !el.hasAttribute("aria-labelledby") && !el.querySelector("[alt], [title], [aria-label], [aria-labelledby]");
  for (const el of document.body ? document.body.getElementsByTagName("*") : []) {
    if (!(el instanceof HTMLElement)) continue;
    if (/^(BUTTON|A)$/.test(el.tagName) || el.getAttribute("role") === "button") {
      if (nameless(el) && labelOf(el)) el.setAttribute("aria-label", labelOf(el));  // an icon button
      continue;
    }
    if (skip.test(el.tagName) || el.hasAttribute("role")) continue;
    const style = getComputedStyle(el);
    const pointer = style.cursor === "pointer" && !(el.parentElement && getComputedStyle(el.parentElement).cursor === "pointer");
    const handlerLeaf = el.childElementCount === 0 &&
      (typeof el.onclick === "function" || typeof el.onmousedown === "function" || (clicked && clicked.has(el)));
    const handled = handlerLeaf && style.cursor !== "pointer";
    const named = !nameless(el);
    const inner = handlerLeaf && !pointer && !handled && !named;  // an icon with a handler of its own inside a clickable
    if (!pointer && !handled && !inner) continue;
    if (style.display === "inline") el.style.display = "inline-block";
    if (handled) el.style.cursor = "pointer";
    if (!named && labelOf(el)) el.setAttribute("aria-label", labelOf(el));
    if (inner) el.setAttribute("role", "button");  // the snapshot marks only the outermost pointer cursor
    const box = el.getBoundingClientRect();  // an icon whose image has not loaded yet has no width: no ref
    if (box.width === 0 || box.height === 0) { el.style.minWidth = "1px"; el.style.minHeight = "1px"; }
  }
  return [performance.timeOrigin, document.readyState, location.href, document.title];
}"""
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


def _unquote_key(body: str) -> str:
    """A node line whose key the YAML quoted (``'link "Tab #1" [ref=e6]':``) as if it had not been."""
    if not body.startswith("'"):
        return body
    i = 1
    while i < len(body):
        if body[i] == "'":
            if body[i + 1 : i + 2] == "'":  # '' is an escaped quote
                i += 2
                continue
            return body[1:i].replace("''", "'") + body[i + 1 :]
        i += 1
    return body  # unterminated: left as it is


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
        depth, body = len(m.group(1)) // 2, _unquote_key(m.group(2))
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
    clickable = not interactive and node.attrs.get("cursor") == "pointer"
    if node.role in TEXT_ROLES and clickable:
        text = node.name or node.value
        return f"clickable {json.dumps(text, ensure_ascii=False)}" if text else "clickable"
    if not interactive and not node.name and not node.value and node.role not in ("dialog", "alertdialog"):
        return None  # a bare container: its children move up (a dialog stays: goals name it)
    if node.role in TEXT_ROLES:
        return node.name or node.value
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
    if clickable:
        parts.append("clickable")
    return " ".join(parts)


_ELEMENT = re.compile(r"^\s*\[((?:f\d+)?e\d+)\] (.*)$")
_NAMED = re.compile(r'^(\w+)(?: "((?:[^"\\]|\\.)*)")?(.*)$')


def elements(observation: Observation | str, role: str | None = None) -> list[tuple[str, str, str, str]]:
    """``(ref, role, name, rest)`` for every element line of an observation, optionally of one
    role; an element of a text role (``[e8] Sara-Ann``) is ``(ref, "text", its text, "")``."""
    out = []
    text = observation if isinstance(observation, str) else observation.text
    for line in text.splitlines():
        m = _ELEMENT.match(line)
        if not m:
            continue
        named = _NAMED.match(m.group(2))
        if named and named.group(1) in ROLES:
            found = (m.group(1), named.group(1), named.group(2) or "", named.group(3).strip())
        else:
            found = (m.group(1), "text", m.group(2).strip(), "")
        if role is None or found[1] == role:
            out.append(found)
    return out


def find(observation: Observation | str, role: str, name: str | None = None) -> str | None:
    """The ref of the first element with ``role`` (and exactly ``name`` when given)."""
    for ref, _, n, _ in elements(observation, role):
        if name is None or n == name:
            return ref
    return None
