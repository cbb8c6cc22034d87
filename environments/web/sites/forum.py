"""A discussion forum: browse categories, read threads, post, reply, vote, edit, delete.

The forum (served under ``/forum``) starts from a seeded initial forum generated in code
(:func:`base_forum`, ``random.Random(4321)``): 8 categories (Gardening, Cooking, …), 25
members plus ``you`` (the agent, always signed in), 150 threads, each an opening post and
0–8 replies with vote counts. Ids grow in creation order (a higher thread or post id is more
recent). ``you`` started some threads and wrote some replies, so there is something of your
own to edit or delete. Pages:

- ``/``: categories and the ten most recent threads; every page has a title search box;
- ``/c/<slug>?page=N``: a category's threads, newest first, 10 a page (title link, author,
  replies, votes);
- ``/t/<id>``: the thread: ``Started by <user> in <category> · <n> replies``, then the posts
  (each an ``article`` named ``Opening post 17 by alice`` or ``Reply 18 by bob``) with their
  votes and an ``Upvote post 17`` button; your own posts also have ``Edit post 17`` and a
  ``Delete thread`` / ``Delete post 17`` button; at the bottom a ``Reply`` box and ``Post reply``;
- ``/new``: ``Category`` select, ``Title``, ``Body``, ``Create thread``;
- ``/search?q=&page=``: threads whose title contains ``q`` (case-insensitive);
- ``/u/<name>``: the threads a member started; ``/p/<id>/edit``: ``Post text``, ``Save changes``.

Every POST answers with a 303 redirect (or the form again, with an error, when a field is
empty). An episode's state (:class:`ForumState`) holds only its changes over the shared,
immutable base forum (new threads and posts, edits, upvotes, deletions) and the list of
writes in order, so a reset costs a few empty containers.

Tasks (:func:`forum_suite`, ids ``forum/<n>``; payload ``{"kind": "site", "site": "forum",
"start": "/", "goal": {"family": ..., ...}}``), by ``goal["family"]``:

- ``create``: create a thread in ``category`` titled ``title`` whose body contains ``body``;
- ``reply``: reply to the thread ``thread`` (id; ``title`` its title) with ``text``;
- ``upvote``: upvote ``which`` = ``opening`` (the opening post), ``first`` or ``last`` (the
  first or most recent reply by ``user``) in thread ``thread``; ``post`` is the target id;
- ``edit``: edit your ``post`` (``which`` = ``opening`` or ``reply``) in thread ``thread``
  so that it reads ``text``;
- ``delete``: delete your thread ``thread`` (``which`` = ``opening``), or your reply
  ``post`` in it (``which`` = ``reply``);
- ``question``: ``ask`` = ``replies`` (how many replies), ``starter`` (who started it) or
  ``category`` (which category it is in) about thread ``thread``; ``answer`` is the truth.

Judging (:meth:`ForumSite.judge`): every write task needs exactly one write (a new thread,
a reply, an upvote, an edit or a deletion) and a question none, so the first write ends the
episode and is judged: success (reward 1) when it is exactly the asked change, else reward 0
with a ``detail``; a ``create`` with the wrong category, title or body earns 1/3 for each of
the three that is right (success needs all three). Texts compare after collapsing
whitespace and ignoring case (and surrounding quotes and a final period); ``body`` must be
contained in the new thread's body, reply and edit texts must be equal. An ``answer(...)``
ends the episode: for a question it is right when it equals the truth after the same
normalization (a count compares as a number: ``"3"``, ``"3 replies"``); for a write task an
answer or ``stop()`` before the write scores 0. About a fifth of the tasks are held out
(``split="test"``): they concern threads (and new titles, reply and edit texts) that no
train task uses.

Example:
    >>> forum = ForumSite()
    >>> task = forum.tasks()[0]
    >>> forum.judge(task, forum.new_state(task), None, stopped=True).done
    True
"""

from __future__ import annotations

import functools
import html
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from autodidact.types import Action, Observation, Task
from environments.web.actions import make_action
from environments.web.sites.base import Request, Response, Verdict, page

SITE = "forum"
ROOT = f"/{SITE}"
SEED = 4321
ME = "you"
PER_PAGE = 10
THREADS = 150
MAX_REPLIES = 8
TEST_FRACTION = 0.2
FIELD_CREDIT = 1 / 3  # a created thread earns this for each of category, title and body that is right

