"""The forum site: its suite, its judge on hand-built states, its pages, and real Chromium episodes."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

import pytest

from autodidact.types import Observation, Task
from environments.evaluate import evaluate
from environments.web import policies
from environments.web.actions import make_action
from environments.web.env import WebEnvironment
from environments.web.policies import ReferencePolicy
from environments.web.sites.base import Request
from environments.web.sites.forum import ME, ForumSite, ForumState, base_forum, forum_suite, normalize

FORUM = ForumSite()


def _tasks(family: str, split: str = "test", **where: Any) -> list[Task]:
    out = []
    for task in forum_suite():
        goal = task.payload["goal"]
        if task.split == split and goal["family"] == family and all(goal.get(k) == v for k, v in where.items()):
            out.append(task)
    assert out, f"no {split} {family} task with {where}"
    return out


def _post(state: ForumState, path: str, **form: str) -> None:
    response = FORUM.handle(Request("POST", path, {}, {k: [v] for k, v in form.items()}), state)
    assert response.location, f"POST {path} did not redirect: {response.status}"


def _get(state: ForumState, path: str) -> str:
    path, _, query = path.partition("?")
    response = FORUM.handle(Request("GET", path, parse_qs(query)), state)
    assert response.status == 200, response.body
    return response.body


def _other_thread(tid: int) -> int:
    return next(t for t in base_forum().threads if t != tid and base_forum().threads[t].author != ME)


# -- the suite ---------------------------------------------------------------------------------


def test_suite_is_large_varied_and_deterministic() -> None:
    tasks = forum_suite()
    assert len(tasks) >= 200
    assert len({t.id for t in tasks}) == len({t.prompt for t in tasks}) == len(tasks)
    assert {t.payload["goal"]["family"] for t in tasks} == {"create", "reply", "upvote", "edit", "delete", "question"}
    for family in ("create", "reply", "upvote", "edit", "delete", "question"):
        assert _tasks(family, "train") and _tasks(family, "test")
    test = [t for t in tasks if t.split == "test"]
    assert 0.15 <= len(test) / len(tasks) <= 0.25
    assert [t.model_dump() for t in tasks] == [t.model_dump() for t in forum_suite()]
    assert all(t.suite == "forum" and t.payload["kind"] == "site" and t.payload["start"] == "/" for t in tasks)


def test_held_out_tasks_concern_threads_and_texts_no_train_task_uses() -> None:
    train = [t for t in forum_suite() if t.split == "train"]
    test = [t for t in forum_suite() if t.split == "test"]
    train_threads = {t.payload["goal"].get("thread") for t in train} - {None}
    test_threads = {t.payload["goal"].get("thread") for t in test} - {None}
    assert test_threads and not train_threads & test_threads
    train_text = "\n".join(t.prompt for t in train)
    for task in test:
        goal = task.payload["goal"]
        for key in ("title", "text", "body"):
            if key in goal:
                assert f'"{goal[key]}"' not in train_text, (task.id, key)


def test_goals_are_true_of_the_base_forum() -> None:
    forum, state = base_forum(), ForumState()
    for task in forum_suite():
        goal = task.payload["goal"]
        if "thread" in goal:
            assert forum.threads[goal["thread"]].title == goal["title"]
        if goal["family"] in ("edit", "delete"):
            assert forum.posts[goal["post"]].author == ME
        if goal["family"] == "upvote" and goal["which"] != "opening":
            by = [p.id for p in state.posts(goal["thread"])[1:] if p.author == goal["user"]]
            assert goal["post"] == (by[0] if goal["which"] == "first" else by[-1])
        if goal["family"] == "create":
            assert all(normalize(t.title) != normalize(goal["title"]) for t in forum.threads.values())


# -- the judge on hand-built states ------------------------------------------------------------


def test_question_answers_are_normalized_and_counts_compare_as_numbers() -> None:
    task = _tasks("question", ask="replies")[0]
    truth = task.payload["goal"]["answer"]
    state = FORUM.new_state(task)
    assert not FORUM.judge(task, state, None, False).done
    for answer in (truth, f" {truth} replies. ", f'"{truth}"'):
        verdict = FORUM.judge(task, state, answer, False)
        assert (verdict.reward, verdict.success, verdict.done) == (1.0, True, True), answer
    wrong = FORUM.judge(task, state, str(int(truth) + 1), False)
    assert (wrong.reward, wrong.success, wrong.done) == (0.0, False, True) and "answer is" in wrong.detail
    starter = _tasks("question", ask="starter")[0]
    assert FORUM.judge(starter, state, starter.payload["goal"]["answer"].upper(), False).success
    category = _tasks("question", ask="category")[0]
    assert FORUM.judge(category, state, f"'{category.payload['goal']['answer']}'", False).success
    assert not FORUM.judge(category, state, "Knitting", False).success
    # a question needs no writes: one ends the episode at 0
    _post(state, f"/t/{task.payload['goal']['thread']}/reply", body="hello")
    verdict = FORUM.judge(task, state, None, False)
    assert verdict.done and not verdict.success and verdict.reward == 0.0


def test_reply_judge_right_thread_wrong_thread_wrong_text() -> None:
    task = _tasks("reply")[0]
    goal = task.payload["goal"]
    right = FORUM.new_state(task)
    _post(right, f"/t/{goal['thread']}/reply", body="  " + goal["text"].upper().replace(" ", "  ") + " ")
    assert FORUM.judge(task, right, None, False) == FORUM.judge(task, right, None, False)
    verdict = FORUM.judge(task, right, None, False)
    assert (verdict.reward, verdict.success, verdict.done) == (1.0, True, True)
    elsewhere = FORUM.new_state(task)
    _post(elsewhere, f"/t/{_other_thread(goal['thread'])}/reply", body=goal["text"])
    verdict = FORUM.judge(task, elsewhere, None, False)
    assert (verdict.reward, verdict.success, verdict.done) == (0.0, False, True) and "not thread" in verdict.detail
    wrong_text = FORUM.new_state(task)
    _post(wrong_text, f"/t/{goal['thread']}/reply", body=goal["text"] + " Extra words.")
    assert not FORUM.judge(task, wrong_text, None, False).success
    stopped = FORUM.judge(task, FORUM.new_state(task), None, True)
    assert (stopped.done, stopped.success) == (True, False)


def test_upvote_judge_needs_exactly_the_target_post() -> None:
    for which in ("opening", "first", "last"):
        task = _tasks("upvote", "train", which=which)[0]
        goal = task.payload["goal"]
        state = FORUM.new_state(task)
        _post(state, f"/p/{goal['post']}/upvote")
        assert FORUM.judge(task, state, None, False).success, which
        assert state.post(goal["post"]).votes == base_forum().posts[goal["post"]].votes + 1  # type: ignore[union-attr]
        other = next(p.id for p in state.posts(goal["thread"]) if p.id != goal["post"])
        wrong = FORUM.new_state(task)
        _post(wrong, f"/p/{other}/upvote")
        verdict = FORUM.judge(task, wrong, None, False)
        assert (verdict.done, verdict.success, verdict.reward) == (True, False, 0.0)
    # one asked change, two made: not a success
    state = FORUM.new_state(task)
    _post(state, f"/p/{goal['post']}/upvote")
    _post(state, f"/p/{other}/upvote")
    assert not FORUM.judge(task, state, None, False).success


def test_edit_and_delete_judges() -> None:
    for which in ("opening", "reply"):
        task = _tasks("edit", "train", which=which)[0]
        goal = task.payload["goal"]
        state = FORUM.new_state(task)
        _post(state, f"/p/{goal['post']}/edit", body=goal["text"])
        assert FORUM.judge(task, state, None, False).success
        assert goal["text"] in _get(state, f"/t/{goal['thread']}")
        wrong = FORUM.new_state(task)
        _post(wrong, f"/p/{goal['post']}/edit", body="Something else entirely")
        verdict = FORUM.judge(task, wrong, None, False)
        assert (verdict.done, verdict.success, verdict.reward) == (True, False, 0.0)
    thread_task = _tasks("delete", "train", which="opening")[0]
    goal = thread_task.payload["goal"]
    state = FORUM.new_state(thread_task)
    _post(state, f"/p/{goal['post']}/delete")
    assert FORUM.judge(thread_task, state, None, False).success
    assert state.thread(goal["thread"]) is None and goal["title"] not in _get(state, f"/u/{ME}")
    reply_task = _tasks("delete", "train", which="reply")[0]
    wrong = FORUM.new_state(reply_task)
    _post(wrong, f"/p/{goal['post']}/delete")  # deletes another of your posts
    verdict = FORUM.judge(reply_task, wrong, None, False)
    assert (verdict.done, verdict.success, verdict.reward) == (True, False, 0.0)


def test_create_judge_gives_a_third_per_right_field() -> None:
    task = _tasks("create")[0]
    goal = task.payload["goal"]
    slug = goal["category"].lower().replace(" ", "-")
    state = FORUM.new_state(task)
    assert not FORUM.judge(task, state, None, False).done
    _post(state, "/new", category=slug, title=goal["title"].lower(), body=f"About {goal['body']} today")
    verdict = FORUM.judge(task, state, None, False)
    assert (verdict.reward, verdict.success, verdict.done) == (1.0, True, True)
    assert goal["title"].lower() in _get(state, "/")  # the new thread is the most recent
    other = next(c for c in base_forum().categories if c != goal["category"]).lower().replace(" ", "-")
    wrong = FORUM.new_state(task)
    _post(wrong, "/new", category=other, title=goal["title"], body=goal["body"])
    verdict = FORUM.judge(task, wrong, None, False)
    assert verdict.done and not verdict.success and verdict.reward == pytest.approx(2 / 3)
    assert "category" in verdict.detail


# -- pages -------------------------------------------------------------------------------------


def test_pages_escape_text_and_refuse_bad_writes() -> None:
    state = ForumState()
    _post(state, "/new", category="cooking", title="<script>alert(1)</script>", body="a & b")
    page = _get(state, f"/t/{max(state.new_threads)}")
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "a &amp; b" in page
    bad = FORUM.handle(Request("POST", "/new", {}, {"category": [""], "title": ["x"], "body": [""]}), state)
    assert bad.status == 400 and bad.location is None and "Please give a category, a body" in bad.body
    not_mine = next(p for p in base_forum().posts.values() if p.author != ME)
    forbidden = FORUM.handle(Request("POST", f"/p/{not_mine.id}/edit", {}, {"body": ["x"]}), state)
    assert forbidden.status == 403
    empty = FORUM.handle(Request("POST", f"/t/{not_mine.thread}/reply", {}, {"body": ["  "]}), state)
    assert empty.status == 200 and "cannot be empty" in empty.body
    assert len(state.writes) == 1  # only the thread
    assert FORUM.handle(Request("GET", "/t/99999"), state).status == 404
    assert ForumState().new_threads == {}  # nothing leaks into a fresh state


def test_listings_paginate_and_search_finds_titles() -> None:
    state = ForumState()
    title = base_forum().threads[7].title
    assert f">{title}</a>" in _get(state, f"/search?q={title.upper()}")
    first = _get(state, "/c/cooking")
    assert "Next page" in first and "Page 1 of" in first and "Previous page" not in first
    assert "Previous page" in _get(state, "/c/cooking?page=2")
    assert f">{base_forum().threads[1].title}</a>" in _get(state, f"/u/{base_forum().threads[1].author}")


# -- real episodes -----------------------------------------------------------------------------


async def test_reference_policy_solves_held_out_tasks_of_every_family() -> None:
    picked: list[Task] = []
    for family, n in (("question", 4), ("reply", 2), ("upvote", 3), ("edit", 2), ("delete", 2), ("create", 2)):
        picked += _tasks(family)[:n]
    outcomes = await evaluate("web", picked, ReferencePolicy(), concurrency=4, max_steps=20, progress=False)
    failed = [(o.task_id, o.detail) for o in outcomes if not o.success]
    assert not failed and [o.task_id for o in outcomes] == [t.id for t in picked]
    assert all(o.reward == 1.0 and o.steps <= 8 for o in outcomes)


def _tree(obs: Observation) -> str:
    """The page part of an observation (the goal line above it quotes the task's text)."""
    return obs.text.split("\n\n", 1)[1]


async def _drive_to_thread(env: WebEnvironment, task: Task, obs: Observation) -> Observation:
    """Follow the reference policy until the task's thread page is shown."""
    for _ in range(5):
        if f"/forum/t/{task.payload['goal']['thread']}" in obs.data["url"]:
            return obs
        obs = (await env.step(FORUM.reference_action(task, obs))).observation
    raise AssertionError(f"never reached the thread: {obs.text[:500]}")


async def test_wrong_actions_end_the_episode_without_success() -> None:
    task = _tasks("reply")[0]
    goal = task.payload["goal"]
    env = WebEnvironment(max_steps=20)
    try:
        await env.reset(task)
        obs = (await env.step(make_action("goto", f"/forum/t/{_other_thread(goal['thread'])}"))).observation
        box = policies.find(obs, "textbox", "Reply")
        assert box is not None, obs.text
        result = await env.step(make_action("type", box, goal["text"]))
        assert not result.terminated
        result = await env.step(make_action("click", policies.find(result.observation, "button", "Post reply")))
        assert result.terminated and result.reward == 0.0 and result.info["success"] is False
        assert "not thread" in result.info["detail"]

        question = _tasks("question", ask="starter")[0]
        await env.reset(question)
        result = await env.step(make_action("answer", "nobody-at-all"))
        assert result.terminated and result.reward == 0.0 and result.info["success"] is False
    finally:
        await env.close()


async def test_concurrent_episodes_do_not_see_each_others_writes() -> None:
    task = _tasks("reply")[1]
    goal = task.payload["goal"]
    a, b = WebEnvironment(max_steps=20), WebEnvironment(max_steps=20)
    try:
        obs_a, obs_b = await asyncio.gather(a.reset(task), b.reset(task))
        obs_a, obs_b = await asyncio.gather(_drive_to_thread(a, task, obs_a), _drive_to_thread(b, task, obs_b))
        for _ in range(4):
            result = await a.step(FORUM.reference_action(task, obs_a))
            obs_a = result.observation
            if result.terminated:
                break
        assert result.terminated and result.info["success"], result.info
        assert goal["text"] in _tree(obs_a)  # A's thread page shows its reply
        reloaded = await b.step(make_action("goto", f"/forum/t/{goal['thread']}"))
        assert goal["title"] in _tree(reloaded.observation) and goal["text"] not in _tree(reloaded.observation)
        assert not reloaded.terminated
    finally:
        await asyncio.gather(a.close(), b.close())
