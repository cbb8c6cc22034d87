"""The shop site: its suite, its judge, its pages, and real Chromium episodes through WebEnvironment."""

from __future__ import annotations

import asyncio

from autodidact.types import Action, Observation, Task
from environments.evaluate import evaluate
from environments.web.actions import make_action
from environments.web.env import WebEnvironment
from environments.web.observe import find
from environments.web.policies import ReferencePolicy
from environments.web.sites.base import Request
from environments.web.sites.shop import (
    Line,
    Order,
    Product,
    ShopSite,
    ShopState,
    catalog,
    product,
    search,
    shop_suite,
)

SHOP = ShopSite()


def _task(split: str = "test", with_options: bool = True, shipping: bool | None = None) -> Task:
    for task in shop_suite():
        goal = task.payload["goal"]
        if task.split != split or bool(goal["options"]) != with_options:
            continue
        if shipping is None or bool(goal["name"]) == shipping:
            return task
    raise AssertionError("no such task")


def _perfect_order(task: Task) -> Order:
    goal = task.payload["goal"]
    p = product(goal["target"])
    assert p is not None
    options = tuple((label, goal["options"][label]) for label, _ in p.options)
    return Order(1001, (Line(p.id, options),), goal["name"] or "Sam", goal["address"] or "1 Main St")


# -- suite -----------------------------------------------------------------------------------


def test_suite_is_large_distinct_and_split_by_target() -> None:
    tasks = shop_suite()
    assert len({t.prompt for t in tasks}) == len(tasks) >= 240
    assert len({t.id for t in tasks}) == len(tasks)
    assert all(t.suite == "shop" and t.payload["kind"] == "site" and t.payload["site"] == "shop" for t in tasks)
    test = [t for t in tasks if t.split == "test"]
    train = [t for t in tasks if t.split == "train"]
    assert 0.15 <= len(test) / len(tasks) <= 0.25 and train
    held_out = {t.payload["goal"]["target"] for t in test}
    assert held_out.isdisjoint(t.payload["goal"]["target"] for t in train)
    assert SHOP.tasks() == tasks


def test_catalog_is_deterministic_and_every_goal_is_satisfiable_by_its_target() -> None:
    assert catalog.__wrapped__() == catalog()  # type: ignore[attr-defined]
    assert len(catalog()) >= 300 and len({p.title for p in catalog()}) == len(catalog())
    assert {p.category for p in catalog()} >= {"shoes", "shirts", "jackets", "bags", "headphones"}
    assert any(not p.options for p in catalog()) and any(len(p.options) == 2 for p in catalog())
    for task in shop_suite():
        goal = task.payload["goal"]
        assert task.prompt.count(goal["type"]) >= 1
        assert SHOP.judge(task, ShopState(orders=[_perfect_order(task)]), None, False).reward == 1.0


def test_search_ranks_the_exact_title_first_and_filters() -> None:
    for p in catalog()[::7]:
        assert search(p.title)[0] == p
    cheap_sneakers = search("sneakers", category="shoes", max_price=100.0, attributes=("waterproof",))
    assert cheap_sneakers and all(p.price <= 100 and "waterproof" in p.attributes for p in cheap_sneakers)
    assert all(isinstance(p, Product) and p.type == "sneaker" for p in cheap_sneakers)
    assert search("", brand="Zephyr") == [p for p in catalog() if p.brand == "Zephyr"]


# -- judge -----------------------------------------------------------------------------------


def test_judge_scores_a_perfect_order_one_and_a_wrong_option_partially() -> None:
    task = _task(with_options=True, shipping=True)
    perfect = SHOP.judge(task, ShopState(orders=[_perfect_order(task)]), None, False)
    assert (perfect.reward, perfect.success, perfect.done) == (1.0, True, True)

    order = _perfect_order(task)
    p = product(order.lines[0].product_id)
    assert p is not None
    label, wanted = order.lines[0].options[0]
    other = next(v for v in p.option_values(label) if v != wanted)
    wrong = Order(order.number, (Line(p.id, ((label, other), *order.lines[0].options[1:])),), order.name, order.address)
    verdict = SHOP.judge(task, ShopState(orders=[wrong]), None, False)
    assert 0 < verdict.reward < 1 and not verdict.success and verdict.done
    assert f"wanted {wanted}, got {other}" in verdict.detail

    shipped_wrong = Order(order.number, order.lines, "Nobody", order.address)
    verdict = SHOP.judge(task, ShopState(orders=[shipped_wrong]), None, False)
    assert 0 < verdict.reward < 1 and "name" in verdict.detail


def test_judge_scales_down_wrong_types_and_extra_lines_and_reads_only_the_first_order() -> None:
    task = _task()
    goal = task.payload["goal"]
    good = _perfect_order(task)
    other_category = next(p for p in catalog() if p.category != goal["category"] and not p.options)
    wrong = Order(1001, (Line(other_category.id, ()),), good.name, good.address)
    assert SHOP.judge(task, ShopState(orders=[wrong]), None, False).reward <= 0.1
    same_category = next(p for p in catalog() if p.category == goal["category"] and p.type != goal["type"])
    verdict = SHOP.judge(task, ShopState(orders=[Order(1001, (Line(same_category.id, ()),), "a", "b")]), None, False)
    assert verdict.reward <= 0.5 and "type" in verdict.detail
    extra = Order(1001, (*good.lines, Line(other_category.id, ())), good.name, good.address)
    assert SHOP.judge(task, ShopState(orders=[extra]), None, False).reward == 0.5
    assert SHOP.judge(task, ShopState(orders=[wrong, good]), None, False).reward <= 0.1