_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Gardening", ("tomato seedlings", "raised beds", "compost heaps", "rose pruning", "herb planters", "clay soil",
                   "slug control", "fruit trees", "seed saving", "lawn moss", "greenhouse heating", "potato blight")),
    ("Cooking", ("sourdough starters", "cast iron pans", "fresh pasta", "curry pastes", "knife sharpening",
                 "pressure cookers", "meal prep", "bread proofing", "stock making", "pickled vegetables",
                 "pie crusts", "wok cooking")),
    ("Cycling", ("tubeless tyres", "chain lubrication", "gravel bikes", "saddle height", "winter commuting",
                 "disc brakes", "bike fitting", "touring racks", "hill climbing", "indoor trainers", "wheel truing",
                 "cycling shoes")),
    ("Photography", ("prime lenses", "night skies", "street portraits", "raw editing", "film cameras",
                     "macro insects", "tripod heads", "golden hour light", "flash diffusers", "sensor cleaning",
                     "bird photography", "long exposures")),
    ("Woodworking", ("hand planes", "dovetail joints", "finishing oils", "workbench builds", "chisel sharpening",
                     "table saws", "wood glue", "spoon carving", "router jigs", "oak tables", "dust collection",
                     "pocket holes")),
    ("Board Games", ("deck building games", "cooperative games", "two player games", "game nights",
                     "miniature painting", "card sleeves", "party games", "legacy campaigns", "solo variants",
                     "rules disputes", "game storage", "trading games")),
    ("Astronomy", ("first telescopes", "star charts", "planet viewing", "light pollution", "binocular astronomy",
                   "meteor showers", "eyepiece choice", "moon photography", "dark sky sites", "equatorial mounts",
                   "comet hunting", "solar filters")),
    ("Home Brewing", ("pale ales", "yeast starters", "bottle conditioning", "hop schedules", "kegging setups",
                      "sour beers", "mash temperatures", "cider making", "water chemistry", "fermentation chambers",
                      "dry hopping", "all grain brewing")),
)  # fmt: skip
_TITLES = (
    "Tips for {s}",
    "Help with {s}",
    "Beginner question about {s}",
    "Is it worth getting into {s}",
    "Advice on {s} please",
    "My experience with {s}",
    "Common mistakes with {s}",
    "Budget options for {s}",
    "What do you think of {s}",
    "Troubleshooting {s}",
    "Getting started with {s}",
    "Lessons learned from {s}",
)
_USERS = (
    "alice", "bruno", "chen", "dara", "elif", "farid", "greta", "hiro", "ines", "jonas", "kemal", "lena", "mateo",
    "nadia", "oskar", "priya", "quinn", "rosa", "sami", "tara", "ugo", "vera", "wen", "xavier", "yara",
)  # fmt: skip
_OPENINGS = (
    "I have been reading about {s} for a while and would like some advice.",
    "Last month I finally tried {s} and the results were mixed.",
    "Looking for opinions on {s} before I spend any money.",
    "Can anyone explain what matters most with {s}?",
    "Sharing what worked for me with {s} after a long season.",
)
_DETAILS = (
    "Any pointers are welcome.",
    "I am a complete beginner here.",
    "Photos and links appreciated.",
    "What would you do differently?",
    "Thanks in advance for any help.",
)
_REPLIES = (
    "Start small and keep notes, that helped me with {s}.",
    "I had the same question about {s} last year.",
    "Patience matters more than gear for {s}.",
    "There is a good guide on {s} in the pinned thread.",
    "Try asking at your local club, they know {s} well.",
    "I disagree a little, {s} is easier than it looks.",
    "Following, I want to know more about {s} too.",
    "Cheap tools are fine for {s} at the start.",
    "Watch a few videos on {s} before you begin.",
    "Thanks, this is exactly what I needed to read.",
)
_REPLY_OPENERS = (
    "Thanks for sharing this.",
    "Great question.",
    "I had the same problem.",
    "This helped me a lot.",
    "Good point about the details.",
    "I agree with the advice above.",
    "Interesting thread.",
    "Welcome to the forum.",
    "Nice write up.",
    "Very useful summary.",
)
_REPLY_CLOSERS = (
    "I will try it this weekend.",
    "Please post an update later.",
    "Share some photos when you can.",
    "Let us know how it goes.",
    "I learned something new today.",
    "Bookmarking this for later.",
    "My results were similar.",
    "Keep up the good work.",
    "Good luck with the project.",
    "See you at the next meetup.",
)
_KEYWORDS = (
    "rye flour", "copper wire", "spring frost", "blue tape", "linseed oil", "red filter", "night market",
    "river stones", "wool socks", "paper maps", "green tea", "old ladder", "cedar shavings", "steel wool",
    "brass hinges", "rain barrel", "cold frame", "lens hood", "dice tower", "spare tube", "star party",
    "oak barrel", "honey malt", "garden twine", "chalk line", "pine resin", "hand drill", "field notes",
    "clay pots", "glass jars", "silver birch", "black pepper", "maple syrup", "tent pegs", "head torch",
    "wax polish", "bench hook", "lemon zest", "spirit level", "hop pellets", "card table", "cork board",
    "tin foil", "wire brush", "sea salt", "felt pads", "kitchen scale", "rubber mallet",
)  # fmt: skip


def slug(category: str) -> str:
    """A category's URL slug: ``"Board Games"`` → ``"board-games"``."""
    return category.lower().replace(" ", "-")


