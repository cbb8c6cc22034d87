"""BrowserGym tasks as an environment of this project: its graphs, runner, store and trainers.

`BrowserGym <https://github.com/ServiceNow/BrowserGym>`_ is the gymnasium interface web-agent
research runs its benchmarks through. :class:`BrowserGymEnvironment` (registered as
``browsergym``) plays any BrowserGym task whose id a task's payload names
(``{"kind": "browsergym", "env_id": "browsergym/miniwob.click-test"}``), and
:func:`browsergym_suite` lists a benchmark's tasks (``browsergym-miniwob``: BrowserGym's
MiniWoB++ tasks, served from the ``miniwob`` wheel's HTML by :mod:`environments.web.miniwob`'s
file server unless ``$MINIWOB_URL`` names another; other benchmarks register their own suite
with ``benchmark="<name>"`` once their ``browsergym-<name>`` package is installed).

- Observations: the goal, the URL (and the open tabs when there are several), then
  BrowserGym's accessibility tree flattened to text, each element with its ``bid`` in
  brackets (``[13] button 'Click Me!'``), cut to ``budget`` characters.
- Actions: BrowserGym's high-level action calls, ``click("13")``, ``fill("5", "text")``…
  (``actions`` picks which; ``noop()`` is always allowed). :func:`parse_action` reads the
  last such call in a model's answer; a bid written as a number is read as a string. An
  answer without one, or an action that fails on the page, gives an observation that starts
  with ``Error:`` and the first line of BrowserGym's ``last_action_error`` (the whole of it
  is in the step's ``info``); it never ends the episode.
- Reward and ``terminated`` are BrowserGym's (the task's own validation); ``max_steps``
  actions truncate the episode.

BrowserGym drives Chromium through Playwright's *sync* API, which must not run on an asyncio
event loop's thread and only works on the thread that started it. So each environment owns
one worker thread that makes every BrowserGym call (with its own Playwright driver, stopped
by :meth:`BrowserGymEnvironment.close`), and the async methods await it. BrowserGym keeps a
single process-wide Playwright and opens a second Chromium per episode for a chat window
meant for a person watching; on first use this module points both at per-thread
replacements (:func:`_adapt_browsergym`): the thread's own Playwright, and a chat that keeps
its messages in memory.

Not protected: unlike the ``web`` environment, pages are not held to their origin (BrowserGym
makes its own browser context); the default action set leaves out ``goto``, tabs and file
uploads, so an agent reaches only what the task's pages link to.

Faults that are not the agent's raise: BrowserGym not installed, Chromium that does not
start or dies (:class:`~autodidact.errors.BrowserUnavailableError`), MiniWoB++'s file server
stopped or BrowserGym failing or hanging outside an action
(:class:`~autodidact.errors.EnvironmentUnavailableError`).

Example:
    >>> env = BrowserGymEnvironment()
    >>> obs = await env.reset(load_suite("browsergym-miniwob")[0], seed=1)  # doctest: +SKIP
    >>> (await env.step(Action(kind="text", text='click("13")'))).reward  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import inspect
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from autodidact.errors import (
    BrowserUnavailableError,
    ConfigError,
    EnvironmentUnavailableError,
    TaskDataError,
)
from autodidact.types import Action, Observation, Task
from environments.base import StepResult
from environments.tasks import stable_split
from environments.web.actions import ActionError

INSTALL = (
    "pip install 'autodidact[browsergym]' && pip install --no-deps browsergym-core==0.14.3 "
    "browsergym-{benchmark}==0.14.3 (--no-deps: browsergym-core pins playwright==1.44; see README)"
)
# BrowserGym's "bid" actions without upload_file (it reads local files), plus answers and giving up.
DEFAULT_ACTIONS = (
    "click",
    "fill",
    "select_option",
    "press",
    "hover",
    "dblclick",
    "focus",
    "clear",
    "scroll",
    "drag_and_drop",
    "send_msg_to_user",
    "report_infeasible",
)
T = TypeVar("T")


def browsergym_suite(benchmark: str = "miniwob") -> list[Task]:
    """One task per BrowserGym task id of ``benchmark`` (``browsergym/<benchmark>.<name>``).

    A task's split is the one its name gets in this project's own suite of that benchmark
    (``miniwob/<name>``), so held-out tasks stay held out across both.

    Example:
        >>> [t.id for t in browsergym_suite("miniwob")][:1]  # doctest: +SKIP
        ['browsergym/miniwob.ascending-numbers']
    """
    _import_benchmark(benchmark, TaskDataError)
    import gymnasium as gym

    prefix = f"browsergym/{benchmark}."
    return [
        Task(
            id=env_id,
            suite=f"browsergym-{benchmark}",
            prompt=f"BrowserGym task {env_id}: the goal is shown when the episode starts.",
            split=stable_split(f"{benchmark}/{env_id.removeprefix(prefix)}"),
            payload={"kind": "browsergym", "env_id": env_id},
        )
        for env_id in sorted(k for k in gym.envs.registry if k.startswith(prefix))
    ]


def _import_benchmark(benchmark: str, error: type[Exception]) -> None:
    """Import ``browsergym.<benchmark>``, which registers its tasks with gymnasium."""
    try:
        importlib.import_module(f"browsergym.{benchmark}")
    except ImportError as e:
        raise error(
            f"BrowserGym's {benchmark} tasks need their packages ({e}): {INSTALL.format(benchmark=benchmark)}"
        ) from e


@functools.cache
def _action_params() -> dict[str, list[str]]:
    """Every BrowserGym high-level action and its parameter names."""
    from browsergym.core.action import functions

    return {
        name: list(inspect.signature(f).parameters)
        for name, f in vars(functions).items()
        if inspect.isfunction(f) and f.__module__ == functions.__name__
    }


def parse_action(text: str, allowed: Sequence[str] | None = DEFAULT_ACTIONS) -> str:
    """The last BrowserGym action call in ``text`` whose name is ``allowed`` (None: any; ``noop`` always),
    written back as BrowserGym reads it; an :class:`~environments.web.actions.ActionError`
    says why there is none. Calls are found by BrowserGym's own parser; a bid given as a
    number is made a string.

    Example:
        >>> parse_action("The button is [13].\\nclick(13)")  # doctest: +SKIP
        "click('13')"
    """
    from browsergym.core.action.parsers import highlevel_action_parser

    try:
        calls = [c for match in highlevel_action_parser.search_string(text).as_list() for c in match]
    except Exception as e:  # pyparsing on text it cannot read at all
        raise ActionError(f"no action found ({e})") from None
    params = _action_params()
    names = set(params) if allowed is None else {*allowed, "noop"}
    ok = [(name, args) for name, args in calls if name in names]
    if not ok:
        unknown = sorted({name for name, _ in calls} - names)
        if unknown:
            raise ActionError(f"unknown action {', '.join(unknown)}: use one of {', '.join(sorted(names))}")
        raise ActionError('no action found: reply with one action call, like click("12") or fill("7", "text")')
    name, args = ok[-1]
    args = [
        str(a) if isinstance(a, int) and i < len(params[name]) and params[name][i].endswith("bid") else a
        for i, a in enumerate(args)
    ]
    return f"{name}({', '.join(repr(a) for a in args)})"


class BrowserGymEnvironment:
    """BrowserGym tasks (see the module docstring).

    Args:
        max_steps: actions per episode before it is truncated.
        budget: characters of flattened accessibility tree per observation.
        actions: the BrowserGym high-level actions the agent may use (``noop`` always).
        task_kwargs: extra arguments of every BrowserGym task (for MiniWoB++, ``base_url`` is
            this process's file server unless given here or in ``$MINIWOB_URL``).
        call_timeout_s: how long one BrowserGym call (reset, step) may take before the episode
            is ended as the environment's fault.
    """

    id = "browsergym"

    def __init__(
        self,
        *,
        max_steps: int = 30,
        max_attempts: int | None = None,
        budget: int = 6000,
        actions: Sequence[str] = DEFAULT_ACTIONS,
        task_kwargs: dict[str, Any] | None = None,
        call_timeout_s: float = 120.0,
    ) -> None:
        del max_attempts  # the rollout passes its per-episode budget to every environment; steps bound these
        self.max_steps = max_steps
        self.budget = budget
        self.actions = tuple(actions)
        if self.actions != DEFAULT_ACTIONS:
            with contextlib.suppress(ImportError):  # without BrowserGym, reset says what to install
                _check_actions(self.actions)
        self.task_kwargs = dict(task_kwargs or {})
        self.call_timeout_s = call_timeout_s
        self._worker: _Worker | None = None
        self._gym: Any = None  # the BrowserGym env, touched only on the worker thread
        self._gym_id: str | None = None
        self._server: Any = None  # the MiniWoB++ file server this episode's pages come from, when ours
        self._steps = 0

    async def reset(self, task: Task, *, seed: int | None = None) -> Observation:
        """Make (or reuse) the task's BrowserGym env on the worker thread, reset it, and observe."""
        env_id = task.payload.get("env_id")
        if (
            task.payload.get("kind") != "browsergym"
            or not isinstance(env_id, str)
            or not env_id.startswith("browsergym/")
        ):
            raise TaskDataError(f"task {task.id!r} is not a BrowserGym task: its payload needs env_id 'browsergym/...'")
        if seed is None:
            seed = int(task.payload.get("seed", 0))
        if self._worker is None:
            self._worker = _Worker(f"browsergym-{id(self):x}")
        self._steps = 0
        obs, _info = await self._call(lambda: self._reset(env_id, seed))
        return self._observation(obs)

    async def step(self, action: Action) -> StepResult:
        """Read one action call from ``action.text`` and play it in BrowserGym."""
        if self._gym is None:
            raise RuntimeError("step() before reset()")
        self._steps += 1
        self._check_server()
        try:
            call, parse_error = parse_action(action.text, self.actions), None
        except ActionError as e:  # BrowserGym rejects the text too, without acting; the page is observed again
            call, parse_error = action.text, str(e)
        obs, reward, terminated, truncated, info = await self._call(lambda: self._step(call))
        self._check_server()
        full = parse_error or obs["last_action_error"]
        error = full.strip().splitlines()[0][:300] if full.strip() else None  # not Playwright's call log
        truncated = bool(truncated) or (not terminated and self._steps >= self.max_steps)
        out = {"action": call, "task_info": info.get("task_info", {})}
        if error:
            out["error"] = full
        return StepResult(self._observation(obs, error), float(reward), bool(terminated), truncated, out)

    async def close(self) -> None:
        """Close BrowserGym's browser and stop the worker thread and its Playwright."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        done = worker.submit(self._close)
        with contextlib.suppress(Exception):  # a worker stuck in a hung call is abandoned (a daemon thread)
            await asyncio.wait_for(asyncio.wrap_future(done), self.call_timeout_s)
        worker.stop()

    # -- on the worker thread ------------------------------------------------------------------

    def _reset(self, env_id: str, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        import gymnasium as gym

        benchmark = env_id.removeprefix("browsergym/").split(".", 1)[0]
        _import_benchmark(benchmark, EnvironmentUnavailableError)
        _adapt_browsergym()
        if self._gym_id != env_id:
            self._close_gym()
            self._gym = gym.make(
                env_id,
                task_kwargs=self._task_kwargs(benchmark),
                headless=True,
                pw_chromium_kwargs=_chromium_kwargs(),
                action_mapping=_action_set(self.actions).to_python_code,
            )
            self._gym_id = env_id
        try:
            return self._gym.reset(seed=seed)  # type: ignore[no-any-return]
        except Exception as e:
            fault = _fault(e, self._gym, "reset")
            self._close_gym()  # half set up: the next reset makes a new one
            raise fault from e

    def _step(self, call: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        try:
            return self._gym.step(call)  # type: ignore[no-any-return]
        except Exception as e:  # the action's own errors are caught by BrowserGym: this is not the agent's
            raise _fault(e, self._gym, "step") from e

    def _task_kwargs(self, benchmark: str) -> dict[str, Any]:
        kwargs = dict(self.task_kwargs)
        self._server = None
        if benchmark == "miniwob" and "base_url" not in kwargs and not os.environ.get("MINIWOB_URL"):
            from environments.web.miniwob import file_server

            origin, self._server = file_server()
            kwargs["base_url"] = f"{origin}/miniwob/"
        return kwargs

    def _close_gym(self) -> None:
        gym_env, self._gym, self._gym_id = self._gym, None, None
        if gym_env is not None:
            with contextlib.suppress(Exception):  # a browser that already died
                gym_env.close()

    def _close(self) -> None:
        self._close_gym()
        pw = getattr(_THREAD, "playwright", None)
        if pw is not None:
            _THREAD.playwright = None
            with contextlib.suppress(Exception):
                pw.stop()

    # -- on the event loop ---------------------------------------------------------------------

    async def _call(self, fn: Callable[[], T]) -> T:
        assert self._worker is not None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(self._worker.submit(fn)), self.call_timeout_s)
        except TimeoutError:
            raise EnvironmentUnavailableError(
                f"BrowserGym did not answer within {self.call_timeout_s:g} s (call_timeout_s); the episode cannot go on"
            ) from None

    def _check_server(self) -> None:
        if self._server is not None and not self._server.alive:
            raise EnvironmentUnavailableError(
                "the MiniWoB++ file server stopped during this episode, so it cannot go on; "
                "the next episode starts a new server"
            )

    def _observation(self, obs: dict[str, Any], error: str | None = None) -> Observation:
        from browsergym.utils.obs import flatten_axtree_to_str

        tree = flatten_axtree_to_str(
            obs["axtree_object"], extra_properties=obs["extra_element_properties"], with_clickable=True
        )
        cut = len(tree) > self.budget
        if cut:
            tree = tree[: self.budget].rsplit("\n", 1)[0] + "\n… (the page goes on; scroll to see more)"
        head = f"Goal: {obs['goal']}\nURL: {obs['url']}\n"
        urls, titles = obs["open_pages_urls"], obs["open_pages_titles"]
        if len(urls) > 1:
            active = int(obs["active_page_index"][0])
            head += "Tabs:\n" + "".join(
                f"  {i}{' (active)' if i == active else ''}: {t} {u}\n"
                for i, (t, u) in enumerate(zip(titles, urls, strict=True))
            )
        text = (f"Error: {error}\n" if error else "") + head + "\n" + tree
        data: dict[str, Any] = {"url": obs["url"], "goal": obs["goal"], "cut": cut}
        if error:
            data["error"] = error
        return Observation(text=text, data=data)


def _fault(e: Exception, gym_env: Any, when: str) -> Exception:
    """A BrowserGym exception as this project's error: Chromium that did not start or died, or BrowserGym's own."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    if "BrowserType.launch" in str(e):
        return BrowserUnavailableError(
            f"BrowserGym could not launch Chromium ({_chromium_kwargs().get('executable_path') or 'Playwright-managed'}): "
            f"{first}; install it with 'apt-get install chromium' or set AUTODIDACT_CHROMIUM"
        )
    browser = getattr(gym_env.unwrapped, "browser", None) if gym_env is not None else None
    if browser is not None and not browser.is_connected():
        return BrowserUnavailableError(f"Chromium died during this episode's {when}, so it cannot go on")
    return EnvironmentUnavailableError(f"BrowserGym failed during {when}: {type(e).__name__}: {first}")


def _chromium_kwargs() -> dict[str, Any]:
    from environments.web.browser import chromium_path

    path = chromium_path()
    return {"executable_path": path} if path else {}


def _check_actions(actions: Sequence[str]) -> None:
    unknown = sorted(set(actions) - set(_action_params()))
    if unknown:
        raise ConfigError(f"actions: BrowserGym has no action {unknown}; it has {', '.join(sorted(_action_params()))}")


@functools.cache
def _action_set(actions: tuple[str, ...]) -> Any:
    """BrowserGym's action set of ``actions`` (one call per step; its lenient parser)."""
    from browsergym.core.action import functions
    from browsergym.core.action.highlevel import HighLevelActionSet

    _check_actions(actions)
    return HighLevelActionSet(
        subsets=["custom"], custom_actions=[getattr(functions, a) for a in actions], multiaction=False
    )


_THREAD = threading.local()


def _thread_playwright() -> Any:
    """This thread's sync Playwright, started on first use (stopped by the environment's close)."""
    pw = getattr(_THREAD, "playwright", None)
    if pw is None:
        from playwright.sync_api import sync_playwright

        pw = _THREAD.playwright = sync_playwright().start()
    return pw


class _MemoryChat:
    """BrowserGym's chat without its window: the messages its env and tasks read, kept in a list."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.messages: list[dict[str, Any]] = []

    def add_message(self, role: str, msg: str) -> None:
        if role not in ("user", "user_image", "assistant", "info", "infeasible"):
            raise ValueError(f"Invalid role: {role}")
        if role != "info":  # as BrowserGym's Chat: info messages are shown, not kept
            self.messages.append({"role": role, "timestamp": time.time(), "message": msg})

    def wait_for_user_message(self) -> None:
        raise RuntimeError("no chat window to wait on: BrowserGym's wait_for_user_message is not supported here")

    def close(self) -> None:
        pass


def _adapt_browsergym() -> None:
    """Point BrowserGym's env at a per-thread Playwright and a windowless chat (idempotent).

    BrowserGym's ``_get_global_playwright`` starts one sync Playwright for the whole process,
    which fails on every thread but the first; its ``Chat`` launches a second Chromium per
    episode (without the ``executable_path`` its browser gets) to show a person the messages.
    """
    import browsergym.core.env as bg_env

    bg_env._get_global_playwright = _thread_playwright
    bg_env.Chat = _MemoryChat


class _Worker:
    """One daemon thread running an environment's calls in order (a hung call never blocks exit)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._calls.put((fn, future))
        return future

    def stop(self) -> None:
        self._calls.put(None)

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            fn, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as e:
                    future.set_exception(e)
