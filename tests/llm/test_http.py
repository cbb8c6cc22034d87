"""The lean HTTP/1.1 client (agents.llm.http) against raw asyncio servers on 127.0.0.1 that
answer in each way HTTP allows: sized, chunked, closed-delimited; keep-alive, stale, broken."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from agents.llm.http import HTTPClient, HTTPTransportError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Server:
    """Counts connections; ``handler(reader, writer, n)`` answers on the n-th connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.most_open = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(reader, writer, self.connections)
        finally:
            self.open -= 1
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0)
    return head + await reader.readexactly(length)


def sized(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


@asynccontextmanager
async def running(handler: Handler) -> AsyncIterator[tuple[Server, str]]:
    server = Server(handler)
    srv = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}/v1"
    finally:
        srv.close()


async def echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    while (req := await read_request(reader)) is not None:
        body = req.split(b"\r\n\r\n", 1)[1]
        writer.write(sized(json.dumps({"conn": n, "got": json.loads(body or b"null")}).encode()))
        await writer.drain()


async def test_json_round_trips_reuse_one_kept_alive_connection() -> None:
    async with running(echo_forever) as (server, url):
        client = HTTPClient(url, headers={"Authorization": "Bearer k"})
        for i in range(3):
            resp = await client.request("POST", "/chat/completions", {"i": i})
            assert resp.status == 200 and resp.json() == {"conn": 1, "got": {"i": i}}
        assert server.connections == 1
        await client.aclose()


async def test_requests_carry_method_path_host_and_headers() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        req = await read_request(reader)
        assert req is not None
        seen.append(req)
        writer.write(sized(b"{}"))
        await writer.drain()

    async with running(record) as (_, url):
        client = HTTPClient(url, headers={"Authorization": "Bearer k"})
        await client.request("GET", "/models")
    head = seen[0].split(b"\r\n")
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert head[0] == b"GET /v1/models HTTP/1.1" and f"Host: 127.0.0.1:{port}".encode() in head
    assert b"Authorization: Bearer k" in head and b"Content-Length: 0" in head


async def test_chunked_and_close_delimited_bodies_are_read_whole() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(
            b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{"a"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\nX-T: y\r\n\r\n'
        )
        await writer.drain()

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n{"detail": "boom"}')
        await writer.drain()

    async with running(chunked) as (_, url):
        assert (await HTTPClient(url).request("GET", "/x")).json() == {"a": 1}
    async with running(until_close) as (server, url):
        client = HTTPClient(url)
        first = await client.request("GET", "/x")
        assert first.status == 500 and first.json() == {"detail": "boom"}
        await client.request("GET", "/x")
        assert server.connections == 2  # a close-delimited answer's connection is not reused


async def test_a_kept_alive_connection_the_server_closed_is_replaced_once() -> None:
    async def one_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(sized(json.dumps({"conn": n}).encode()))  # says keep-alive, then closes
        await writer.drain()

    async with running(one_per_connection) as (server, url):
        client = HTTPClient(url)
        assert (await client.request("POST", "/c", {})).json() == {"conn": 1}
        await asyncio.sleep(0.05)  # the close reaches the client's idle connection
        assert (await client.request("POST", "/c", {})).json() == {"conn": 2}
        assert server.connections == 2


async def test_transport_failures_raise_with_what_happened() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
        await writer.drain()

    async with running(hang_up) as (_, url):
        with pytest.raises(HTTPTransportError, match="closed the connection without answering"):
            await HTTPClient(url).request("GET", "/x")
    async with running(garbage) as (_, url):
        with pytest.raises(HTTPTransportError, match=r"not an HTTP/1\.x response"):
            await HTTPClient(url).request("GET", "/x")
    async with running(cut) as (_, url):
        with pytest.raises(HTTPTransportError, match="broke"):
            await HTTPClient(url).request("GET", "/x")
    async with running(hang_up) as (_, url):
        pass  # closed: nothing listens there any more
    with pytest.raises(HTTPTransportError, match=r"cannot connect to 127\.0\.0\.1"):
        await HTTPClient(url).request("GET", "/x")
    with pytest.raises(ValueError, match="not an http"):
        HTTPClient("ftp://example.org")


async def test_at_most_max_connections_are_open_and_a_cancelled_request_drops_its_connection() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await read_request(reader) is not None:
            await asyncio.sleep(0.05)
            writer.write(sized(b"{}"))
            await writer.drain()

    async with running(slow) as (server, url):
        client = HTTPClient(url, max_connections=4)
        await asyncio.gather(*(client.request("GET", "/x") for _ in range(16)))
        assert server.most_open == 4 and server.connections == 4
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await client.request("GET", "/x")
        assert len(client._idle) == 3  # the timed-out request's connection was closed, not pooled
        await client.aclose()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_https_verifies_the_server_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    make = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
    subprocess.run([*make.split(), "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = Server(echo_forever)
    srv = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=tls)
    url = f"https://127.0.0.1:{srv.sockets[0].getsockname()[1]}/v1"
    try:
        with pytest.raises(HTTPTransportError, match="CERTIFICATE_VERIFY_FAILED"):  # not trusted yet
            await HTTPClient(url).request("POST", "/c", {"a": 1})
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted through the system's usual variable
        assert (await HTTPClient(url).request("POST", "/c", {"a": 1})).json() == {"conn": 1, "got": {"a": 1}}
    finally:
        srv.close()