# -- the forum ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    """One post: an opening post (``opening``) or a reply, in thread ``thread``."""

    id: int
    thread: int
    author: str
    body: str
    votes: int
    opening: bool = False


@dataclass(frozen=True)
class Thread:
    """A thread: its title, category (display name), starter and opening post's id."""

    id: int
    title: str
    category: str
    author: str
    opening: int


@dataclass(frozen=True)
class Forum:
    """The immutable initial forum every episode starts from, with lookups."""

    categories: tuple[str, ...]
    users: tuple[str, ...]
    threads: dict[int, Thread]
    posts: dict[int, Post]
    thread_posts: dict[int, tuple[int, ...]]  # thread id -> post ids in order, opening first
    unused_titles: tuple[tuple[str, str], ...]  # (category, title) pairs no thread has: for create tasks


@functools.cache
def base_forum() -> Forum:
    """The seeded initial forum (built once per process, on first use)."""
    rng = random.Random(SEED)
    pool = [(cat, t.format(s=s), s) for cat, subjects in _CATEGORIES for s in subjects for t in _TITLES]
    rng.shuffle(pool)
    chosen, unused = pool[:THREADS], pool[THREADS:]
    threads: dict[int, Thread] = {}
    posts: dict[int, Post] = {}
    thread_posts: dict[int, tuple[int, ...]] = {}
    mine = set(rng.sample(range(1, THREADS + 1), 20))  # threads started by you
    my_replies = set(rng.sample(sorted(set(range(1, THREADS + 1)) - mine), 26))  # threads you replied in
    next_post = 1
    for tid, (cat, title, subject) in enumerate(chosen, start=1):
        author = ME if tid in mine else rng.choice(_USERS)
        body = f"{rng.choice(_OPENINGS).format(s=subject)} {rng.choice(_DETAILS)}"
        ids = [next_post]
        posts[next_post] = Post(next_post, tid, author, body, rng.randint(0, 40), opening=True)
        next_post += 1
        n = rng.randint(0, MAX_REPLIES)
        if tid in my_replies:
            n = max(n, 2)
        others = [u for u in _USERS if u != author]
        repliers = [rng.choice(others[:8] if rng.random() < 0.5 else others) for _ in range(n)]
        if tid in my_replies:
            repliers[rng.randrange(n)] = ME
        for who in repliers:
            text = rng.choice(_REPLIES).format(s=subject)
            posts[next_post] = Post(next_post, tid, who, text[0].upper() + text[1:], rng.randint(0, 25))
            ids.append(next_post)
            next_post += 1
        threads[tid] = Thread(tid, title[0].upper() + title[1:], cat, author, ids[0])
        thread_posts[tid] = tuple(ids)
    return Forum(
        categories=tuple(c for c, _ in _CATEGORIES),
        users=_USERS,
        threads=threads,
        posts=posts,
        thread_posts=thread_posts,
        unused_titles=tuple((c, t[0].upper() + t[1:]) for c, t, _ in unused),
    )


WriteKind = Literal["thread", "reply", "upvote", "edit", "delete"]


@dataclass(frozen=True)
class Write:
    """One change the agent made: what kind, to which post (for ``thread``, its opening post) and thread."""

    kind: WriteKind
    post: int
    thread: int


@dataclass
class ForumState:
    """One episode's forum: its changes over :func:`base_forum` and every write in order."""

    user: str = ME
    new_threads: dict[int, Thread] = field(default_factory=dict)
    new_posts: dict[int, Post] = field(default_factory=dict)
    edits: dict[int, str] = field(default_factory=dict)
    upvoted: set[int] = field(default_factory=set)
    deleted: set[int] = field(default_factory=set)  # post ids; deleting an opening post deletes its thread
    writes: list[Write] = field(default_factory=list)

    def thread(self, tid: int) -> Thread | None:
        """A live thread by id."""
        t = self.new_threads.get(tid) or base_forum().threads.get(tid)
        return t if t is not None and t.opening not in self.deleted else None

    def threads(self) -> Iterator[Thread]:
        """Every live thread, oldest first."""
        for t in [*base_forum().threads.values(), *self.new_threads.values()]:
            if t.opening not in self.deleted:
                yield t

    def post(self, pid: int) -> Post | None:
        """A live post by id, as it reads now (edits and votes applied)."""
        p = self.new_posts.get(pid) or base_forum().posts.get(pid)
        if p is None or pid in self.deleted or self.thread(p.thread) is None:
            return None
        body = self.edits.get(pid, p.body)
        votes = p.votes + (pid in self.upvoted)
        return p if (body, votes) == (p.body, p.votes) else Post(p.id, p.thread, p.author, body, votes, p.opening)

    def posts(self, tid: int) -> list[Post]:
        """The live posts of thread ``tid``, opening post first."""
        ids = list(base_forum().thread_posts.get(tid, ()))
        ids += [pid for pid, p in self.new_posts.items() if p.thread == tid]
        return [p for p in map(self.post, ids) if p is not None]

    def next_post_id(self) -> int:
        return len(base_forum().posts) + len(self.new_posts) + 1

    def next_thread_id(self) -> int:
        return len(base_forum().threads) + len(self.new_threads) + 1


