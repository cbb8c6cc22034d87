"""A rollout over HTTP: `autodidact serve` with the real embedded model, faults injected in front of it.

One task's requests always get a 500, another's hang past the client's timeout; the run records
those episodes with their errors and finishes the rest.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from agents.llm.base import ChatModel
from agents.llm.openai_compat import OpenAIChatModel
from agents.llm.server import create_app, running_app
from agents.rollout import RunConfig, run_rollout
from autodidact.types import SamplingParams
from environments.tasks import load_suite
from memory.base import TrajectoryQuery, open_store

pytestmark = pytest.mark.slow


async def test_run_over_http_records_500s_and_timeouts_and_goes_on(embedded_model: ChatModel, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tasks = load_suite("bundled", split="train", limit=4)
    broken, hanging = tasks[1].payload["entry_point"], tasks[2].payload["entry_point"]
    app = create_app(embedded_model, "embedded")
    hits = {"500": 0, "hang": 0}
    served: list[str] = []  # the thread of each request that reached the model

    @app.middleware("http")
    async def faults(request: Request, call_next):  # type: ignore[no-untyped-def]
        if request.url.path.endswith("/chat/completions"):
            prompt = json.loads(await request.body())["messages"][-1]["content"]
            if f"`{broken}(" in prompt:
                hits["500"] += 1
                return JSONResponse({"error": {"message": "injected fault", "code": 500}}, status_code=500)
            if f"`{hanging}(" in prompt:
                hits["hang"] += 1
                while not await request.is_disconnected():  # hang until the client gives up
                    await asyncio.sleep(0.1)
                return Response(status_code=504)
            served.append(threading.current_thread().name)
        return await call_next(request)

    with running_app(app) as root:
        # 20 s: a healthy answer of 32 tokens takes ~1 s, but CI machines can be slow and loaded
        model = OpenAIChatModel(base_url=root + "/v1", model="embedded", timeout_s=20.0, max_retries=1, backoff_s=0.01)
        with open_store(str(tmp_path / "s.db")) as store:
            result = await run_rollout(
                RunConfig(concurrency=4, sampling=SamplingParams(max_tokens=32, stop=("\n```\n",))),
                model,
                store,
                tasks=tasks,
                progress=False,
            )
            stored = {t.task.id: t for t in store.query(TrajectoryQuery(run_id=result.run_id))}
        await model.aclose()
    assert len(stored) == 4 and hits == {"500": 2, "hang": 2}  # one retry each
    # the server's thread ran the embedded model for every step of the healthy episodes; this loop only drove the client
    steps = sum(len(stored[ok.id].steps) for ok in (tasks[0], tasks[3]))
    assert steps and served == [f"uvicorn-{root.rsplit(':', 1)[1]}"] * steps
    assert "returned 500 after 2 attempts" in (stored[tasks[1].id].error or "")
    assert "did not answer within 20s" in (stored[tasks[2].id].error or "")
    for ok in (tasks[0], tasks[3]):
        t = stored[ok.id]
        assert t.error is None and t.steps[0].completion and t.steps[0].observation is not None
        assert t.steps[0].logprobs and t.steps[0].token_ids  # served with logprobs and token ids
