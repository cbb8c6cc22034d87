"""A small asyncio HTTP/1.1 client for JSON APIs: a keep-alive connection pool, TLS, no more.

:class:`~agents.llm.openai_compat.OpenAIChatModel` sends every model call through it. It is
kept, rather than a library, because it costs less client CPU per request than aiohttp (2.6x
less) and httpx (8–130x less) at 1, 8 and 64 requests in flight against the same local server
(``benchmarks/http_client.py``), and at 64 episodes in flight the client's CPU, not the model,
had bounded the rollout rate. Being small, it is also strict:

* **Framing.** Bodies sized by ``Content-Length`` (digits only; repeated values must agree),
  sent ``chunked`` (hex sizes only, each chunk's CRLF checked), or ended by the server closing
  the connection. Interim ``1xx`` answers (``100 Continue``, ``103 Early Hints``) are read and
  dropped, so the final answer is the one returned and nothing is left in the socket for the
  next request. Anything malformed raises :class:`HTTPTransportError` and closes the connection.
* **Limits.** A header block over 64 KiB and a body over ``max_body_bytes`` (default 64 MiB)
  raise; an oversized body raises :class:`ResponseTooLargeError`, which is not worth retrying.
* **Headers.** Names must be HTTP tokens and values free of CR, LF and other control
  characters (an API key holding ``\\r\\n`` cannot inject a header): :class:`ValueError` at
  construction, never naming the value. IPv6 hosts are bracketed in ``Host``.
* **Keep-alive.** At most ``max_connections`` open; idle ones are reused for ``keepalive_s``
  (4 s, under uvicorn's and vLLM's 5 s; a server's ``Keep-Alive: timeout=N`` lowers it) and
  dropped after. A kept-alive connection that the server closed before answering is resent
  on a new connection only for an idempotent request (GET, or a caller that says so): the
  server may have seen a POST. A cancelled request (a caller's timeout) closes its connection.

What it does not do: proxies (``HTTP(S)_PROXY`` are not read), redirects, compression,
HTTP/2, streaming, timeouts of its own (callers wrap requests in ``asyncio.timeout``). HTTP
error statuses are responses like any other.

Example:
    >>> client = HTTPClient("http://127.0.0.1:8000/v1")  # doctest: +SKIP
    >>> resp = await client.request("POST", "/chat/completions", {"model": "m", "messages": []})  # doctest: +SKIP
    >>> resp.status, resp.json()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_MAX_HEADER_BYTES = 64 * 1024
_MAX_TRAILER_LINES = 64
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed in a header value
_NOT_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(r"[0-9A-Fa-f]{1,15}")
_KEEPALIVE_TIMEOUT = re.compile(r"(?:^|,)\s*timeout\s*=\s*([0-9]{1,6})", re.IGNORECASE)


class HTTPTransportError(OSError):
    """The request did not get a whole response: no connection, a reset, a malformed answer."""


class ResponseTooLargeError(HTTPTransportError):
    """The response body is larger than the client's ``max_body_bytes``."""


class _ClosedBeforeAnswer(Exception):
    """The connection failed before the first byte of a response (a write failed, or EOF/reset on read)."""


@dataclass(frozen=True)
class Response:
    """A whole response: status, headers (names in lower case) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not JSON)."""
        return json.loads(self.body)


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    expires: float = 0.0  # monotonic time after which an idle connection is not reused

    def close(self) -> None:
        self.writer.close()