def test_judge_without_an_order_waits_then_scores_zero_when_stopped() -> None:
    task = _task()
    assert SHOP.judge(task, ShopState(), None, False).done is False
    stopped = SHOP.judge(task, ShopState(), None, True)
    assert (stopped.reward, stopped.success, stopped.done) == (0.0, False, True)


# -- pages (no browser) ----------------------------------------------------------------------


def test_pages_escape_input_validate_forms_and_redirect_after_post() -> None:
    state = ShopState()
    body = SHOP.handle(Request("GET", "/search", {"q": ['<script>alert("x")</script>']}), state).body
    assert "<script>alert" not in body and "&lt;script&gt;" in body
    p = next(p for p in catalog() if len(p.options) == 2)
    form = {"product": [str(p.id)]}
    refused = SHOP.handle(Request("POST", "/cart/add", form=form), state)
    assert refused.status == 400 and 'role="alert"' in refused.body and not state.cart
    form |= {f"opt-{label.lower().replace(' ', '-')}": [values[0]] for label, values in p.options}
    added = SHOP.handle(Request("POST", "/cart/add", form=form), state)
    assert added.location == "/shop/cart" and state.cart[0].product_id == p.id
    SHOP.handle(Request("POST", "/cart/add", form=form), state)
    assert len(state.cart) == 1 and state.cart[0].quantity == 2
    assert "Cart (2)" in SHOP.handle(Request("GET", "/cart"), state).body
    missing = SHOP.handle(Request("POST", "/checkout", form={"name": ["Ada"], "address": [""]}), state)
    assert missing.status == 400 and "shipping address" in missing.body and not state.orders
    placed = SHOP.handle(Request("POST", "/checkout", form={"name": ["Ada"], "address": ["1 Main St"]}), state)
    assert placed.location == "/shop/order/1001" and not state.cart and state.orders[0].name == "Ada"
    assert "Order #1001" in SHOP.handle(Request("GET", "/order/1001"), state).body
    assert SHOP.handle(Request("GET", "/order/999"), state).status == 404
    assert SHOP.handle(Request("GET", "/product/99999"), state).status == 404


# -- real browser episodes -------------------------------------------------------------------


async def test_reference_policy_solves_held_out_tasks() -> None:
    tasks = [t for t in shop_suite() if t.split == "test"][:15]
    outcomes = await evaluate("web", tasks, ReferencePolicy(), concurrency=4, max_steps=25, progress=False)
    solved = sum(o.success for o in outcomes)
    print(f"\nshop reference policy: {solved}/{len(tasks)} held-out tasks solved")
    assert solved == len(tasks), [o.detail for o in outcomes if not o.success]
    assert all(o.reward == 1.0 and o.steps <= 25 for o in outcomes)


class Quitter:
    name = "quitter"
    expect_success = False

    async def act(self, task: Task, observation: Observation) -> Action:
        return make_action("stop")


async def test_a_failed_episode_says_how_far_it_got_what_it_did_last_and_why() -> None:
    [outcome] = await evaluate("web", [_task()], Quitter(), max_steps=5, progress=False)
    assert not outcome.success and outcome.steps == 1 and outcome.detail is not None
    assert outcome.detail.startswith("after 1 step(s), last action stop (no order was placed): Goal: ")
    assert "URL: http://127.0.0.1:" in outcome.detail


async def _buy(env: WebEnvironment, obs: Observation, p: Product) -> tuple[float, bool, dict[str, object]]:
    """Buy ``p`` with its first option values through the action API; returns the last step's result."""
    r = await env.step(make_action("goto", f"/shop/product/{p.id}"))
    for label, values in p.options:
        r = await env.step(make_action("select", find(r.observation, "combobox", label), values[0]))
    r = await env.step(make_action("click", find(r.observation, "button", "Add to cart")))
    assert "Cart (1)" in r.observation.text
    r = await env.step(make_action("click", find(r.observation, "link", "Proceed to checkout")))
    r = await env.step(make_action("type", find(r.observation, "textbox", "Full name"), "Ada Lovelace"))
    r = await env.step(make_action("type", find(r.observation, "textbox", "Shipping address"), "12 Baker Street"))
    r = await env.step(make_action("click", find(r.observation, "button", "Place order")))
    assert "Order #1001 placed" in r.observation.text
    return r.reward, r.terminated, r.info


async def test_buying_a_product_of_another_category_ends_with_a_low_reward() -> None:
    task = _task()
    goal = task.payload["goal"]
    wrong = next(p for p in catalog() if p.category != goal["category"] and p.options)
    env = WebEnvironment(max_steps=20)
    try:
        obs = await env.reset(task)
        reward, terminated, info = await _buy(env, obs, wrong)
    finally:
        await env.close()
    assert terminated and 0 <= reward < 1 and info["success"] is False
    assert "category" in str(info["detail"])


async def test_concurrent_episodes_have_separate_carts() -> None:
    task = _task()
    target = product(task.payload["goal"]["target"])
    assert target is not None
    a, b = WebEnvironment(), WebEnvironment()
    try:
        await asyncio.gather(a.reset(task), b.reset(task))
        r = await a.step(make_action("goto", f"/shop/product/{target.id}"))
        for label, values in target.options:
            r = await a.step(make_action("select", find(r.observation, "combobox", label), values[-1]))
        in_a, in_b = await asyncio.gather(
            a.step(make_action("click", find(r.observation, "button", "Add to cart"))),
            b.step(make_action("goto", "/shop/cart")),
        )
        in_b = await b.step(make_action("goto", "/shop/cart"))
        assert "Cart (1)" in in_a.observation.text and find(in_a.observation, "link", target.title)
        assert "Cart (0)" in in_b.observation.text and "Your cart is empty." in in_b.observation.text
        assert find(in_b.observation, "link", target.title) is None
        assert not in_a.terminated and in_a.reward == 0
    finally:
        await asyncio.gather(a.close(), b.close())