def normalize(text: str) -> str:
    """Text as compared by the judge: trimmed, without surrounding quotes or a final period, whitespace
    collapsed, case folded."""
    text = " ".join(str(text).split()).strip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text.rstrip(".").strip().casefold()


def _number(text: str) -> float | None:
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text)
    return float(numbers[0]) if len(numbers) == 1 else None


# -- pages -------------------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _nav() -> str:
    return (
        f'<a href="{ROOT}/">Home</a><a href="{ROOT}/new">New thread</a><a href="{ROOT}/u/{ME}">My profile</a>'
        f'<form action="{ROOT}/search" method=get role=search style="display:inline">'
        "<label for=q>Search titles</label> <input id=q name=q type=search> <button>Search</button></form>"
    )


def _page(title: str, body: str, status: int = 200) -> Response:
    return Response(page(f"{title} · Forum", body, site=SITE, nav=_nav()), status)


def _redirect(path: str) -> Response:
    return Response(location=f"{ROOT}{path}")


def _not_found(what: str) -> Response:
    return _page("Not found", f"<h1>Not found</h1><p>{_e(what)}</p>", 404)


def _thread_items(state: ForumState, threads: list[Thread], *, show_category: bool = True) -> str:
    items = []
    for t in threads:
        posts = state.posts(t.id)
        where = f" in {_e(t.category)}" if show_category else ""
        votes = posts[0].votes if posts else 0
        items.append(
            f'<li><a href="{ROOT}/t/{t.id}">{_e(t.title)}</a> '
            f"<span>by {_e(t.author)}{where} · {len(posts) - 1} replies · {votes} votes</span></li>"
        )
    return f"<ul>{''.join(items)}</ul>" if items else "<p>No threads.</p>"