class HTTPClient:
    """Requests to one server (``base_url``: scheme, host, port and a path prefix).

    A client and its connections belong to the event loop that first used it.

    Args:
        base_url: ``http://`` or ``https://`` URL; its path is prefixed to every request's.
        max_connections: Connections open at most (requests beyond wait for one).
        headers: Sent with every request (e.g. ``Authorization``).
        max_body_bytes: A larger response body raises :class:`ResponseTooLargeError`.
        keepalive_s: How long an idle connection is reused.

    Raises:
        ValueError: A URL that is not http(s), or a header name or value that would break the
            request (control characters, CR/LF).
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 64,
        headers: dict[str, str] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        keepalive_s: float = 4.0,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"{base_url!r} is not an http:// or https:// URL")
        if _NOT_IN_TARGET.search(url.path):
            raise ValueError(f"the path of {base_url!r} holds spaces or control characters; percent-encode them")
        self.host = url.hostname
        self.tls = url.scheme == "https"
        self._ssl = ssl.create_default_context() if self.tls else None  # loading the CA store is slow: once
        try:
            self.port = url.port or (443 if self.tls else 80)
        except ValueError as e:  # urlsplit parses the port lazily
            raise ValueError(f"{base_url!r} has a bad port: {e}") from None
        self.prefix = url.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        netloc = host if self.port == (443 if self.tls else 80) else f"{host}:{self.port}"
        for name, value in (headers or {}).items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP token")
            if _CONTROL.search(value):
                raise ValueError(f"the value of header {name!r} holds a line break or control character")
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head = f"Host: {netloc}\r\nUser-Agent: autodidact\r\nAccept: application/json\r\n{extra}"
        self.max_body_bytes = max_body_bytes
        self.keepalive_s = keepalive_s
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def request(self, method: str, path: str, body: Any = None, *, idempotent: bool | None = None) -> Response:
        """Send ``body`` (as JSON, when given) to ``prefix + path``; the whole response.

        Args:
            method: ``GET``, ``POST``…
            path: Starts with ``/``; appended to the base URL's path.
            body: Sent as JSON when not ``None``.
            idempotent: Whether sending it twice is harmless, so that it may be resent when a
                kept-alive connection turns out closed. ``None``: by method (GET, HEAD, PUT,
                DELETE, OPTIONS are; POST is not).

        Raises:
            HTTPTransportError: no connection, the connection broke, or the answer was not HTTP.
            ResponseTooLargeError: the body is larger than ``max_body_bytes``.
        """
        if not _TOKEN.fullmatch(method) or not path.startswith("/") or _NOT_IN_TARGET.search(path):
            raise ValueError(f"bad request line: {method!r} {path!r}")
        resend = method in _IDEMPOTENT if idempotent is None else idempotent
        payload = b"" if body is None else json.dumps(body).encode()
        kind = "Content-Type: application/json\r\n" if body is not None else ""
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n{self._head}{kind}Content-Length: {len(payload)}\r\n\r\n"
        message = head.encode("latin-1") + payload
        async with self._slots:
            while True:
                conn, reused = await self._connection()
                try:
                    try:
                        conn.writer.write(message)
                        await conn.writer.drain()
                    except OSError as e:
                        raise _ClosedBeforeAnswer from e
                    response, keep_s = await _read_response(conn.reader, method, self.max_body_bytes)
                except _ClosedBeforeAnswer:
                    conn.close()
                    if reused and resend:  # a kept-alive connection the server had closed
                        continue
                    if reused:
                        raise HTTPTransportError(
                            f"{self.host}:{self.port} closed a kept-alive connection before answering; "
                            f"the {method} may have reached it, so it was not sent again"
                        ) from None
                    raise HTTPTransportError(
                        f"{self.host}:{self.port} closed the connection without answering"
                    ) from None
                except HTTPTransportError:
                    conn.close()
                    raise
                except (OSError, asyncio.IncompleteReadError) as e:
                    conn.close()
                    raise HTTPTransportError(f"connection to {self.host}:{self.port} broke: {e}") from e
                except BaseException:  # cancelled (a caller's timeout): the connection's state is unknown
                    conn.close()
                    raise
                if keep_s is not None and not self._closed:
                    conn.expires = time.monotonic() + min(self.keepalive_s, keep_s)
                    self._idle.append(conn)
                else:
                    conn.close()
                return response

    async def _connection(self) -> tuple[_Connection, bool]:
        """An idle connection (reused: True) or a new one."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now < conn.expires and not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn, True
            conn.close()
        try:
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self._ssl,
                limit=_MAX_HEADER_BYTES,
            )
        except OSError as e:
            raise HTTPTransportError(f"cannot connect to {self.host}:{self.port}: {e}") from e
        return _Connection(reader, writer), False

    async def aclose(self) -> None:
        """Close idle connections; connections in use close when their request ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


async def _read_head(reader: asyncio.StreamReader, first: bool) -> bytes:
    """A status line and headers, up to the blank line."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if first and not e.partial:
            raise _ClosedBeforeAnswer from None
        raise HTTPTransportError("the server closed the connection in the middle of a response header") from None
    except ConnectionResetError as e:
        if first:
            raise _ClosedBeforeAnswer from e
        raise
    except asyncio.LimitOverrunError:
        raise HTTPTransportError(f"response header longer than {_MAX_HEADER_BYTES} bytes") from None


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    """HTTP version, status and headers (lower-case names; repeated ones joined with ", ")."""
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit() or rest[3:4] not in ("", " "):
        raise HTTPTransportError(f"not an HTTP/1.x response: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):  # no colon, or a folded line (starts with a space)
            raise HTTPTransportError(f"malformed response header line: {line[:80]!r}")
        name = name.lower()
        value = value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return version, int(code), headers


def _content_length(raw: str) -> int:
    """``Content-Length``: digits only; a repeated header (``5, 5``) must repeat one value."""
    values = {v.strip() for v in raw.split(",")}
    if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
        raise HTTPTransportError(f"malformed Content-Length: {raw[:40]!r}")
    return int(values.pop())


def _too_large(size: int, limit: int) -> ResponseTooLargeError:
    return ResponseTooLargeError(
        f"response body of {size} bytes or more is over this client's limit of {limit} bytes (max_body_bytes); "
        "ask for less (lower max_tokens or logprobs) or raise the limit"
    )


async def _read_response(reader: asyncio.StreamReader, method: str, limit: int) -> tuple[Response, float | None]:
    """One final response from ``reader``, and how long its connection may stay idle (``None``: close it)."""
    first = True
    while True:
        version, status, headers = _parse_head(await _read_head(reader, first))
        first = False
        if status >= 200:
            break
        if status == 101:
            raise HTTPTransportError("the server switched protocols (101 Switching Protocols), which was not asked")
        # 100 Continue, 103 Early Hints…: interim answers without a body; the final one follows.
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep = version == "HTTP/1.1" and "close" not in tokens
    encoding = headers.get("transfer-encoding")
    if method == "HEAD" or status in (204, 304):
        body = b""
    elif encoding is not None:
        if encoding.rsplit(",", 1)[-1].strip().lower() == "chunked":
            body = await _read_chunked(reader, limit)
        else:  # another final coding: the body ends when the server closes
            body = await _read_to_close(reader, limit)
        keep = keep and "content-length" not in headers  # both framings: a request-smuggling smell
    elif "content-length" in headers:
        size = _content_length(headers["content-length"])
        if size > limit:
            raise _too_large(size, limit)
        body = await reader.readexactly(size)
    else:
        body = await _read_to_close(reader, limit)
        keep = False
    keep_s = None
    if keep:
        match = _KEEPALIVE_TIMEOUT.search(headers.get("keep-alive", ""))
        keep_s = float("inf") if match is None else max(int(match.group(1)) - 1.0, 0.0)
    return Response(status, headers, body), keep_s


async def _read_to_close(reader: asyncio.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while chunk := await reader.read(65536):
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        parts.append(chunk)
    return b"".join(parts)


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise HTTPTransportError(f"chunked body line longer than {_MAX_HEADER_BYTES} bytes") from None


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = await _read_line(reader)
        raw = line[:-2].split(b";", 1)[0].strip(b" \t")
        if not _HEX.fullmatch(raw.decode("latin-1")):
            raise HTTPTransportError(f"malformed chunk size line {line[:40]!r}")
        size = int(raw, 16)
        if size == 0:
            for _ in range(_MAX_TRAILER_LINES):  # trailers, then the blank line
                if await _read_line(reader) == b"\r\n":
                    return b"".join(parts)
            raise HTTPTransportError(f"more than {_MAX_TRAILER_LINES} trailer lines after a chunked body")
        total += size
        if total > limit:
            raise _too_large(total, limit)
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != b"\r\n":
            raise HTTPTransportError("a chunk of a chunked body did not end where its size said")
        parts.append(chunk[:-2])
