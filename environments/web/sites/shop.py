"""A WebShop-style store: search a seeded catalog, choose options, add to cart, check out.

The shop (served under ``/shop``) sells a catalog generated in code from a fixed seed
(:func:`catalog`): 350 products in seven categories (shoes, shirts, jackets, pants, bags,
headphones, watches), each with a brand, a product type (``hiking boot``), a price, a few
attributes (``waterproof``, ``slim fit``) and purchasable options (``Color``, ``Size``,
``Band size``; not every product has every option, a few have none). Pages:

- ``/`` and ``/search?q=&category=&brand=&max_price=&attr=&page=``: keyword search over
  title, type, category, brand and attributes, with filters, 10 results a page;
- ``/product/<id>``: description, attributes, price, one ``<select>`` per option and
  "Add to cart" (POST ``/cart/add``; every option must be chosen);
- ``/cart``: the lines, a "Remove" button each (POST ``/cart/remove``), "Proceed to checkout";
- ``/checkout``: full name and shipping address, "Place order" (POST) → ``/order/<n>``.

Every POST answers with a redirect (or the same page with an error). The state of one
episode is a :class:`ShopState` (cart, orders, the last checkout form); nothing global changes.

Tasks (:func:`shop_suite`, ids ``shop/<n>``) are WebShop-style instructions built from one
target product: ``I need a waterproof hiking boot in brown, size 9, price lower than 80.00
dollars`` (some add ``Ship it to <name>, <address>.``). The payload is
``{"kind": "site", "site": "shop", "start": "/", "goal": {...}}`` where ``goal`` has
``category``, ``type``, ``attributes`` (list), ``options`` (option name → value),
``max_price``, ``target`` (the product id the goal was made from), and ``name`` /
``address`` (empty when the goal does not ask for them). Each goal is satisfiable by its
target; other products may satisfy it too. About a fifth of the tasks are held out
(``split="test"``), and their targets are the target of no train task.

Reward (:meth:`ShopSite.judge`), read from the first placed order, WebShop's formula::

    reward = r_type * (attrs matched + options matched + [price <= max_price] + shipping fields matched)
                    / (len(attrs)    + len(options)    + 1                    + shipping fields asked)

where an attribute matches when the bought product has it, an option when the order
line's chosen value equals the goal's (case-insensitive), a shipping field (name, address)
when it equals the goal's ignoring case, punctuation and spacing. ``r_type`` is 1 when the
product's type is the goal's, 0.5 when only its category is, 0.1 otherwise. An order with
several lines is scored on its best line and halved (the task asks for one product).
success = reward == 1. The episode is done once an order is placed, or when the agent stops
(reward 0 without an order).

Example:
    >>> shop = ShopSite()
    >>> task = shop.tasks()[0]
    >>> shop.judge(task, shop.new_state(task), None, stopped=True).reward
    0.0
"""

from __future__ import annotations

import contextlib
import functools
import html
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from autodidact.types import Action, Observation, Task
from environments.web.actions import make_action
from environments.web.observe import elements, find
from environments.web.sites.base import Request, Response, Verdict, page

SITE = "shop"
ROOT = f"/{SITE}"
PER_PAGE = 10
SEED = 1234
PRODUCTS_PER_CATEGORY = 50
TEST_FRACTION = 0.2
TYPE_MISMATCH = 0.5  # r_type when the category matches but the product type does not
CATEGORY_MISMATCH = 0.1  # r_type when not even the category matches
EXTRA_LINES = 0.5  # factor for an order holding more than one line


# -- catalog ---------------------------------------------------------------------------------


def _csv(text: str) -> tuple[str, ...]:
    return tuple(text.split(", "))


@dataclass(frozen=True)
class _Category:
    name: str
    types: tuple[str, ...]
    attributes: tuple[str, ...]
    sizes: tuple[str, ...]  # values of the size option; empty: no size option
    size_label: str
    price: tuple[int, int]


