"""The web action space, and the parser that reads an action from model text.

Typed actions are :class:`~autodidact.types.Action` records whose ``kind`` is one of
:data:`SIGNATURES` and whose ``args`` hold the parameters::

    click(ref)                      type(ref, text, submit=False)
    select(ref, option)             check(ref, checked=True)
    press(key)                      scroll(direction, ref=None)  # up or down: the page, or the element ref
    drag(ref, target_ref)           goto(url)                    # drag: drop ref onto target_ref
    back()                          answer(text)                 stop()

:func:`parse_action` reads the last such call in a model's answer (inside a code fence or
not): ``click(e12)``, ``type(e7, "blue shirt", submit=True)``, ``click [e12]`` also works.
A ``ref`` may also be an element's accessible name in quotes (``click("Add to cart")``);
the environment resolves it against the current page. Plain phrases like ``click the
"OK" button`` are read the same way. A call that does not parse raises
:class:`ActionError` with what was wrong and the expected form, which the environment
shows as its observation.

Example:
    >>> parse_action('I will search.\\ntype(e7, "red shoes", submit=True)').args
    {'ref': 'e7', 'text': 'red shoes', 'submit': True}
"""

from __future__ import annotations

import ast
import re
from typing import Any

from autodidact.types import Action

# name -> (required params, optional params with defaults)
SIGNATURES: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "click": (("ref",), {}),
    "type": (("ref", "text"), {"submit": False}),
    "select": (("ref", "option"), {}),
    "check": (("ref",), {"checked": True}),
    "drag": (("ref", "target_ref"), {}),
    "press": (("key",), {}),
    "scroll": (("direction",), {"ref": None}),
    "goto": (("url",), {}),
    "back": ((), {}),
    "answer": (("text",), {}),
    "stop": ((), {}),
}
REF = re.compile(r"^(?:f\d+)?e\d+$")  # f<N> prefixes refs in frames loaded after the first
_CALL = re.compile(r"\b(" + "|".join(SIGNATURES) + r")\s*\(", re.IGNORECASE)
_BRACKET = re.compile(r"\b(click|check)\s*\[((?:f\d+)?e\d+)\]", re.IGNORECASE)
_PHRASE = re.compile(r'\b(click|check)(?: on)?(?: the)?(?: \w+)? "([^"]+)"', re.IGNORECASE)


class ActionError(ValueError):
    """A web action that cannot be parsed or does not fit its signature."""


def usage() -> str:
    """One line per action, for prompts and error messages."""
    lines = []
    for name, (req, opt) in SIGNATURES.items():
        params = [*req, *(f"{k}={v!r}" for k, v in opt.items())]
        lines.append(f"{name}({', '.join(params)})")
    return "; ".join(lines)


def make_action(kind: str, *args: Any, **kwargs: Any) -> Action:
    """A typed action checked against its signature: ``make_action("click", "e3")``."""
    kind = kind.lower()
    if kind not in SIGNATURES:
        raise ActionError(f"unknown action {kind!r}; the actions are: {usage()}")
    req, opt = SIGNATURES[kind]
    params = [*req, *opt]
    if len(args) > len(params):
        raise ActionError(f"{kind} takes {len(params)} argument(s), got {len(args)}: {kind}({', '.join(params)})")
    values: dict[str, Any] = dict(zip(params, args, strict=False))
    for k, v in kwargs.items():
        if k not in params:
            raise ActionError(f"{kind} has no parameter {k!r}: {kind}({', '.join(params)})")
        values[k] = v
    missing = [p for p in req if p not in values]
    if missing:
        raise ActionError(f"{kind} needs {', '.join(missing)}: {kind}({', '.join(params)})")
    for k, default in opt.items():
        if default is not None:  # an optional ref (scroll's) is left out, not stored as None
            values.setdefault(k, default)
    return check_action(Action(kind=kind, args=values))


def check_action(action: Action) -> Action:
    """Validate a typed action's arguments; returns it, or raises :class:`ActionError`."""
    if action.kind not in SIGNATURES:
        raise ActionError(f"unknown action {action.kind!r}; the actions are: {usage()}")
    args = action.args
    req, _ = SIGNATURES[action.kind]
    for p in req:
        if p not in args:
            raise ActionError(f"{action.kind} needs {p!r}")
    if "ref" in args and args["ref"] is not None and not str(args["ref"]).strip("[] "):
        raise ActionError(f"{action.kind} needs a ref: refs look like e12, shown in brackets before each element")
    if action.kind == "drag" and not str(args["target_ref"]).strip("[] "):
        raise ActionError("drag needs a target_ref: the element to drop onto, like e12")
    for p in ("text", "option", "key", "url"):
        if p in args and not isinstance(args[p], str | int | float):
            raise ActionError(f"{action.kind}: {p} must be a string")
    if action.kind == "scroll" and str(args["direction"]).lower() not in ("up", "down"):
        raise ActionError("scroll takes 'up' or 'down'")
    return action


def parse_action(text: str) -> Action:
    """The last action call in ``text`` (see the module docstring)."""
    calls = list(_CALL.finditer(text))
    for m in reversed(calls):
        snippet = _balanced(text, m.end() - 1)
        if snippet is None:
            continue
        return _from_call(m.group(1).lower(), snippet)
    for pattern in (_BRACKET, _PHRASE):
        found = list(pattern.finditer(text))
        if found:
            return make_action(found[-1].group(1).lower(), found[-1].group(2))
    raise ActionError(f"no action found; reply with exactly one action, one of: {usage()}")


def _balanced(text: str, open_at: int) -> str | None:
    """The argument text between the parenthesis at ``open_at`` and its match (quotes respected)."""
    depth, quote, i = 0, "", open_at
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
        i += 1
    return None


def _from_call(kind: str, inner: str) -> Action:
    try:
        call = ast.parse(f"f({inner})", mode="eval").body
    except SyntaxError as e:
        raise ActionError(f'could not read the arguments of {kind}({inner}): {e.msg}; quote text like "this"') from None
    assert isinstance(call, ast.Call)
    args = [_value(kind, a) for a in call.args]
    kwargs = {k.arg: _value(kind, k.value) for k in call.keywords if k.arg}
    return make_action(kind, *args, **kwargs)


def _value(kind: str, node: ast.expr) -> Any:
    if isinstance(node, ast.Name):  # a bare ref (e12), direction (down) or key (Enter)
        return {"True": True, "False": False, "true": True, "false": False}.get(node.id, node.id)
    if isinstance(node, ast.List) and len(node.elts) == 1:  # [e12]
        return _value(kind, node.elts[0])
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ActionError(f"{kind}: arguments must be refs, quoted text, numbers or True/False") from None
