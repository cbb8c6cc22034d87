"""Client CPU per request of the model client's HTTP layer: aiohttp, httpx, and the hand-written client.

The question (issue 20): the OpenAI-compatible backend needs an asyncio HTTP/1.1 client with
keep-alive. A well-kept library is safer than our own parser; is it fast enough? Each client
sends the same chat-completions POST (a JSON body, a ~600-byte JSON answer parsed) to the same
local server at 1, 8 and 64 requests in flight, and the *client process's* CPU time
(``time.process_time``: every thread of this process, the server excluded) is divided by the
requests sent. The server is a raw asyncio loop in its own process, so its CPU is not counted.
Clients are measured in turns, ``--repeats`` times, and the median is printed with its ratio to
the fastest client of that row, so a noisy neighbour moves all columns alike.

The rule it decides (issue 20): use aiohttp if it is within 1.3x of the hand-written client
(:mod:`agents.llm.http`), else keep ours. Measured on 2 cores: aiohttp 2.5–3.5x, httpx 15–63x
(README, "Performance"), so the hand-written client stays.

Run (about a minute on 2 cores):

    .venv/bin/python benchmarks/http_client.py
    .venv/bin/python benchmarks/http_client.py --requests 4000 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

REQUEST = {
    "model": "policy",
    "messages": [
        {"role": "system", "content": "You write Python."},
        {"role": "user", "content": "Write a function add(a, b) that returns a + b."},
    ],
    "temperature": 0.8,
    "max_tokens": 128,
    "logprobs": True,
}
ANSWER = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "policy",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "```python\ndef add(a, b):\n    return a + b\n```"},
                "logprobs": {"content": [{"token": "x", "logprob": -0.1}] * 8},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 31, "completion_tokens": 16, "total_tokens": 47},
    }
).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(ANSWER)).encode()
    + b"\r\n\r\n"
    + ANSWER
)


def _serve(sock: socket.socket) -> None:
    """A keep-alive HTTP/1.1 server that answers every request with ``RESPONSE`` (its own process)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=sock, backlog=512)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


Send = Callable[[], Awaitable[Any]]


async def _aiohttp(url: str, inflight: int) -> tuple[Send, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight))

    async def send() -> Any:
        async with session.post(url, json=REQUEST) as resp:
            return json.loads(await resp.read())

    return send, session.close


async def _httpx(url: str, inflight: int) -> tuple[Send, Callable[[], Awaitable[None]]]:
    import httpx

    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight))

    async def send() -> Any:
        resp = await client.post(url, json=REQUEST)
        return resp.json()

    return send, client.aclose


async def _hand_written(url: str, inflight: int) -> tuple[Send, Callable[[], Awaitable[None]]]:
    from agents.llm.http import HTTPClient

    client = HTTPClient(url.rsplit("/chat/completions", 1)[0], max_connections=inflight)

    async def send() -> Any:
        return (await client.request("POST", "/chat/completions", REQUEST)).json()

    return send, client.aclose


CLIENTS = {"aiohttp": _aiohttp, "httpx": _httpx, "hand-written": _hand_written}


async def _measure(kind: str, url: str, inflight: int, requests: int) -> float:
    """Client CPU microseconds per request, ``inflight`` requests at a time, after a warm-up."""
    send, close = await CLIENTS[kind](url, inflight)
    per_worker = max(1, requests // inflight)

    async def worker(n: int) -> None:
        for _ in range(n):
            answer = await send()
            assert answer["choices"][0]["finish_reason"] == "stop"

    try:
        await asyncio.gather(*(worker(4) for _ in range(inflight)))  # open the connections, warm caches
        t0 = time.process_time()
        await asyncio.gather(*(worker(per_worker) for _ in range(inflight)))
        cpu = time.process_time() - t0
    finally:
        await close()
    return cpu / (per_worker * inflight) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2048, help="requests per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per client and row (median)")
    parser.add_argument("--inflight", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/chat/completions"
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,), daemon=True)
    server.start()
    try:
        print(f"client CPU per request (µs), median of {args.repeats}, {args.requests} requests each")
        kinds = list(CLIENTS)
        print(f"{'in flight':>9} " + " ".join(f"{k:>22}" for k in kinds))
        for inflight in args.inflight:
            runs: dict[str, list[float]] = {k: [] for k in kinds}
            for _ in range(args.repeats):
                for k in kinds:  # in turns, so a noisy moment hits every client
                    runs[k].append(asyncio.run(_measure(k, url, inflight, args.requests)))
            med = {k: statistics.median(v) for k, v in runs.items()}
            best = min(med.values())
            print(f"{inflight:>9} " + " ".join(f"{med[k]:>12.0f} ({med[k] / best:4.2f}x)  " for k in kinds))
    finally:
        server.kill()


if __name__ == "__main__":
    main()
