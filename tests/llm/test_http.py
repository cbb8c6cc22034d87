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

from agents.llm.http import HTTPClient, HTTPTransportError, ResponseTooLargeError

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


def recorder(seen: list[bytes]) -> Handler:
    """Answer ``{}`` to one request and keep the raw request in ``seen``."""

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        req = await read_request(reader)
        assert req is not None
        seen.append(req)
        writer.write(sized(b"{}"))
        await writer.drain()

    return record


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
    record = recorder(seen)

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


# --- adversarial servers: each answers in a way a strict client must not misread ---------------


def handler(*answers: bytes, then_close: bool = False) -> Handler:
    """Answer the k-th request on a connection with ``answers[k]`` (raw bytes), then wait or close."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for raw in answers:
            if await read_request(reader) is None:
                return
            writer.write(raw)
            await writer.drain()
        if not then_close:
            await reader.read()  # until the client closes

    return answer


async def test_interim_1xx_answers_are_skipped_and_leave_nothing_for_the_next_request() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    cont = b"HTTP/1.1 100 Continue\r\n\r\n"
    async with running(handler(early + sized(b'{"answer": 1}'), cont + early + sized(b'{"answer": 2}'))) as (s, url):
        client = HTTPClient(url)
        first = await client.request("POST", "/c", {})
        second = await client.request("POST", "/c", {})
        assert (first.status, first.json()) == (200, {"answer": 1})  # not the 103, with an empty body
        assert second.json() == {"answer": 2}  # not the first request's body, left in the socket
        assert s.connections == 1
    async with running(handler(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")) as (_, url):
        with pytest.raises(HTTPTransportError, match="switched protocols"):
            await HTTPClient(url).request("GET", "/x")


@pytest.mark.parametrize(
    ("length", "problem"),
    [("abc", "malformed Content-Length"), ("-5", "malformed Content-Length"), ("5, 6", "malformed Content-Length")],
)
async def test_a_bad_content_length_raises_a_transport_error(length: str, problem: str) -> None:
    raw = f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n{{}}".encode()
    async with running(handler(raw)) as (_, url):
        with pytest.raises(HTTPTransportError, match=problem):
            await HTTPClient(url).request("GET", "/x")


async def test_a_repeated_equal_content_length_and_a_missing_one_are_read() -> None:
    async with running(handler(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}")) as (_, url):
        assert (await HTTPClient(url).request("GET", "/x")).json() == {}
    async with running(handler(b'HTTP/1.1 200 OK\r\n\r\n{"to": "close"}', then_close=True)) as (s, url):
        client = HTTPClient(url)
        assert (await client.request("GET", "/x")).json() == {"to": "close"}
        assert client._idle == []  # its end was the close: nothing to reuse
        assert (await client.request("GET", "/x")).json() == {"to": "close"}
        assert s.connections == 2


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n0\r\n\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n", "did not end where"),
        (b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n  b\r\nContent-Length: 2\r\n\r\n{}", "malformed response header"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 2\r\n\r\n{}", "malformed response header"),
        (b"HTTP/2 200\r\nContent-Length: 2\r\n\r\n{}", r"not an HTTP/1\.x response"),
    ],
)
async def test_malformed_framing_raises_a_transport_error(raw: bytes, problem: str) -> None:
    async with running(handler(raw)) as (_, url):
        with pytest.raises(HTTPTransportError, match=problem):
            await HTTPClient(url).request("GET", "/x")


async def test_header_injection_is_refused_without_echoing_the_value() -> None:
    with pytest.raises(ValueError, match="'Authorization' holds a line break") as e:
        HTTPClient("http://127.0.0.1:9/v1", headers={"Authorization": "Bearer sk-secret\r\nX-Evil: 1"})
    assert "sk-secret" not in str(e.value)
    for bad in ({"X-Evil\r\nA": "1"}, {"": "1"}, {"A": "nul\x00"}):
        with pytest.raises(ValueError, match="header"):
            HTTPClient("http://127.0.0.1:9/v1", headers=bad)
    with pytest.raises(ValueError, match="bad request line"):
        await HTTPClient("http://127.0.0.1:9/v1").request("GET", "/x HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET /")


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
async def test_an_ipv6_base_url_sends_a_bracketed_host() -> None:
    seen: list[bytes] = []
    record = recorder(seen)

    server = Server(record)
    srv = await asyncio.start_server(server.serve, "::1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        assert (await HTTPClient(f"http://[::1]:{port}/v1").request("GET", "/models")).status == 200
    finally:
        srv.close()
    assert f"Host: [::1]:{port}".encode() in seen[0].split(b"\r\n")
    assert HTTPClient("http://[::1]/v1")._head.startswith("Host: [::1]\r\n")  # the default port is left out


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",  # refused from the header, nothing read
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"200\r\n" + b"x" * 512 + b"\r\n" * 1 + b"400\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 5000,
    ],
    ids=["sized", "chunked", "to-close"],
)
async def test_an_oversized_body_is_refused_with_a_clear_error(raw: bytes) -> None:
    async with running(handler(raw, then_close=True)) as (_, url):
        with pytest.raises(ResponseTooLargeError, match=r"over this client's limit of 1000 bytes \(max_body_bytes\)"):
            await HTTPClient(url, max_body_bytes=1000).request("GET", "/x")


async def test_a_server_that_stalls_mid_body_is_cut_by_the_callers_timeout_and_its_connection_dropped() -> None:
    async def stall_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 1:
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"part')
            await writer.drain()
            await reader.read()  # stalls until the client hangs up
            return
        writer.write(sized(b'{"whole": true}'))
        await writer.drain()

    async with running(stall_once) as (server, url):
        client = HTTPClient(url)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.request("GET", "/x")
        assert client._idle == []
        assert (await client.request("GET", "/x")).json() == {"whole": True}  # on a new connection
        assert server.connections == 2


async def test_a_server_that_closes_after_the_headers_raises() -> None:
    async with running(handler(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", then_close=True)) as (_, url):
        with pytest.raises(HTTPTransportError, match="broke"):
            await HTTPClient(url).request("GET", "/x")
    async with running(handler(b"HTTP/1.1 200 OK\r\nContent-Len", then_close=True)) as (_, url):
        with pytest.raises(HTTPTransportError, match="in the middle of a response header"):
            await HTTPClient(url).request("GET", "/x")


async def test_a_post_is_not_resent_when_a_kept_alive_connection_closes_before_answering() -> None:
    requests: list[bytes] = []

    async def answer_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while (req := await read_request(reader)) is not None:
            requests.append(req)
            if len(requests) % 2 == 0:  # every second request is seen, then the server goes away
                return
            writer.write(sized(json.dumps({"n": len(requests)}).encode()))
            await writer.drain()

    async with running(answer_then_drop) as (_, url):
        client = HTTPClient(url)
        await client.request("POST", "/load", {})
        with pytest.raises(HTTPTransportError, match="the POST may have reached it, so it was not sent again"):
            await client.request("POST", "/load", {})
        assert len(requests) == 2
        await client.request("POST", "/load", {})  # a new connection: request 3
        assert (await client.request("POST", "/c", {}, idempotent=True)).json() == {"n": 5}  # 4 dropped, resent as 5
        assert len(requests) == 5


async def test_idle_connections_expire() -> None:
    async with running(echo_forever) as (server, url):
        client = HTTPClient(url, keepalive_s=0.0)
        await client.request("GET", "/x")
        await client.request("GET", "/x")
        assert server.connections == 2
    hinted = sized(b"{}", "Keep-Alive: timeout=1\r\n")  # the server keeps idle connections 1 s: reuse none
    async with running(handler(hinted, hinted)) as (server, url):
        client = HTTPClient(url)
        await client.request("GET", "/x")
        await client.request("GET", "/x")
        assert server.connections == 2