_CATEGORIES = (
    _Category(
        "shoes",
        ("running shoe", "hiking boot", "sneaker", "sandal", "loafer"),
        _csv(
            "waterproof, breathable, leather, mesh upper, slip resistant, "
            "lightweight, memory foam, arch support, vegan, wide fit"
        ),
        ("6", "7", "8", "9", "10", "11", "12", "13"),
        "Size",
        (25, 160),
    ),
    _Category(
        "shirts",
        ("t-shirt", "polo shirt", "button-down shirt", "henley", "flannel shirt"),
        _csv(
            "cotton, linen, slim fit, relaxed fit, wrinkle free, "
            "moisture wicking, long sleeve, short sleeve, organic, machine washable"
        ),
        ("XS", "S", "M", "L", "XL", "XXL"),
        "Size",
        (12, 70),
    ),
    _Category(
        "jackets",
        ("rain jacket", "puffer jacket", "denim jacket", "fleece jacket", "softshell jacket"),
        _csv(
            "waterproof, windproof, insulated, hooded, packable, "
            "breathable, down fill, recycled polyester, zip pockets, water resistant"
        ),
        ("XS", "S", "M", "L", "XL", "XXL"),
        "Size",
        (40, 250),
    ),
    _Category(
        "pants",
        ("jeans", "chinos", "joggers", "cargo pants", "hiking pants"),
        _csv(
            "stretch, slim fit, relaxed fit, cotton, quick dry, "
            "zip pockets, elastic waist, water resistant, tapered, high rise"
        ),
        ("28", "30", "32", "34", "36", "38"),
        "Size",
        (20, 110),
    ),
    _Category(
        "bags",
        ("backpack", "tote bag", "messenger bag", "duffel bag", "sling bag"),
        _csv(
            "waterproof, laptop sleeve, leather, canvas, anti theft, "
            "padded straps, lightweight, large capacity, usb charging port, vegan"
        ),
        (),
        "",
        (18, 180),
    ),
    _Category(
        "headphones",
        ("over-ear headphones", "wireless earbuds", "on-ear headphones", "sports earbuds", "gaming headset"),
        _csv(
            "noise cancelling, bluetooth, wired, long battery life, water resistant, "
            "built-in microphone, foldable, fast charging, bass boost, lightweight"
        ),
        (),
        "",
        (15, 350),
    ),
    _Category(
        "watches",
        ("smartwatch", "analog watch", "dive watch", "fitness tracker", "chronograph"),
        _csv(
            "water resistant, stainless steel, leather strap, heart rate monitor, gps, "
            "sapphire glass, solar powered, sleep tracking, lightweight, silicone band"
        ),
        ("S", "M", "L"),
        "Band size",
        (30, 400),
    ),
)
_PLURAL_TYPES = frozenset({"over-ear headphones", "wireless earbuds", "on-ear headphones", "sports earbuds"})
_PLURAL_TYPES |= {"jeans", "chinos", "joggers", "cargo pants", "hiking pants"}
_COLORS = ("Black", "White", "Gray", "Navy", "Blue", "Red", "Green", "Brown", "Beige", "Olive", "Pink", "Purple")
_BRANDS = _csv("Northpeak, Solace, Urbanfield, Kestrel, Mariner, Altura, Fernwood, Vantage, Corvo, Lumen, Tidewell")
_BRANDS += ("Brightline", "Oakhaven", "Zephyr")
_SERIES = _csv("Ridge, Summit, Trail, Metro, Harbor, Aero, Nova, Pulse, Drift, Echo, Orbit, Canyon, Glide, Atlas")
_SERIES += ("Vista", "Crest")


@dataclass(frozen=True)
class Product:
    """One catalog item. ``options`` maps an option's label (``Color``) to its values, in order."""

    id: int
    title: str
    category: str
    type: str
    brand: str
    price: float
    attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]

    def option_values(self, name: str) -> tuple[str, ...]:
        """The values of option ``name`` (case-insensitive), or () when the product has no such option."""
        for label, values in self.options:
            if label.casefold() == name.casefold():
                return values
        return ()


