"""Scripted MiniWoB++ policies: proof that these tasks are solvable from the observation alone.

Each policy in :data:`MINIWOB` maps ``(observation, goal)`` to one typed action, reading only
the observation's accessibility tree (refs, roles, names, states, text lines) and the goal
string — no page access, no JavaScript. Policies are stateless: progress is read from the
page (values already typed, boxes already checked, menus already open), so each is called
afresh on every step; where a page keeps no visible trace of an action (a class toggled, a
button pressed once), a plan made from the unchanging page is followed by the episode's step
number (``observation.data["step"]``), which any agent knows. An element not there yet (an icon
whose image is loading has no size, so no ref) is waited for, never guessed. :data:`BY_KIND`
groups the policies by the kind of widget; the goal formats parsed are those of ``miniwob`` 1.1.0.

Example:
    >>> MINIWOB["click-button"](observation, 'Click on the "OK" button.')  # doctest: +SKIP
    Action(kind='click', args={'ref': 'e7'})
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from autodidact.types import Action, Observation
from environments.web.actions import make_action
from environments.web.observe import INTERACTIVE, elements, find

Policy = Callable[[Observation, str], Action]

# Roles a line of the rendered tree can start with; any other line is text.
_ROLES = INTERACTIVE | {"clickable", "dialog", "alertdialog", "heading", "tabpanel", "img", "list", "table"}
_ROW = re.compile(r"^( *)(?:\[((?:f\d+)?e\d+)\] )?(.*)$")
_NAMED = re.compile(r'^(\w+)(?: "((?:[^"\\]|\\.)*)")?(.*)$')
_ORDINAL = {"1st": 1, "2nd": 2, "3rd": 3}


@dataclass(frozen=True)
class Row:
    """One line of the tree: an element (``role`` and ``name``) or text (``role == "text"``)."""

    ref: str | None
    role: str
    name: str
    rest: str
    depth: int

    @property
    def text(self) -> str:
        """What the line says: a text line's words, an element's name."""
        return self.name

    def has(self, state: str) -> bool:
        return state in self.rest.split()


def rows(obs: Observation) -> list[Row]:
    """The tree below the observation's header, one :class:`Row` per line."""
    _, _, tree = obs.text.partition("\n\n")
    out = []
    for line in tree.splitlines():
        m = _ROW.match(line)
        assert m is not None  # the pattern matches every line
        indent, ref, body = m.groups()
        n = _NAMED.match(body)
        if n and n.group(1) in _ROLES:
            name = json.loads(f'"{n.group(2)}"') if n.group(2) is not None else ""
            out.append(Row(ref, n.group(1), name, n.group(3).strip(), len(indent) // 2))
        else:
            out.append(Row(ref, "text", body, "", len(indent) // 2))
    return out


def _click(ref: str | None) -> Action:
    """Click ``ref``; if the element has no ref yet (an image still loading has no size), wait for it."""
    return make_action("click", ref) if ref else _wait()


def _wait() -> Action:
    """An action that changes nothing, while the page works (an autocomplete's delay)."""
    return make_action("scroll", "up")


def _step(obs: Observation) -> int:
    """Actions taken so far in the episode."""
    return int(obs.data.get("step", 0))


def _plan(obs: Observation, plan: list[Action], then: Action) -> Action:
    """The plan's action for this step, then ``then``."""
    step = _step(obs)
    return plan[step] if step < len(plan) else then


def _value(rest: str) -> str | None:
    m = re.search(r'value=("(?:[^"\\]|\\.)*")', rest)
    return str(json.loads(m.group(1))) if m else None


def _match(pattern: str, text: str) -> re.Match[str]:
    """``pattern`` searched in a goal (or the page's text): a policy given another task's goal says so."""
    m = re.search(pattern, text)
    if m is None:
        raise ValueError(f"not the goal this policy reads: {text!r}")
    return m


def _the(obs: Observation, role: str) -> str:
    """The ref of the page's first ``role`` element, which the task always has."""
    ref = find(obs, role)
    if ref is None:
        raise ValueError(f"no {role} on this page")
    return ref


def _quoted(goal: str) -> list[str]:
    return re.findall(r'"([^"]*)"', goal)


def _ordinal(word: str) -> int:
    return _ORDINAL.get(word) or int(re.sub(r"\D", "", word))


def _fill(ref: str, rest: str, text: str) -> Action | None:
    """Type ``text`` into a box unless it already holds it."""
    return None if _value(rest) == text else make_action("type", ref, text)


def _fill_then(obs: Observation, pairs: list[tuple[str, str]], submit: str | None) -> Action:
    """Fill each (textbox ref, text) in turn, then click the button named ``submit``."""
    boxes = {ref: rest for ref, _, _, rest in elements(obs, "textbox")}
    for ref, text in pairs:
        action = _fill(ref, boxes.get(ref, ""), text)
        if action:
            return action
    return _click(find(obs, "button", submit) if submit else find(obs, "button"))


# -- clicking ---------------------------------------------------------------------------------


def click_test(obs: Observation, goal: str) -> Action:
    return _click(find(obs, "button"))


def click_test_2(obs: Observation, goal: str) -> Action:
    m = re.search(r"Click button (\w+)", goal)
    return _click(find(obs, "button", m.group(1) if m else None))


def click_button(obs: Observation, goal: str) -> Action:
    m = re.search(r'Click on the "([^"]*)" button', goal)
    return _click(find(obs, "button", m.group(1) if m else None))


def click_link(obs: Observation, goal: str) -> Action:
    word = _quoted(goal)[0]
    return _click(find(obs, "clickable", word) or find(obs, "link", word))


def click_dialog(obs: Observation, goal: str) -> Action:
    return _click(find(obs, "button", "Close"))


def click_dialog_2(obs: Observation, goal: str) -> Action:
    label = _quoted(goal)[0]
    return _click(find(obs, "button", "Close" if label == "x" else label))


def focus_text(obs: Observation, goal: str) -> Action:
    m = re.search(r"Focus into the (\w+) input textbox", goal)
    boxes = elements(obs, "textbox")
    return _click(boxes[_ordinal(m.group(1)) - 1][0] if m else boxes[0][0])


# -- checkboxes and radios --------------------------------------------------------------------


def click_checkboxes(obs: Observation, goal: str) -> Action:
    m = re.search(r"Select (.*?) and click Submit", goal)
    wanted = {w.strip() for w in m.group(1).split(",")} if m and m.group(1) != "nothing" else set()
    for ref, _, name, rest in elements(obs, "checkbox"):
        if (name in wanted) != ("checked" in rest.split()):
            return make_action("check", ref, checked=name in wanted)
    return _click(find(obs, "button", "Submit"))


def click_option(obs: Observation, goal: str) -> Action:
    m = re.search(r"Select (.*) and click Submit", goal)
    for ref, _, name, rest in elements(obs, "radio"):
        if m and name == m.group(1) and "checked" not in rest.split():
            return make_action("check", ref)
    return _click(find(obs, "button", "Submit"))


def form_sequence_2(obs: Observation, goal: str) -> Action:
    m = _match(r'Check the (\w+) radio button and enter the number "(.*)" into the (\w+) textbox', goal)
    radio_ref, _, _, radio_rest = elements(obs, "radio")[_ordinal(m.group(1)) - 1]
    if "checked" not in radio_rest.split():
        return make_action("check", radio_ref)
    box, _, _, rest = elements(obs, "textbox")[_ordinal(m.group(3)) - 1]
    return _fill(box, rest, m.group(2)) or _click(find(obs, "button", "Submit"))


# -- text entry -------------------------------------------------------------------------------


def enter_text(obs: Observation, goal: str) -> Action:
    box = _the(obs, "textbox")
    return _fill_then(obs, [(box, _quoted(goal)[0])], "Submit")


def enter_text_2(obs: Observation, goal: str) -> Action:
    box = _the(obs, "textbox")
    text = _quoted(goal)[0]
    return _fill_then(obs, [(box, text.lower() if "lower case" in goal else text.upper())], "Submit")


def enter_password(obs: Observation, goal: str) -> Action:
    password = _quoted(goal)[0]
    return _fill_then(obs, [(ref, password) for ref, _, _, _ in elements(obs, "textbox")], "Submit")


def login_user(obs: Observation, goal: str) -> Action:
    user, password = _quoted(goal)[:2]
    boxes = [ref for ref, _, _, _ in elements(obs, "textbox")]
    return _fill_then(obs, list(zip(boxes, (user, password), strict=False)), "Login")


def login_user_popup(obs: Observation, goal: str) -> Action:
    cancel = find(obs, "button", "Cancel")  # "Exit to home page?": no
    if cancel:
        return _click(cancel)
    user, password = _quoted(goal)[:2]
    boxes = [ref for ref, _, _, _ in elements(obs, "textbox")]
    return _fill_then(obs, list(zip(boxes, (user, password), strict=False)), "OK")


def _labelled_boxes(obs: Observation) -> list[tuple[str, str]]:
    """(textbox ref, its label) pairs: the text beside each box, before it or (if none) after it."""
    area = rows(obs)[_goal_row(obs) :]
    tree = [r for r in area if r.role in ("text", "textbox", "rowheader", "cell", "clickable")]
    boxes = [i for i, r in enumerate(tree) if r.role == "textbox"]
    label_before = boxes and boxes[0] > 0 and tree[boxes[0] - 1].role != "textbox"
    out = []
    for i in boxes:
        j = i - 1 if label_before else i + 1
        label = tree[j].text if 0 <= j < len(tree) and tree[j].role != "textbox" else ""
        out.append((str(tree[i].ref), label))
    return out


def multi_layouts(obs: Observation, goal: str) -> Action:
    m = _match(r"Search for (.*) movies directed by (.*) from year (\d+)", goal)
    genre, director, year = m.groups()
    pairs = []
    for ref, label in _labelled_boxes(obs):
        low = label.lower()
        pairs.append((ref, genre if "genre" in low else director if "director" in low else year))
    boxes = {ref: rest for ref, _, _, rest in elements(obs, "textbox")}
    for ref, text in pairs:
        action = _fill(ref, boxes[ref], text)
        if action:
            return action
    # Submit, Search or Go!: a button, or a clickable div (shown as text when the snapshot merges it with its wrapper)
    tree = rows(obs)
    last_box = max(i for i, r in enumerate(tree) if r.role == "textbox")
    submit = [r.ref for r in tree[last_box + 1 :] if r.role in ("button", "clickable", "text") and r.ref]
    return _click(submit[-1] if submit else None)


def _goal_row(obs: Observation) -> int:
    """The index of the first row after the goal's own line: where the task area starts."""
    goal = str(obs.data.get("goal", ""))
    for i, r in enumerate(rows(obs)):
        if len(r.text) > 8 and r.text.strip() in goal:
            return i + 1
    return 0


def find_word(obs: Observation, goal: str) -> Action:
    m = _match(r"Find the (\w+) word in the paragraph", goal)
    tree = rows(obs)
    box = _the(obs, "textbox")
    i = next(i for i, r in enumerate(tree) if r.ref == box)
    paragraph = " ".join(r.text for r in tree[_goal_row(obs) : i] if r.role == "text")
    word = re.sub(r"[^a-zA-Z]", "", paragraph.split()[_ordinal(m.group(1)) - 1])
    return _fill_then(obs, [(box, word)], "Submit")


def _table(obs: Observation) -> dict[str, str]:
    """Two-column tables shown as alternating label and value lines."""
    text = [r.text for r in rows(obs)[_goal_row(obs) :] if r.role == "text"]
    return {text[i]: text[i + 1] for i in range(len(text) - 1)}


def read_table(obs: Observation, goal: str) -> Action:
    m = _match(r"Enter the value of (.*) into the text field", goal)
    box = _the(obs, "textbox")
    return _fill_then(obs, [(box, _table(obs)[m.group(1)])], "Submit")


def read_table_2(obs: Observation, goal: str) -> Action:
    table = _table(obs)
    pairs = [(ref, table[label.rstrip(":")]) for ref, label in _labelled_boxes(obs)]
    return _fill_then(obs, pairs, "Submit")


def simple_arithmetic(obs: Observation, goal: str) -> Action:
    text = " ".join(r.text for r in rows(obs) if r.role == "text")
    m = _match(r"(-?\d+) ([-+x]) (-?\d+) =", text)
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    answer = a + b if op == "+" else a - b if op == "-" else a * b
    box = _the(obs, "textbox")
    return _fill_then(obs, [(box, str(answer))], "Submit")


def simple_algebra(obs: Observation, goal: str) -> Action:
    text = " ".join(r.text for r in rows(obs) if r.role == "text")
    m = _match(r"(\S+) ([-+]) (\S+) = (-?\d+)", text)
    left, op, right, total = m.group(1), m.group(2), m.group(3), int(m.group(4))
    if op == "+":
        answer = total - int(right if left == "x" else left)
    elif left == "x":
        answer = total + int(right)
    else:
        answer = int(left) - total
    box = _the(obs, "textbox")
    return _fill_then(obs, [(box, str(answer))], "Submit")


def text_transform(obs: Observation, goal: str) -> Action:
    tree = rows(obs)
    box = _the(obs, "textbox")
    i = next(i for i, r in enumerate(tree) if r.ref == box)
    letters = "".join(r.text for r in tree[_goal_row(obs) : i] if r.role == "text")
    return _fill_then(obs, [(box, letters)], "Submit")


def scroll_text(obs: Observation, goal: str) -> Action:
    (_, _, _, rest), (box, _, _, _) = elements(obs, "textbox")[:2]
    last = (_value(rest) or "").split()[-1].replace(".", "")
    return _fill_then(obs, [(box, last)], "Submit")


def enter_date(obs: Observation, goal: str) -> Action:
    m = _match(r"(\d\d)/(\d\d)/(\d{4})", goal)
    box = _the(obs, "textbox")
    # a date input takes (and shows) its value as YYYY-MM-DD
    return _fill_then(obs, [(box, f"{m.group(3)}-{m.group(1)}-{m.group(2)}")], "Submit")


def enter_time(obs: Observation, goal: str) -> Action:
    m = _match(r"(\d+):(\d\d) ([AP]M)", goal)
    hour = int(m.group(1)) % 12 + (12 if m.group(3) == "PM" else 0)
    box = _the(obs, "textbox")
    return _fill_then(obs, [(box, f"{hour:02d}:{m.group(2)}")], "Submit")


# -- selection lists --------------------------------------------------------------------------


def _select_then_click(obs: Observation, option: str, button: str) -> Action:
    combo = find(obs, "combobox")
    selected = [r.text for r in rows(obs) if r.role == "option" and r.has("selected")]
    if combo and selected != [option]:
        return make_action("select", combo, option)
    return _click(find(obs, "button", button))


def choose_list(obs: Observation, goal: str) -> Action:
    m = _match(r"Select (.*) from the list and click Submit", goal)
    return _select_then_click(obs, m.group(1), "Submit")


def form_sequence_3(obs: Observation, goal: str) -> Action:
    m = _match(r'Choose (.*) from the dropdown, then click the button labeled "(.*)"', goal)
    return _select_then_click(obs, m.group(1), m.group(2))


# -- tabs and collapsibles --------------------------------------------------------------------


def click_tab(obs: Observation, goal: str) -> Action:
    m = re.search(r"Click on (Tab #\d+)", goal)
    return _click(find(obs, "link", m.group(1) if m else None))


def _tabs(obs: Observation) -> list[tuple[Row, str | None]]:
    """Each tab (or accordion header) with the ref of the link inside it, if any."""
    tree, out = rows(obs), []
    for i, r in enumerate(tree):
        if r.role == "tab":
            inner = tree[i + 1] if i + 1 < len(tree) and tree[i + 1].depth > r.depth else None
            out.append((r, inner.ref if inner and inner.role == "link" else None))
    return out


def click_tab_2(obs: Observation, goal: str) -> Action:
    word = _quoted(goal)[0]
    ref = find(obs, "clickable", word)
    if ref:
        return _click(ref)
    tabs = _tabs(obs)
    if not tabs:  # the page is still drawing its tabs
        return _wait()
    current = next((i for i, (t, _) in enumerate(tabs) if t.has("selected")), -1)
    tab, link = tabs[(current + 1) % len(tabs)]
    return _click(link or tab.ref)


def click_collapsible(obs: Observation, goal: str) -> Action:
    sections = [t for t, _ in _tabs(obs) if t.name.strip().startswith("Section")]
    if sections and not any(t.has("expanded") for t in sections):
        return _click(sections[0].ref)
    return _click(find(obs, "button", "Submit"))


def click_collapsible_2(obs: Observation, goal: str) -> Action:
    word = _quoted(goal)[0]
    ref = find(obs, "clickable", word)
    if ref:
        return _click(ref)
    sections = [t for t, _ in _tabs(obs)]
    if not sections:
        return _wait()
    current = next((i for i, t in enumerate(sections) if t.has("expanded")), -1)
    return _click(sections[(current + 1) % len(sections)].ref)


# -- steps the page does not show ---------------------------------------------------------------
# Some pages keep no visible trace of an action (a class toggled, a button pressed once): those
# policies follow a plan made from the (unchanging) page, indexed by the episode's step number.


def click_button_sequence(obs: Observation, goal: str) -> Action:
    return _click(find(obs, "button", "ONE" if _step(obs) == 0 else "TWO"))


def odd_or_even(obs: Observation, goal: str) -> Action:
    tree, plan = rows(obs), []
    for i, r in enumerate(tree[1:-1], 1):
        if r.role == "text" and re.fullmatch(r"-?\d+", r.text) and tree[i - 1].name == "Odd":
            odd = int(r.text) % 2 == 1
            plan.append(_click(tree[i - 1].ref if odd else tree[i + 1].ref))
    return _plan(obs, plan, _click(find(obs, "button", "Submit")))


def social_media_some(obs: Observation, goal: str) -> Action:
    m = _match(r'Click the "(\w+)" button on (all|\d+) posts? by (@\S+) and then click Submit', goal)
    action, amount, user = m.group(1).lower(), m.group(2), m.group(3)
    plan = [_click(ref) for ref in _post_buttons(obs, user, action)]
    return _plan(obs, plan if amount == "all" else plan[: int(amount)], _click(find(obs, "button", "Submit")))


def _post_buttons(obs: Observation, user: str, name: str) -> list[str]:
    """Refs of the elements named ``name`` in the posts by ``user``: a post starts with a line
    "Name @user"; its icons, and its menu's items once open ("Mute @user"), follow."""
    out, author = [], None
    for r in rows(obs):
        byline = r.role == "text" and not r.text.startswith(("Mute @", "Block @"))  # not the menu's items
        users = re.findall(r"@[\w.-]+", r.text) if byline else []
        if users:
            author = users[-1]
        elif author == user and r.ref and (r.name == name or r.name.startswith(name + " ")):
            out.append(r.ref)
    return out


def social_media(obs: Observation, goal: str) -> Action:
    m = _match(r'For the user (@\S+), click on the "(.*)" button', goal)
    user, label = m.group(1), m.group(2)
    # reply, retweet and like are icons of the post; the rest are in its "more" menu
    buttons = _post_buttons(obs, user, label) or _post_buttons(obs, user, label.lower())
    return _click(buttons[0] if buttons else next(iter(_post_buttons(obs, user, "more")), None))


def scroll_text_2(obs: Observation, goal: str) -> Action:
    # the tree does not show how far a text area is scrolled: two turns of the wheel reach either end
    direction = "up" if "to the top" in goal else "down"
    area = find(obs, "textbox")
    return _plan(obs, [make_action("scroll", direction, area)] * 2, _click(find(obs, "button", "Submit")))


def sign_agreement(obs: Observation, goal: str) -> Action:
    if goal.startswith("Click the cancel button"):
        return _click(find(obs, "button", "Cancel"))
    m = _match(r'enter the name "(.*)" then press "(\w+)"', goal)
    boxes = elements(obs, "textbox")
    if any(name == "Agree" and "disabled" in rest.split() for _, _, name, rest in elements(obs, "button")):
        return make_action("scroll", "down", boxes[0][0])  # the buttons wake once the agreement is read
    name_box = next((ref, rest) for ref, _, name, rest in boxes if name == "Name")
    return _fill(name_box[0], name_box[1], m.group(1)) or _click(find(obs, "button", m.group(2)))


# -- search, navigation and lists -------------------------------------------------------------


def search_engine(obs: Observation, goal: str) -> Action:
    m = _match(r'enter "(.*)" and press "Search", then find and click the (\d+)\w\w search result', goal)
    term, n = m.group(1), int(m.group(2))
    box = _the(obs, "textbox")
    typed = _fill(box, next(rest for ref, _, _, rest in elements(obs, "textbox") if ref == box), term)
    links = [(ref, name) for ref, _, name, _ in elements(obs, "link")]
    pages = [ref for ref, name in links if name.isdigit()]
    if typed or not pages:
        return typed or _click(find(obs, "button", "Search"))
    # the pager shows "<" except on the first page and ">" except on the last
    names = {name for _, name in links}
    page = 1 if "<" not in names else 3 if ">" not in names else 2
    want = (n - 1) // 3 + 1
    if page != want:
        return _click(pages[want - 1])
    results = [ref for ref, name in links if not name.isdigit() and name not in ("<", ">", "«", "»")]
    return _click(results[(n - 1) % 3])


def navigate_tree(obs: Observation, goal: str) -> Action:
    name = _quoted(goal)[0]
    for r in rows(obs):
        if r.role == "text" and r.ref and r.text == name:
            return _click(r.ref)
    # open the closed folders in turn (an empty folder stays closed: the step number moves past it)
    closed = [ref for ref, _, n, _ in elements(obs, "button") if "expandable" in n.split()]
    return _click(closed[_step(obs) % len(closed)] if closed else None)


def phone_book(obs: Observation, goal: str) -> Action:
    m = _match(r"Find (.*) in the contact book and click on their (address|phone number|email)", goal)
    person, field = m.group(1), {"phone number": "Phone:", "email": "Email:", "address": "Address:"}[m.group(2)]
    if find(obs, "heading", person):
        tree = rows(obs)
        i = next(i for i, r in enumerate(tree) if r.text.strip() == field)
        return _click(tree[i + 1].ref)
    return _click(find(obs, "link", ">"))


def use_autocomplete(obs: Observation, goal: str) -> Action:
    m = _match(r'starts with "(.*?)"(?: and ends with "(.*?)")?', goal)
    start, end = m.group(1), m.group(2) or ""
    box = _the(obs, "textbox")
    value = _value(next(rest for ref, _, _, rest in elements(obs, "textbox") if ref == box)) or ""
    if value.startswith(start) and value.endswith(end) and value != start:
        return _click(find(obs, "button", "Submit"))
    menu = next((r for r in rows(obs) if r.role == "list" and "autocomplete" in r.name), None)
    if menu is None:
        return _wait() if value == start else make_action("type", box, start)
    tree = rows(obs)
    i = tree.index(menu)
    for r in tree[i + 1 :]:
        if r.depth <= menu.depth:
            break
        if r.text.startswith(start) and r.text.endswith(end):
            return _click(r.ref)
    return make_action("type", box, start)


_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def choose_date(obs: Observation, goal: str) -> Action:
    m = _match(r"(\d\d)/(\d\d)/(\d{4})", goal)
    box = find(obs, "textbox")
    value = _value(next(rest for ref, _, _, rest in elements(obs, "textbox") if ref == box))
    if value == m.group(0):
        return _click(find(obs, "button", "Submit"))
    tree = rows(obs)
    shown = next((r for r in tree if re.fullmatch(r"[A-Z][a-z]+ \d{4}", r.text)), None)
    if shown is None:
        return _click(box)  # the date picker opens on focus
    month, year = shown.text.split()
    have, want = int(year) * 12 + _MONTHS.index(month), int(m.group(3)) * 12 + int(m.group(1)) - 1
    if have != want:
        step = next((r.ref for r in tree if r.ref and r.text == ("Prev" if want < have else "Next")), None)
        return _click(step)
    return _click(find(obs, "link", str(int(m.group(2)))))


def guess_number(obs: Observation, goal: str) -> Action:
    box = _the(obs, "spinbutton")
    value = _value(next(rest for ref, _, _, rest in elements(obs, "spinbutton") if ref == box))
    text = " ".join(r.text for r in rows(obs) if r.role == "text")
    hint = re.search(r"The number is (lower|higher) than (\d+)", text)
    guess = 5 if hint is None else int(hint.group(2)) + (1 if hint.group(1) == "higher" else -1)
    if hint and value != hint.group(2) and value is not None:
        guess = int(value)  # typed, not yet submitted
    return (None if value == str(guess) else make_action("type", box, str(guess))) or _click(
        find(obs, "button", "Submit")
    )


def use_spinner(obs: Observation, goal: str) -> Action:
    m = _match(r"Select (-?\d+) with the spinner", goal)
    box, _, _, rest = elements(obs, "spinbutton")[0]
    return _fill(box, rest, m.group(1)) or _click(find(obs, "button", "Submit"))


# -- drag -----------------------------------------------------------------------------------------

_GRID = ["top left", "top center", "top right", "center left", "center", "center right"]
_GRID += ["bottom left", "bottom center", "bottom right"]


def _items(obs: Observation) -> list[Row]:
    """The items of a sortable list: the text lines with refs below the goal, before any button."""
    out = []
    for r in rows(obs)[_goal_row(obs) :]:
        if r.role != "text":
            break
        if r.ref:
            out.append(r)
    return out


def _drag_to(obs: Observation, name: str, where: int) -> Action:
    items = _items(obs)
    names = [r.text for r in items]
    if name not in names:
        return _wait()
    return make_action("drag", items[names.index(name)].ref, items[where - 1].ref)


def drag_items(obs: Observation, goal: str) -> Action:
    m = _match(
        r"Drag (.*?) (to the top|to the bottom|down by one position|up by one position|to the (\d)\w\w position)\.",
        goal,
    )
    names = [r.text for r in _items(obs)]
    at = names.index(m.group(1)) + 1 if m.group(1) in names else 1
    where = {"to the top": 1, "to the bottom": len(names), "down by one position": at + 1, "up by one position": at - 1}
    return _drag_to(obs, m.group(1), where.get(m.group(2)) or int(m.group(3)))


def drag_items_grid(obs: Observation, goal: str) -> Action:
    m = _match(r"Drag (.*?) (?:to the (.*)|(up|down|left|right) by one)\.", goal)
    names = [r.text for r in _items(obs)]
    at = names.index(m.group(1)) + 1 if m.group(1) in names else 1
    if m.group(2):
        return _drag_to(obs, m.group(1), _GRID.index(m.group(2)) + 1)
    return _drag_to(obs, m.group(1), at + {"up": -3, "down": 3, "left": -1, "right": 1}[m.group(3)])


def drag_sort_numbers(obs: Observation, goal: str) -> Action:
    items = _items(obs)
    numbers = [int(r.text) for r in items]
    for i, (have, want) in enumerate(zip(numbers, sorted(numbers), strict=True)):
        if have != want:
            return make_action("drag", items[numbers.index(want, i)].ref, items[i].ref)
    return _click(find(obs, "button", "Submit"))


# -- email ----------------------------------------------------------------------------------------


def _email_goal(goal: str) -> tuple[str, str, str]:
    """(task, sender, text): task is reply, forward, delete or star; text the reply or the recipient."""
    if goal.startswith("{"):
        fields = json.loads(goal)["fields"]
        return fields.get("task", "forward"), fields["by"], fields.get("message") or fields.get("to") or ""
    m = _match(
        r"Find the email by (.*?) and (reply to them with the text \"(.*)\"|forward that email to (.*)\.|click the trash|click the star)",
        goal,
    )
    if m.group(3) is not None:
        return "reply", m.group(1), m.group(3)
    if m.group(4) is not None:
        return "forward", m.group(1), m.group(4)
    return ("delete" if "trash" in m.group(2) else "star"), m.group(1), ""


def email_inbox(obs: Observation, goal: str) -> Action:
    task, sender, text = _email_goal(goal)
    tree = rows(obs)
    buttons = {r.name: r.ref for r in tree if r.role in ("button", "clickable") and r.name}
    if "send reply" in buttons or "send forward" in buttons:  # the reply or forward form
        box, _, _, rest = elements(obs, "textbox")[0]
        return _fill(box, rest, text) or _click(buttons.get("send reply") or buttons.get("send forward"))
    opened = next((r for r in tree if r.role == "text" and r.text in ("Reply", "Forward")), None)
    if opened:  # one email, open: its actions
        label = {"reply": "Reply", "forward": "Forward"}.get(task)
        if label:
            return _click(next(r.ref for r in tree if r.role == "text" and r.text == label))
        return _click(buttons.get("trash" if task == "delete" else "star"))
    for i, r in enumerate(tree):  # the inbox: one clickable row per email, its sender first
        if r.role == "clickable" and i + 1 < len(tree) and tree[i + 1].text == sender and tree[i + 1].depth > r.depth:
            if task in ("reply", "forward"):
                return _click(tree[i + 1].ref)
            icon = "trash" if task == "delete" else "star"
            row = [x for x in tree[i + 1 :] if x.depth > r.depth]
            return _click(next(x.ref for x in row if x.name == icon))
    return _click(None)


# The policies by the kind of widget their tasks are about (the README's table).
BY_KIND: dict[str, dict[str, Policy]] = {
    "clicking": {
        "click-test": click_test,
        "click-test-2": click_test_2,
        "click-test-transfer": click_test_2,
        "click-button": click_button,
        "click-button-sequence": click_button_sequence,
        "unicode-test": click_button,
        "click-link": click_link,
        "focus-text": focus_text,
        "focus-text-2": focus_text,
    },
    "dialogs": {
        "click-dialog": click_dialog,
        "click-dialog-2": click_dialog_2,
        "login-user-popup": login_user_popup,
    },
    "checkboxes, radios, toggles": {
        "click-checkboxes": click_checkboxes,
        "click-checkboxes-large": click_checkboxes,
        "click-checkboxes-transfer": click_checkboxes,
        "click-option": click_option,
        "form-sequence-2": form_sequence_2,
        "odd-or-even": odd_or_even,
    },
    "forms and text entry": {
        "enter-text": enter_text,
        "enter-text-2": enter_text_2,
        "enter-text-dynamic": enter_text,
        "enter-password": enter_password,
        "login-user": login_user,
        "multi-layouts": multi_layouts,
        "multi-orderings": multi_layouts,
        "find-word": find_word,
        "read-table": read_table,
        "read-table-2": read_table_2,
        "simple-arithmetic": simple_arithmetic,
        "simple-algebra": simple_algebra,
        "text-transform": text_transform,
        "scroll-text": scroll_text,
        "guess-number": guess_number,
    },
    "selection lists, spinners": {
        "choose-list": choose_list,
        "form-sequence-3": form_sequence_3,
        "use-spinner": use_spinner,
    },
    "tabs, collapsibles": {
        "click-tab": click_tab,
        "click-tab-2": click_tab_2,
        "click-tab-2-easy": click_tab_2,
        "click-tab-2-medium": click_tab_2,
        "click-tab-2-hard": click_tab_2,
        "click-collapsible": click_collapsible,
        "click-collapsible-nodelay": click_collapsible,
        "click-collapsible-2": click_collapsible_2,
        "click-collapsible-2-nodelay": click_collapsible_2,
    },
    "date and time pickers": {
        "choose-date": choose_date,
        "choose-date-easy": choose_date,
        "choose-date-medium": choose_date,
        "choose-date-nodelay": choose_date,
        "enter-date": enter_date,
        "enter-time": enter_time,
    },
    "autocomplete": {
        "use-autocomplete": use_autocomplete,
        "use-autocomplete-nodelay": use_autocomplete,
    },
    "scrolling": {
        "scroll-text-2": scroll_text_2,
        "sign-agreement": sign_agreement,
    },
    "search, navigation": {
        "search-engine": search_engine,
        "phone-book": phone_book,
        "navigate-tree": navigate_tree,
    },
    "email, social media": {
        "email-inbox": email_inbox,
        "email-inbox-delete": email_inbox,
        "email-inbox-important": email_inbox,
        "email-inbox-reply": email_inbox,
        "email-inbox-star-reply": email_inbox,
        "email-inbox-forward": email_inbox,
        "email-inbox-forward-nl": email_inbox,
        "email-inbox-forward-nl-turk": email_inbox,
        "email-inbox-nl-turk": email_inbox,
        "email-inbox-noscroll": email_inbox,
        "social-media": social_media,
        "social-media-all": social_media_some,
        "social-media-some": social_media_some,
    },
    "drag": {
        "drag-items": drag_items,
        "drag-items-grid": drag_items_grid,
        "drag-sort-numbers": drag_sort_numbers,
    },
}
MINIWOB: dict[str, Policy] = {name: policy for group in BY_KIND.values() for name, policy in group.items()}