def _paged(state: ForumState, threads: list[Thread], request: Request, base: str, params: dict[str, str]) -> str:
    pages = max(1, -(-len(threads) // PER_PAGE))
    try:
        n = min(max(1, int(request.arg("page", "1"))), pages)
    except ValueError:
        n = 1
    body = _thread_items(state, threads[(n - 1) * PER_PAGE : n * PER_PAGE])
    links = [f"<p>Page {n} of {pages}</p>"]
    if n > 1:
        links.append(f'<a href="{ROOT}{base}?{urlencode({**params, "page": n - 1})}">Previous page</a> ')
    if n < pages:
        links.append(f'<a href="{ROOT}{base}?{urlencode({**params, "page": n + 1})}">Next page</a>')
    return body + "".join(links)


def _home(state: ForumState) -> Response:
    cats = "".join(f'<li><a href="{ROOT}/c/{slug(c)}">{_e(c)}</a></li>' for c in base_forum().categories)
    recent = sorted(state.threads(), key=lambda t: -t.id)[:PER_PAGE]
    body = (
        f"<h1>Forum</h1><p>Signed in as {_e(state.user)}</p><h2>Categories</h2><ul>{cats}</ul>"
        f"<h2>Recent threads</h2>{_thread_items(state, recent)}"
    )
    return _page("Home", body)


def _category(state: ForumState, request: Request, name: str) -> Response:
    cat = next((c for c in base_forum().categories if slug(c) == name), None)
    if cat is None:
        return _not_found(f"no category {name!r}")
    threads = sorted((t for t in state.threads() if t.category == cat), key=lambda t: -t.id)
    return _page(cat, f"<h1>{_e(cat)}</h1>{_paged(state, threads, request, f'/c/{name}', {})}")


def _search(state: ForumState, request: Request) -> Response:
    q = request.arg("q").strip()
    hits = sorted((t for t in state.threads() if normalize(q) in normalize(t.title)), key=lambda t: -t.id)
    head = f"<h1>Search results for {_e(q)}</h1><p>{len(hits)} threads found</p>"
    return _page(f"Search: {q}", head + _paged(state, hits, request, "/search", {"q": q}))


def _user(state: ForumState, request: Request, name: str) -> Response:
    if name != ME and name not in base_forum().users:
        return _not_found(f"no member {name!r}")
    threads = sorted((t for t in state.threads() if t.author == name), key=lambda t: -t.id)
    body = f"<h1>{_e(name)}</h1><h2>Threads started by {_e(name)}</h2>"
    return _page(name, body + _paged(state, threads, request, f"/u/{name}", {}))


def _article(state: ForumState, p: Post) -> str:
    label = f"{'Opening post' if p.opening else 'Reply'} {p.id} by {p.author}"
    if p.id in state.upvoted:
        vote = f"<button disabled>Upvoted post {p.id}</button>"
    else:
        vote = f'<form method=post action="{ROOT}/p/{p.id}/upvote"><button>Upvote post {p.id}</button></form>'
    own = ""
    if p.author == state.user:
        delete = "Delete thread" if p.opening else f"Delete post {p.id}"
        own = (
            f'<a href="{ROOT}/p/{p.id}/edit">Edit post {p.id}</a>'
            f'<form method=post action="{ROOT}/p/{p.id}/delete"><button>{delete}</button></form>'
        )
    return (
        f'<article class=card aria-label="{_e(label)}"><p><a href="{ROOT}/u/{_e(p.author)}">{_e(p.author)}</a> wrote:'
        f"</p><p>{_e(p.body)}</p><p>{p.votes} votes</p>{vote}{own}</article>"
    )


def _thread(state: ForumState, tid: int, error: str = "", draft: str = "") -> Response:
    t = state.thread(tid)
    if t is None:
        return _not_found(f"no thread {tid} (it may have been deleted)")
    posts = state.posts(tid)
    n = len(posts) - 1
    replies = "".join(_article(state, p) for p in posts[1:]) or "<p>No replies yet.</p>"
    err = f"<p role=alert>{_e(error)}</p>" if error else ""
    body = (
        f"<h1>{_e(t.title)}</h1><p>Started by {_e(t.author)} in {_e(t.category)} · {n} {'reply' if n == 1 else 'replies'}"
        f'</p><p><a href="{ROOT}/c/{slug(t.category)}">Back to {_e(t.category)}</a></p>{_article(state, posts[0])}'
        f"<h2>Replies</h2>{replies}<h2>Post a reply</h2>{err}"
        f'<form method=post action="{ROOT}/t/{tid}/reply"><label for=reply>Reply</label><br>'
        f"<textarea id=reply name=body rows=3 cols=60>{_e(draft)}</textarea><br><button>Post reply</button></form>"
    )
    return _page(t.title, body)


def _new_form(category: str = "", title: str = "", body: str = "", error: str = "") -> Response:
    options = '<option value="">Choose a category</option>' + "".join(
        f'<option value="{slug(c)}"{" selected" if slug(c) == category else ""}>{_e(c)}</option>'
        for c in base_forum().categories
    )
    err = f"<p role=alert>{_e(error)}</p>" if error else ""
    form = (
        f'<h1>New thread</h1>{err}<form method=post action="{ROOT}/new">'
        f"<p><label for=category>Category</label> <select id=category name=category>{options}</select></p>"
        f'<p><label for=title>Title</label> <input id=title name=title value="{_e(title)}"></p>'
        f"<p><label for=body>Body</label><br><textarea id=body name=body rows=5 cols=60>{_e(body)}</textarea></p>"
        "<button>Create thread</button></form>"
    )
    return _page("New thread", form, 400 if error else 200)


def _edit_form(state: ForumState, p: Post, text: str | None = None, error: str = "") -> Response:
    t = state.thread(p.thread)
    err = f"<p role=alert>{_e(error)}</p>" if error else ""
    body = (
        f"<h1>Edit post {p.id}</h1><p>In thread: {_e(t.title if t else '')}</p>{err}"
        f'<form method=post action="{ROOT}/p/{p.id}/edit"><label for=text>Post text</label><br>'
        f"<textarea id=text name=body rows=5 cols=60>{_e(p.body if text is None else text)}</textarea><br>"
        f'<button>Save changes</button></form><p><a href="{ROOT}/t/{p.thread}">Cancel</a></p>'
    )
    return _page(f"Edit post {p.id}", body, 400 if error else 200)


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _route(request: Request, state: ForumState) -> Response:
    parts = [p for p in request.path.split("/") if p]
    post = request.method == "POST"
    if not parts:
        return _home(state)
    head, rest = parts[0], parts[1:]
    if head == "c" and len(rest) == 1:
        return _category(state, request, rest[0])
    if head == "search" and not rest:
        return _search(state, request)
    if head == "u" and len(rest) == 1:
        return _user(state, request, rest[0])
    if head == "new" and not rest:
        if not post:
            return _new_form()
        return _create(state, request)
    if head == "t" and rest and (tid := _int(rest[0])) is not None:
        if len(rest) == 1:
            return _thread(state, tid)
        if rest[1:] == ["reply"] and post:
            return _reply(state, request, tid)
    if head == "p" and len(rest) == 2 and (pid := _int(rest[0])) is not None:
        p = state.post(pid)
        if p is None:
            return _not_found(f"no post {pid}")
        if rest[1] == "upvote" and post:
            if pid not in state.upvoted:
                state.upvoted.add(pid)
                state.writes.append(Write("upvote", pid, p.thread))
            return _redirect(f"/t/{p.thread}")
        if p.author != state.user and rest[1] in ("edit", "delete"):
            return _page("Forbidden", "<h1>Forbidden</h1><p>You can only change your own posts.</p>", 403)
        if rest[1] == "edit":
            return _edit(state, request, p) if post else _edit_form(state, p)
        if rest[1] == "delete" and post:
            state.deleted.add(pid)
            state.writes.append(Write("delete", pid, p.thread))
            return _redirect("/" if p.opening else f"/t/{p.thread}")
    return _not_found(f"no page {request.method} {request.path}")


def _create(state: ForumState, request: Request) -> Response:
    category, title, body = request.arg("category"), request.arg("title").strip(), request.arg("body").strip()
    cat = next((c for c in base_forum().categories if slug(c) == category or c == category), None)
    if cat is None or not title or not body:
        missing = [n for n, v in (("a category", cat), ("a title", title), ("a body", body)) if not v]
        return _new_form(category, title, body, f"Please give {', '.join(missing)}.")
    tid, pid = state.next_thread_id(), state.next_post_id()
    state.new_posts[pid] = Post(pid, tid, state.user, body, 0, opening=True)
    state.new_threads[tid] = Thread(tid, title, cat, state.user, pid)
    state.writes.append(Write("thread", pid, tid))
    return _redirect(f"/t/{tid}")


def _reply(state: ForumState, request: Request, tid: int) -> Response:
    if state.thread(tid) is None:
        return _not_found(f"no thread {tid}")
    body = request.arg("body").strip()
    if not body:
        return _thread(state, tid, "A reply cannot be empty.")
    pid = state.next_post_id()
    state.new_posts[pid] = Post(pid, tid, state.user, body, 0)
    state.writes.append(Write("reply", pid, tid))
    return _redirect(f"/t/{tid}")


def _edit(state: ForumState, request: Request, p: Post) -> Response:
    body = request.arg("body").strip()
    if not body:
        return _edit_form(state, p, body, "A post cannot be empty.")
    state.edits[p.id] = body
    state.writes.append(Write("edit", p.id, p.thread))
    return _redirect(f"/t/{p.thread}")


# -- tasks -------------------------------------------------------------------------------------


def _q(text: str) -> str:
    return f'"{text}"'


@functools.cache
def _suite() -> tuple[Task, ...]:
    forum = base_forum()
    rng = random.Random(SEED + 1)
    tids = sorted(forum.threads)
    test_threads = set(rng.sample(tids, round(TEST_FRACTION * len(tids))))
    texts = [f"{a} {b}" for a in _REPLY_OPENERS for b in _REPLY_CLOSERS]
    rng.shuffle(texts)
    fresh = iter(texts)  # every reply and edit text is used by one task only
    goals: list[tuple[int | None, str, dict[str, Any]]] = []  # (thread or None, prompt, goal)

    for i, tid in enumerate(tids):
        t = forum.threads[tid]
        posts = [forum.posts[p] for p in forum.thread_posts[tid]]
        ask = ("replies", "starter", "category")[i % 3]
        truth = {"replies": str(len(posts) - 1), "starter": t.author, "category": t.category}[ask]
        prompt = {
            "replies": f"How many replies does the thread {_q(t.title)} have? Answer with the number.",
            "starter": f"Who started the thread {_q(t.title)}? Answer with the username.",
            "category": f"Which category is the thread {_q(t.title)} in? Answer with the category name.",
        }[ask]
        goals.append((tid, prompt, {"family": "question", "ask": ask, "answer": truth}))
        mine = [p for p in posts[1:] if p.author == ME]
        if t.author == ME:
            if i % 2:
                text = next(fresh)
                prompt = f"Edit the opening post of your thread {_q(t.title)} so that it reads exactly: {_q(text)}"
                goals.append((tid, prompt, {"family": "edit", "which": "opening", "post": t.opening, "text": text}))
            else:
                prompt = f"Delete your thread {_q(t.title)}."
                goals.append((tid, prompt, {"family": "delete", "which": "opening", "post": t.opening}))
        elif mine:
            if i % 3:
                text = next(fresh)
                prompt = f"Edit your reply in the thread {_q(t.title)} so that it reads exactly: {_q(text)}"
                goals.append((tid, prompt, {"family": "edit", "which": "reply", "post": mine[0].id, "text": text}))
            else:
                prompt = f"Delete your reply in the thread {_q(t.title)}."
                goals.append((tid, prompt, {"family": "delete", "which": "reply", "post": mine[0].id}))
        elif i % 3 == 0:
            text = next(fresh)
            prompt = f"Reply to the thread {_q(t.title)} with exactly this text: {_q(text)}"
            goals.append((tid, prompt, {"family": "reply", "text": text}))
        elif i % 3 == 1:
            others = [p for p in posts[1:] if p.author != ME]
            if not others or i % 4 == 1:
                prompt = f"Upvote the opening post of the thread {_q(t.title)}."
                goals.append((tid, prompt, {"family": "upvote", "which": "opening", "post": t.opening, "user": ""}))
            else:
                user = rng.choice(others).author
                by = [p for p in others if p.author == user]
                which = "first" if i % 2 else "last"
                target = by[0] if which == "first" else by[-1]
                words = "first" if which == "first" else "most recent"
                prompt = f"Upvote the {words} reply by {user} in the thread {_q(t.title)}."
                goal = {"family": "upvote", "which": which, "post": target.id, "user": user}
                goals.append((tid, prompt, goal))

    keywords = list(_KEYWORDS)
    rng.shuffle(keywords)
    for n, (cat, title) in enumerate(forum.unused_titles[: len(keywords)]):
        prompt = (
            f"Create a new thread in the {_q(cat)} category titled {_q(title)} "
            f"whose body contains the words {_q(keywords[n])}."
        )
        goals.append((None, prompt, {"family": "create", "category": cat, "title": title, "body": keywords[n]}))
    held_out_titles = {title for n, (_, title) in enumerate(forum.unused_titles[: len(keywords)]) if n % 5 == 0}

    tasks = []
    for n, (thread, prompt, goal) in enumerate(goals):
        if thread is None:  # a create task: every fifth is held out (its title and body are its own)
            split = "test" if goal["title"] in held_out_titles else "train"
        else:
            goal = {**goal, "thread": thread, "title": forum.threads[thread].title}
            split = "test" if thread in test_threads else "train"
        payload = {"kind": "site", "site": SITE, "start": "/", "goal": goal}
        tasks.append(Task(id=f"{SITE}/{n}", suite=SITE, prompt=prompt, split=split, payload=payload))
    return tuple(tasks)


def forum_suite() -> list[Task]:
    """Every forum task (see the module docstring), in a fixed order.

    Example:
        >>> len({t.payload["goal"]["family"] for t in forum_suite()})
        6
    """
    return list(_suite())


# -- judge -------------------------------------------------------------------------------------


def _judge(goal: dict[str, Any], state: ForumState, answer: str | None, stopped: bool) -> Verdict:
    family = goal["family"]
    if family == "question":
        if state.writes:
            return Verdict(
                0.0, False, True, f"a question needs no changes, but the agent made a {state.writes[0].kind}"
            )
        if answer is None:
            return Verdict(0.0, False, stopped, "stopped without an answer" if stopped else "")
        truth = str(goal["answer"])
        right = normalize(answer) == normalize(truth)
        if goal["ask"] == "replies" and not right:
            right = _number(answer) == float(truth)
        detail = "" if right else f"answered {answer!r}, the answer is {truth!r}"
        return Verdict(float(right), right, True, detail)
    if not state.writes:
        if answer is not None or stopped:
            return Verdict(0.0, False, True, "ended before making the change")
        return Verdict(0.0, False, False)
    write, extra = state.writes[0], state.writes[1:]
    reward, detail = _write_reward(goal, state, write)
    if extra and reward:
        reward, detail = 0.0, f"made {len(state.writes)} changes where one was asked"
    return Verdict(reward, reward == 1.0, True, detail)


def _write_reward(goal: dict[str, Any], state: ForumState, w: Write) -> tuple[float, str]:
    family = goal["family"]
    want = {"create": "thread", "reply": "reply", "upvote": "upvote", "edit": "edit", "delete": "delete"}[family]
    if w.kind != want:
        return 0.0, f"the task asks for a {want}, but the agent made a {w.kind}"
    if family == "create":
        t = state.new_threads[w.thread]
        body = state.new_posts[w.post].body
        checks = {
            "category": t.category == goal["category"],
            "title": normalize(t.title) == normalize(goal["title"]),
            "body": normalize(goal["body"]) in normalize(body),
        }
        wrong = [k for k, ok in checks.items() if not ok]
        detail = f"wrong {', '.join(wrong)}: got {t.category!r}, {t.title!r}, {body!r}" if wrong else ""
        return FIELD_CREDIT * sum(checks.values()) if wrong else 1.0, detail
    if w.thread != goal["thread"]:
        return 0.0, f"the {w.kind} went to thread {w.thread}, not thread {goal['thread']} ({goal['title']!r})"
    if family == "reply":
        body = state.new_posts[w.post].body
        if normalize(body) != normalize(goal["text"]):
            return 0.0, f"replied {body!r}, the task asks for {goal['text']!r}"
        return 1.0, ""
    if w.post != goal["post"]:
        return 0.0, f"the {w.kind} went to post {w.post}, not post {goal['post']}"
    if family == "edit":
        body = state.edits[w.post]
        if normalize(body) != normalize(goal["text"]):
            return 0.0, f"the post now reads {body!r}, the task asks for {goal['text']!r}"
    return 1.0, ""


# -- the site ----------------------------------------------------------------------------------


class ForumSite:
    """The forum site (see the module docstring); one instance serves every episode."""

    name = SITE

    def new_state(self, task: Task) -> ForumState:
        """A fresh episode state: the base forum, unchanged, with ``you`` signed in."""
        del task  # every task starts from the same forum
        return ForumState()

    def handle(self, request: Request, state: ForumState) -> Response:
        """Render a page or apply a form (see the module docstring for the routes)."""
        return _route(request, state)

    def judge(self, task: Task, state: ForumState, answer: str | None, stopped: bool) -> Verdict:
        """Score the episode's state against the task's goal (see the module docstring)."""
        return _judge(task.payload["goal"], state, answer, stopped)

    def tasks(self) -> list[Task]:
        """The forum suite (:func:`forum_suite`)."""
        return forum_suite()

    def reference_action(self, task: Task, observation: Observation) -> Action:
        """The next action of a scripted agent that reads the page and acts through its refs.

        It searches the thread's title, opens it from the results and then does what the goal
        asks there (reads the answer off the page; types and posts a reply; clicks the post's
        upvote, edit or delete control and saves). For ``create`` it opens New thread, fills
        the form and submits it. Stateless: it decides from the URL and the page alone.
        """
        from environments.web.policies import elements, find

        goal = task.payload["goal"]
        path = urlsplit(str(observation.data.get("url", ""))).path
        path = path[len(ROOT) :] if path.startswith(ROOT) else path
        path = path.rstrip("/") or "/"

        def click(role: str, name: str) -> Action | None:
            ref = find(observation, role, name)
            return make_action("click", ref) if ref else None

        def value(ref: str) -> str:
            rest = next((r for x, _, _, r in elements(observation) if x == ref), "")
            m = re.search(r'value=("(?:[^"\\]|\\.)*")', rest)
            return str(json.loads(m.group(1))) if m else ""

        def fill(label: str, text: str) -> Action | None:
            ref = find(observation, "textbox", label)
            if ref is None:
                return None
            return make_action("type", ref, text) if normalize(value(ref)) != normalize(text) else None

        if goal["family"] == "create":
            if path != "/new":
                return click("link", "New thread") or make_action("goto", f"{ROOT}/new")
            box = find(observation, "combobox", "Category")
            if box is not None and not _selected(observation, box, goal["category"]):
                return make_action("select", box, goal["category"])
            action = fill("Title", goal["title"]) or fill("Body", f"Thinking about {goal['body']} this week.")
            return action or click("button", "Create thread") or make_action("stop")

        title = str(goal["title"])
        heading = find(observation, "heading", title)
        if path.startswith("/p/") and path.endswith("/edit") and goal["family"] == "edit":
            return fill("Post text", goal["text"]) or click("button", "Save changes") or make_action("stop")
        if not (path.startswith("/t/") and heading is not None):
            if path == "/search" and find(observation, "link", title):
                return click("link", title) or make_action("stop")
            box = find(observation, "searchbox", "Search titles")
            return make_action("type", box, title, submit=True) if box else make_action("goto", f"{ROOT}/")
        # on the thread's page
        family = goal["family"]
        articles = [(name, ref) for ref, _, name, _ in elements(observation, "article")]
        if family == "question":
            m = re.search(r"^\s*(?:\[\w+\] )?Started by (.+) in (.+) · (\d+) repl(?:y|ies)\s*$", observation.text, re.M)
            if m is None:
                return make_action("stop")
            return make_action(
                "answer", {"starter": m.group(1), "category": m.group(2), "replies": m.group(3)}[goal["ask"]]
            )
        if family == "reply":
            return fill("Reply", goal["text"]) or click("button", "Post reply") or make_action("stop")
        mine_only = family in ("edit", "delete")
        user = ME if mine_only else str(goal.get("user", ""))
        pattern = r"Opening post (\d+) by (\S+)" if goal["which"] == "opening" else r"Reply (\d+) by (\S+)"
        ids = [int(m.group(1)) for name, _ in articles if (m := re.fullmatch(pattern, name))]
        if goal["which"] != "opening":
            ids = [int(m.group(1)) for name, _ in articles if (m := re.fullmatch(pattern, name)) and m.group(2) == user]
        if not ids:
            return make_action("stop")
        pid = ids[-1] if goal["which"] == "last" else ids[0]
        if family == "upvote":
            return click("button", f"Upvote post {pid}") or make_action("stop")
        if family == "edit":
            return click("link", f"Edit post {pid}") or make_action("stop")
        return click("button", "Delete thread" if goal["which"] == "opening" else f"Delete post {pid}") or make_action(
            "stop"
        )


def _selected(observation: Observation, ref: str, label: str) -> bool:
    """Whether combobox ``ref`` shows ``label`` chosen (its value, or an option under it marked selected)."""
    lines = observation.text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith(f"[{ref}]"):
            if f"value={json.dumps(label, ensure_ascii=False)}" in line or line.rstrip().endswith(f" {label}"):
                return True
            depth = len(line) - len(line.lstrip())
            for sub in lines[i + 1 :]:
                if len(sub) - len(sub.lstrip()) <= depth:
                    break
                if f'option "{label}"' in sub and "selected" in sub.split(f'"{label}"', 1)[1]:
                    return True
            return False
    return False