@functools.cache
def catalog() -> tuple[Product, ...]:
    """The shop's products (ids 1..N), the same on every run and machine."""
    rng = random.Random(SEED)
    products: list[Product] = []
    titles: set[str] = set()
    for cat in _CATEGORIES:
        for _ in range(PRODUCTS_PER_CATEGORY):
            kind = rng.choice(cat.types)
            brand = rng.choice(_BRANDS)
            title = ""
            while not title or title in titles:
                title = f"{brand} {rng.choice(_SERIES)} {rng.randint(100, 999)} {kind.title()}"
            titles.add(title)
            options: list[tuple[str, tuple[str, ...]]] = []
            if rng.random() < 0.9:
                options.append(("Color", tuple(sorted(rng.sample(_COLORS, rng.randint(2, 5)), key=_COLORS.index))))
            if cat.sizes and rng.random() < 0.9:
                start = rng.randint(0, len(cat.sizes) - 3)
                options.append((cat.size_label, cat.sizes[start : start + rng.randint(3, len(cat.sizes) - start)]))
            lo, hi = cat.price
            products.append(
                Product(
                    id=len(products) + 1,
                    title=title,
                    category=cat.name,
                    type=kind,
                    brand=brand,
                    price=rng.randint(lo, hi) + 0.99,
                    attributes=tuple(sorted(rng.sample(cat.attributes, rng.randint(3, 4)))),
                    options=tuple(options),
                )
            )
    return tuple(products)


def product(product_id: int) -> Product | None:
    """The product with ``product_id``, or None."""
    items = catalog()
    return items[product_id - 1] if 1 <= product_id <= len(items) else None


_WORD = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> set[str]:
    # "boots" finds "boot": a crude stem (drop one trailing s) on both sides of the match
    return {
        w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in _WORD.findall(text.lower())
    }


@functools.cache
def _index() -> tuple[frozenset[str], ...]:
    return tuple(frozenset(_tokens(" ".join((p.title, p.type, p.category, p.brand, *p.attributes)))) for p in catalog())


def search(
    query: str, *, category: str = "", brand: str = "", max_price: float | None = None, attributes: tuple[str, ...] = ()
) -> list[Product]:
    """Products matching the filters, ranked by how many query words they contain (all of them when no query).

    Example:
        >>> search("hiking boot", max_price=60.0)[0].type
        'hiking boot'
    """
    words = _tokens(query)
    scored: list[tuple[int, int, Product]] = []
    for p, index in zip(catalog(), _index(), strict=True):
        if (category and p.category != category) or (brand and p.brand != brand):
            continue
        if (max_price is not None and p.price > max_price) or not set(attributes) <= set(p.attributes):
            continue
        score = len(words & index)
        if words and score == 0:
            continue
        scored.append((-score, p.id, p))
    return [p for *_, p in sorted(scored, key=lambda s: (s[0], s[1]))]


# -- per-episode state -----------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """A cart or order line: a product, its chosen options (label → value) and a quantity."""

    product_id: int
    options: tuple[tuple[str, str], ...]
    quantity: int = 1


@dataclass(frozen=True)
class Order:
    """A placed order."""

    number: int
    lines: tuple[Line, ...]
    name: str
    address: str


@dataclass
class ShopState:
    """One episode's shop: the cart, the orders placed, and the checkout form as last submitted."""

    cart: list[Line] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    name: str = ""
    address: str = ""


# -- pages -----------------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _link(path: str, params: dict[str, Any] | None = None) -> str:
    return _e(ROOT + path + (("?" + urlencode(params, doseq=True)) if params else ""))


def _page(state: ShopState, title: str, body: str, status: int = 200) -> Response:
    count = sum(line.quantity for line in state.cart)
    nav = f'<a href="{_link("/")}">Home</a><a href="{_link("/cart")}">Cart ({count})</a>'
    return Response(page(title, body, site=SITE, nav=nav), status)


def _select(name: str, label: str, choices: list[tuple[str, str]], chosen: str) -> str:
    opts = "".join(
        f'<option value="{_e(v)}"{" selected" if v == chosen else ""}>{_e(text)}</option>' for v, text in choices
    )
    return f'<label for="{name}">{_e(label)}</label> <select id="{name}" name="{name}">{opts}</select> '


def _price(value: float) -> str:
    return f"${value:,.2f}"


def _parse_price(text: str) -> float | None:
    try:
        value = float(text.strip().lstrip("$").replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _search_page(request: Request, state: ShopState, home: bool) -> Response:
    q = request.arg("q").strip()
    category = request.arg("category")
    category = category if any(c.name == category for c in _CATEGORIES) else ""
    brand = request.arg("brand")
    brand = brand if brand in _BRANDS else ""
    max_price_text = request.arg("max_price").strip()
    max_price = _parse_price(max_price_text) if max_price_text else None
    pool = next((c.attributes for c in _CATEGORIES if c.name == category), ())
    attrs = tuple(a for a in request.args("attr") if a in pool)
    form = (
        f'<form method="get" action="{_link("/search")}">'
        f'<label for="q">Search</label> <input id="q" name="q" type="text" value="{_e(q)}"> '
        '<button type="submit">Search</button><p>'
        + _select("category", "Category", [("", "Any")] + [(c.name, c.name.title()) for c in _CATEGORIES], category)
        + _select("brand", "Brand", [("", "Any")] + [(b, b) for b in sorted(_BRANDS)], brand)
        + f'<label for="max_price">Max price</label> <input id="max_price" name="max_price" type="text" '
        f'size="8" value="{_e(max_price_text)}"></p>'
    )
    if pool:
        boxes = "".join(
            f'<input type="checkbox" id="attr-{i}" name="attr" value="{_e(a)}"{" checked" if a in attrs else ""}>'
            f'<label for="attr-{i}">{_e(a)}</label> '
            for i, a in enumerate(pool)
        )
        form += f"<fieldset><legend>Features</legend>{boxes}</fieldset>"
    form += '<button type="submit">Apply filters</button></form>'
    if home and not request.query:
        links = "".join(
            f'<li><a href="{_link("/search", {"category": c.name})}">{_e(c.name.title())}</a></li>' for c in _CATEGORIES
        )
        body = f"<h1>Autodidact Shop</h1>{form}<h2>Browse by category</h2><ul>{links}</ul>"
        return _page(state, "Autodidact Shop", body)
    if max_price_text and max_price is None:
        return _page(state, "Search", f'<h1>Search results</h1>{form}<p role="alert">Max price must be a number.</p>')
    found = search(q, category=category, brand=brand, max_price=max_price, attributes=attrs)
    pages = max(1, math.ceil(len(found) / PER_PAGE))
    try:
        n = min(max(1, int(request.arg("page", "1"))), pages)
    except ValueError:
        n = 1
    items = "".join(
        f'<li class="card"><a href="{_link(f"/product/{p.id}")}">{_e(p.title)}</a><br>'
        f"{_price(p.price)} · {_e(', '.join(p.attributes))}</li>"
        for p in found[(n - 1) * PER_PAGE : n * PER_PAGE]
    )
    params: dict[str, Any] = {"q": q, "category": category, "brand": brand, "max_price": max_price_text, "attr": attrs}
    params = {k: v for k, v in params.items() if v}
    nav = []
    if n > 1:
        nav.append(f'<a href="{_link("/search", {**params, "page": n - 1})}">Previous page</a>')
    if n < pages:
        nav.append(f'<a href="{_link("/search", {**params, "page": n + 1})}">Next page</a>')
    summary = f"<p>{len(found)} results, page {n} of {pages}</p>" if found else "<p>No products match.</p>"
    body = f"<h1>Search results</h1>{form}{summary}<ul>{items}</ul><p>{' '.join(nav)}</p>"
    return _page(state, f"Search: {q}" if q else "Search", body)


def _product_page(state: ShopState, p: Product, error: str = "", chosen: dict[str, str] | None = None) -> Response:
    chosen = chosen or {}
    selects = "".join(
        "<p>"
        + _select(
            _field(label), label, [("", f"Choose {label.lower()}")] + [(v, v) for v in values], chosen.get(label, "")
        )
        + "</p>"
        for label, values in p.options
    )
    features = "".join(f"<li>{_e(a)}</li>" for a in p.attributes)
    article = "a pair of" if p.type in _PLURAL_TYPES else _article(p.type)
    alert = f'<p role="alert">{_e(error)}</p>' if error else ""
    body = (
        f"<h1>{_e(p.title)}</h1>{alert}<p>Price: {_price(p.price)}</p><p>Brand: {_e(p.brand)} · "
        f"Category: {_e(p.category.title())}</p><p>The {_e(p.title)} is {article} {_e(p.type)} by {_e(p.brand)}.</p>"
        f"<h2>Features</h2><ul>{features}</ul>"
        f'<form method="post" action="{_link("/cart/add")}"><input type="hidden" name="product" value="{p.id}">'
        f'{selects}<button type="submit">Add to cart</button></form>'
    )
    return _page(state, p.title, body, 400 if error else 200)


def _field(label: str) -> str:
    return "opt-" + label.lower().replace(" ", "-")


def _line_text(line: Line) -> tuple[str, str]:
    p = product(line.product_id)
    assert p is not None  # lines are only made for catalog products
    return p.title, ", ".join(f"{k}: {v}" for k, v in line.options)


def _cart_page(state: ShopState) -> Response:
    if not state.cart:
        body = f'<h1>Cart</h1><p>Your cart is empty.</p><p><a href="{_link("/")}">Continue shopping</a></p>'
        return _page(state, "Cart", body)
    rows = []
    total = 0.0
    for i, line in enumerate(state.cart):
        p = product(line.product_id)
        assert p is not None
        title, opts = _line_text(line)
        total += p.price * line.quantity
        rows.append(
            f'<li class="card"><a href="{_link(f"/product/{p.id}")}">{_e(title)}</a><br>{_e(opts or "no options")}'
            f" · Quantity: {line.quantity} · {_price(p.price * line.quantity)}"
            f'<form method="post" action="{_link("/cart/remove")}"><input type="hidden" name="line" value="{i}">'
            f'<button type="submit" aria-label="Remove {_e(title)}">Remove</button></form></li>'
        )
    body = (
        f"<h1>Cart</h1><ul>{''.join(rows)}</ul><p>Total: {_price(total)}</p>"
        f'<p><a href="{_link("/checkout")}">Proceed to checkout</a></p>'
    )
    return _page(state, "Cart", body)


def _checkout_page(state: ShopState, error: str = "") -> Response:
    if not state.cart:
        body = f'<h1>Checkout</h1><p>Your cart is empty.</p><p><a href="{_link("/")}">Continue shopping</a></p>'
        return _page(state, "Checkout", body)
    items = "".join(
        f"<li>{_e(t)} ({_e(o or 'no options')}) × {line.quantity}</li>"
        for line in state.cart
        for t, o in [_line_text(line)]
    )
    alert = f'<p role="alert">{_e(error)}</p>' if error else ""
    body = (
        f"<h1>Checkout</h1>{alert}<ul>{items}</ul>"
        f'<form method="post" action="{_link("/checkout")}">'
        f'<p><label for="name">Full name</label> <input id="name" name="name" type="text" value="{_e(state.name)}"></p>'
        f'<p><label for="address">Shipping address</label> '
        f'<input id="address" name="address" type="text" size="50" value="{_e(state.address)}"></p>'
        '<button type="submit">Place order</button></form>'
    )
    return _page(state, "Checkout", body, 400 if error else 200)


def _order_page(state: ShopState, order: Order) -> Response:
    items = "".join(
        f"<li>{_e(t)} ({_e(o or 'no options')}) × {line.quantity}</li>"
        for line in order.lines
        for t, o in [_line_text(line)]
    )
    body = (
        f"<h1>Order #{order.number} placed</h1><p>Thank you! Your order number is {order.number}.</p>"
        f"<ul>{items}</ul><p>Ship to: {_e(order.name)}, {_e(order.address)}</p>"
    )
    return _page(state, f"Order #{order.number}", body)


def _add_to_cart(request: Request, state: ShopState) -> Response:
    try:
        p = product(int(request.arg("product")))
    except ValueError:
        p = None
    if p is None:
        return _page(state, "Not found", "<h1>Not found</h1><p>No such product.</p>", 404)
    chosen = {label: request.arg(_field(label)) for label, _ in p.options}
    missing = [label.lower() for label, values in p.options if chosen[label] not in values]
    if missing:
        return _product_page(state, p, f"Please choose a {' and a '.join(missing)} before adding to the cart.", chosen)
    options = tuple((label, chosen[label]) for label, _ in p.options)
    for i, line in enumerate(state.cart):
        if line.product_id == p.id and line.options == options:
            state.cart[i] = Line(p.id, options, line.quantity + 1)
            break
    else:
        state.cart.append(Line(p.id, options))
    return Response(location=f"{ROOT}/cart")


def _place_order(request: Request, state: ShopState) -> Response:
    state.name, state.address = request.arg("name").strip(), request.arg("address").strip()
    if not state.cart:
        return _checkout_page(state)
    missing = [what for what, value in (("full name", state.name), ("shipping address", state.address)) if not value]
    if missing:
        return _checkout_page(state, f"Please enter your {' and '.join(missing)}.")
    number = 1001 + len(state.orders)
    state.orders.append(Order(number, tuple(state.cart), state.name, state.address))
    state.cart.clear()
    return Response(location=f"{ROOT}/order/{number}")


# -- tasks -----------------------------------------------------------------------------------

_FIRST = ("Ada", "Alan", "Grace", "Linus", "Marie", "Nikola", "Rosa", "Emil", "Hedy", "Srinivasa", "Katherine")
_LAST = ("Lovelace", "Turing", "Hopper", "Pauling", "Curie", "Tesla", "Franklin", "Noether", "Lamarr", "Johnson")
_STREETS = ("Baker Street", "Elm Road", "Harbor Lane", "Maple Avenue", "Station Road", "Mill Street", "Park Way")
_CITIES = ("London", "Springfield", "Portland", "Cambridge", "Dublin", "Austin", "Leeds")


def _article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def _instruction(rng: random.Random, p: Product, attrs: list[str], options: dict[str, str], bound: float) -> str:
    described = " ".join([*attrs, p.type]) if len(attrs) <= 2 else f"{', '.join(attrs[:-1])} and {attrs[-1]} {p.type}"
    lead = "a pair of" if p.type in _PLURAL_TYPES else _article(described)
    parts = []
    for label, value in options.items():
        parts.append(f"in {value.lower()}" if label == "Color" else f"{label.lower()} {value}")
    opts = (", " + ", ".join(parts)) if parts else ""
    template = rng.randrange(3)
    if template == 0:
        return f"I need {lead} {described}{opts}, and price lower than {bound:.2f} dollars."
    if template == 1:
        return f"Find me {lead} {described}{opts}, priced under ${bound:.2f}."
    with_opts = (
        (" with " + " and ".join(f"{k.lower()}: {v.lower() if k == 'Color' else v}" for k, v in options.items()))
        if options
        else ""
    )
    return f"I am looking for {lead} {described}{with_opts}, and price lower than {bound:.2f} dollars."


@functools.cache
def _tasks() -> tuple[Task, ...]:
    rng = random.Random(SEED + 1)
    products = catalog()
    held_out = set(rng.sample([p.id for p in products], round(len(products) * TEST_FRACTION)))
    tasks: list[Task] = []
    prompts: set[str] = set()
    for p in products:
        for _ in range(10):  # a rare clash with an earlier prompt: draw the goal again
            attrs = rng.sample(p.attributes, rng.randint(1, 3))
            options = {label: rng.choice(values) for label, values in p.options}
            bound = float(math.ceil(p.price * rng.uniform(1.05, 1.5) / 10) * 10)
            prompt = _instruction(rng, p, attrs, options, bound)
            name = address = ""
            if rng.random() < 0.3:
                name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
                address = f"{rng.randint(1, 99)} {rng.choice(_STREETS)}, {rng.choice(_CITIES)}"
                prompt += f" Ship it to {name}, {address}."
            if prompt not in prompts:
                break
        else:
            continue
        prompts.add(prompt)
        goal = {
            "category": p.category,
            "type": p.type,
            "attributes": attrs,
            "options": options,
            "max_price": bound,
            "target": p.id,
            "name": name,
            "address": address,
        }
        tasks.append(
            Task(
                id=f"{SITE}/{len(tasks)}",
                suite=SITE,
                prompt=prompt,
                split="test" if p.id in held_out else "train",
                payload={"kind": "site", "site": SITE, "start": "/", "goal": goal},
            )
        )
    return tuple(tasks)


def shop_suite() -> list[Task]:
    """The shop's tasks (see the module docstring); ``split="test"`` ones are held out."""
    return list(_tasks())


# -- judging ---------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class _Terms:
    """The pieces of the reward formula: matched terms, all terms, the type factor, what missed."""

    hits: int
    total: int
    r_type: float
    misses: tuple[str, ...]

    @property
    def reward(self) -> float:
        return self.r_type * self.hits / self.total


def _line_terms(goal: dict[str, Any], line: Line) -> _Terms:
    p = product(line.product_id)
    if p is None:
        return _Terms(0, 1, 0.0, (f"unknown product {line.product_id}",))
    misses: list[str] = []
    attrs = [str(a) for a in goal.get("attributes", [])]
    options = {str(k): str(v) for k, v in dict(goal.get("options", {})).items()}
    hits = sum(a in p.attributes for a in attrs)
    misses += [f"attribute {a!r} missing" for a in attrs if a not in p.attributes]
    chosen = {k.casefold(): v for k, v in line.options}
    for label, value in options.items():
        got = chosen.get(label.casefold())
        if got is not None and got.casefold() == value.casefold():
            hits += 1
        else:
            misses.append(f"{label.lower()}: wanted {value}, got {got or 'none'}")
    max_price = float(goal.get("max_price", math.inf))
    if p.price <= max_price:
        hits += 1
    else:
        misses.append(f"price {p.price:.2f} > {max_price:.2f}")
    if p.type == goal.get("type"):
        r_type = 1.0
    elif p.category == goal.get("category"):
        r_type = TYPE_MISMATCH
        misses.append(f"type: wanted {goal.get('type')}, got {p.type}")
    else:
        r_type = CATEGORY_MISMATCH
        misses.append(f"category: wanted {goal.get('category')}, got {p.category} ({p.type})")
    return _Terms(hits, len(attrs) + len(options) + 1, r_type, tuple(misses))


def score_order(goal: dict[str, Any], order: Order) -> tuple[float, list[str]]:
    """The reward of ``order`` against a task's ``goal`` (see the module docstring) and what did not match.

    Example:
        >>> goal = {"category": "shoes", "type": "sneaker", "attributes": [], "options": {}, "max_price": 10.0}
        >>> score_order(goal, Order(1001, (Line(1, ()),), "Ada", "1 Main St"))[0] < 1
        True
    """
    if not order.lines:
        return 0.0, ["the order is empty"]
    best = max((_line_terms(goal, line) for line in order.lines), key=lambda t: t.reward)
    hits, total, misses = best.hits, best.total, list(best.misses)
    for key, got in (("name", order.name), ("address", order.address)):
        wanted = str(goal.get(key) or "")
        if wanted:
            total += 1
            if _norm(wanted) == _norm(got):
                hits += 1
            else:
                misses.append(f"{key}: wanted {wanted!r}, got {got!r}")
    reward = best.r_type * hits / total
    if len(order.lines) > 1:
        reward *= EXTRA_LINES
        misses.append(f"the order has {len(order.lines)} lines, not one")
    return round(reward, 6), misses


# -- the site --------------------------------------------------------------------------------


class ShopSite:
    """The shop as a :class:`~environments.web.sites.base.Site` (see the module docstring)."""

    name = SITE

    def new_state(self, task: Task) -> ShopState:
        """An empty cart and no orders."""
        return ShopState()

    def handle(self, request: Request, state: ShopState) -> Response:
        """Render a page or apply a form (see the module docstring for the routes)."""
        path = request.path.rstrip("/") or "/"
        if request.method == "POST":
            if path == "/cart/add":
                return _add_to_cart(request, state)
            if path == "/cart/remove":
                with contextlib.suppress(ValueError, IndexError):
                    del state.cart[int(request.arg("line"))]
                return Response(location=f"{ROOT}/cart")
            if path == "/checkout":
                return _place_order(request, state)
        elif path in ("/", "/search"):
            return _search_page(request, state, home=path == "/")
        elif path == "/cart":
            return _cart_page(state)
        elif path == "/checkout":
            return _checkout_page(state)
        elif m := re.fullmatch(r"/product/(\d+)", path):
            p = product(int(m.group(1)))
            if p is not None:
                return _product_page(state, p)
        elif m := re.fullmatch(r"/order/(\d+)", path):
            order = next((o for o in state.orders if o.number == int(m.group(1))), None)
            if order is not None:
                return _order_page(state, order)
        return _page(state, "Not found", f"<h1>Not found</h1><p>No page {_e(request.path)}.</p>", 404)

    def judge(self, task: Task, state: ShopState, answer: str | None, stopped: bool) -> Verdict:
        """Score the first placed order against the task's goal (see the module docstring)."""
        if not state.orders:
            return Verdict(0.0, False, stopped, "no order was placed" if stopped else "")
        reward, misses = score_order(task.payload["goal"], state.orders[0])
        detail = "the order matches the goal" if not misses else "; ".join(misses)
        return Verdict(reward, reward >= 1.0, True, detail)

    def tasks(self) -> list[Task]:
        """The shop's tasks (:func:`shop_suite`)."""
        return shop_suite()

    def reference_action(self, task: Task, observation: Observation) -> Action:
        """The next action of a scripted buyer of the task's target product, read from the page.

        It searches the target's title, opens it from the results (paging on when needed),
        chooses the goal's options, adds it to the cart, checks out with the goal's name
        and address (or a placeholder) and places the order. It uses only refs on the page.
        """
        goal = task.payload["goal"]
        target = product(int(goal["target"]))
        if target is None:
            return make_action("stop")
        path = urlsplit(str(observation.data.get("url", ""))).path
        path = path[len(ROOT) :] if path.startswith(ROOT) else path
        path = path.rstrip("/") or "/"

        def link(name: str) -> Action | None:
            ref = find(observation, "link", name)
            return make_action("click", ref) if ref else None

        def home() -> Action:
            return link("Home") or make_action("goto", f"{ROOT}/")

        if path.startswith("/order/"):
            return make_action("stop")
        if path == f"/product/{target.id}":
            for label, value in dict(goal["options"]).items():
                ref = find(observation, "combobox", label)
                if ref is None:
                    return make_action("stop")
                if _combobox_value(observation, ref) != value:
                    return make_action("select", ref, value)
            ref = find(observation, "button", "Add to cart")
            return make_action("click", ref) if ref else make_action("stop")
        if path == "/cart":
            if find(observation, "link", target.title) is None:
                return home()
            return link("Proceed to checkout") or make_action("stop")
        if path == "/checkout":
            values = {"Full name": goal.get("name") or "Sam Reference", "Shipping address": goal.get("address")}
            values["Shipping address"] = values["Shipping address"] or "1 Main Street, Springfield"
            for ref, _, name, rest in elements(observation, "textbox"):
                if name in values and f'value="{values[name]}"' not in rest:
                    return make_action("type", ref, values[name])
            ref = find(observation, "button", "Place order")
            return make_action("click", ref) if ref else home()
        if path in ("/", "/search"):
            box = find(observation, "textbox", "Search")
            if box is None:  # not the page it should be: load it again rather than give up
                return make_action("goto", f"{ROOT}/")
            value = next((rest for ref, _, _, rest in elements(observation, "textbox") if ref == box), "")
            if path == "/" or f'value="{target.title}"' not in value:
                return make_action("type", box, target.title, submit=True)
            # the target, the next page, or (neither shown) the search again rather than give up
            return link(target.title) or link("Next page") or make_action("type", box, target.title, submit=True)
        return home()


def _combobox_value(observation: Observation, ref: str) -> str | None:
    """The selected option of combobox ``ref``: its ``value=`` or its option marked ``selected``."""
    lines = observation.text.splitlines()
    for i, line in enumerate(lines):
        if f"[{ref}] combobox" not in line:
            continue
        m = re.search(r'value="((?:[^"\\]|\\.)*)"', line)
        if m:
            return m.group(1)
        indent = len(line) - len(line.lstrip())
        for child in lines[i + 1 :]:
            if len(child) - len(child.lstrip()) <= indent:
                break
            opt = re.match(r'\s*(?:\[\w+\] )?option "((?:[^"\\]|\\.)*)".*\bselected\b', child)
            if opt:
                return opt.group(1)
        return None
    return None
