"""A small HTTP/1.1 client for streamed calls: keep-alive connections on asyncio protocols.

A streamed chat completion against nginx (32 tokens, 105 HTTP chunks) cost the client 440
us through aiohttp: 280 after its body was read a network read at a time
(:class:`~engine.llm.chunked.ChunkDecoder`), most of the rest aiohttp's per-request
machinery (request and response objects, payload registry, timers, the body stream).
This module does only what a streamed POST needs, in one ``asyncio.Protocol`` per
connection: one write (request head and body), a head parser, the body decoded per read
(chunked, by length, or to the close) into a buffer the caller drains with
:meth:`Response.readany`. 160 us per request; the streamed grid cell went from 92-94% to
97-98% of the limit (``benchmarks/README.md``).

What it keeps of aiohttp's behaviour, and what it leaves out:

* connections: a pool per origin (``http`` and ``https`` with the system's certificate
  store, hostname checked), at most ``limit`` open (0: no limit, as the client's
  ``max_connections``), idle ones reused most recent first and dropped after 15 s
  (aiohttp's ``keepalive_timeout``); a connection is reused only after a complete body,
  when the server did not ask to close, and never after an error or a cancellation;
* flow control: reading pauses while more than 256 KiB wait for the caller;
* errors are the engine's own, mapped here: connecting fails or the connection drops,
  :class:`~engine.errors.ConnectionLost`; a head that is not HTTP/1.x or too large,
  :class:`~engine.errors.MalformedResponse`; timeouts are the caller's
  (``asyncio.timeout``), and the connect timeout is this pool's;
* not built: redirects (a 3xx is returned as it is, and the client reports it as an
  error), proxies (the aiohttp session does not use them either), cookies, HTTP/2.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from ..clock import Clock, monotonic
from ..errors import ConnectionLost, MalformedResponse
from .chunked import ChunkDecoder, ChunkError
from .http import MESSAGE_CHARS

__all__ = ("Headers", "Pool", "Response")

MAX_HEAD = 64 * 1024  # status line and headers
HIGH_WATER = 256 * 1024  # body bytes waiting for the caller before reading pauses
IDLE_TIMEOUT_S = 15.0  # an idle connection older than this is not reused


class Headers(dict[str, str]):
    """Response headers by lower-case name (repeated ones joined with ", ")."""

    def get(self, name: str, default: Any = None) -> Any:
        """The value of header ``name`` (any case), else ``default``."""
        return super().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


def _identity(text: str) -> str:
    return text


def parse_head(
    head: bytes, endpoint: str, redact: Callable[[str], str] = _identity
) -> tuple[int, bool, Headers]:
    """Status, HTTP/1.1-or-later, and headers of a response head (without its blank line).

    Raises:
        MalformedResponse: not an HTTP/1.x status line, or a header line without a colon
            (the line quoted redacted, then cut: a server may echo a key).
    """
    lines = head.split(b"\n")
    status_line = lines[0].rstrip(b"\r")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        quoted = redact(repr(status_line))[:MESSAGE_CHARS]
        raise MalformedResponse(f"not an HTTP/1.x response: {quoted}", endpoint=endpoint)
    headers = Headers()
    name = ""
    for raw in lines[1:]:
        line = raw.rstrip(b"\r").decode("latin-1")
        if line[:1] in (" ", "\t") and name:  # an obsolete folded continuation
            headers[name] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            quoted = redact(repr(line))[:MESSAGE_CHARS]
            raise MalformedResponse(f"header line without a colon: {quoted}", endpoint=endpoint)
        name = key.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return int(parts[1]), parts[0] != b"HTTP/1.0", headers


class Response:
    """One response: status and headers, then its body as it arrives (framing removed)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.status = 0
        self.headers = Headers()
        self.complete = False  # the whole body arrived
        self._pieces: list[bytes] = []
        self._size = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._pieces.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _end(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self.complete:
            self._error = error
        self._wake()

    async def readany(self) -> bytes:
        """Every body byte that arrived since the last call (waits for some); b"" at the end.

        Raises:
            ConnectionLost: the connection dropped (or the framing broke) before the end.
        """
        while not self._pieces:
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        pieces = self._pieces
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._pieces = []
        self._size = 0
        self._conn.resume()
        return data

    async def read(self) -> bytes:
        """The rest of the body."""
        out = bytearray()
        while data := await self.readany():
            out += data
        return bytes(out)

    def release(self) -> None:
        """Hand the connection back: kept for reuse after a complete body, else closed."""
        self._conn.finish(self)


class Connection(asyncio.Protocol):
    """One keep-alive connection: sends requests, parses their responses."""

    def __init__(
        self,
        endpoint: str,
        on_done: Callable[[Connection, bool], None],
        redact: Callable[[str], str] = _identity,
    ) -> None:
        self.endpoint = endpoint
        self._on_done = on_done
        self._redact = redact
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._response: Response | None = None
        self._head = bytearray()
        self._decoder: ChunkDecoder | None = None
        self._left = -1  # bytes of a length-framed body still to come; -1: not that
        self._until_close = False
        self._keep = False  # the server lets the connection be reused
        self._paused = False
        self.reusable = True

    # ------------------------------------------------------------ asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.reusable = False
        resp = self._response
        if resp is None or resp.complete:
            return
        if self._until_close and self._decoder is None and self._left < 0 and resp.status:
            resp._end()  # a body framed by the close: this is its end
            return
        reason = f": {exc}" if exc else ""
        if resp.status:
            resp._fail(ConnectionLost(f"body cut short{reason}", endpoint=self.endpoint))
        else:
            resp._fail(
                ConnectionLost(f"connection lost before a response{reason}", endpoint=self.endpoint)
            )

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost ends or fails the response

    def data_received(self, data: bytes) -> None:
        resp = self._response
        if resp is None or resp.complete:
            self._drop()  # bytes nobody asked for: the connection is not trustworthy
            return
        try:
            if not resp.status:
                data = self._head_received(resp, data)
                if not resp.status or not data:
                    return
            self._body_received(resp, data)
        except MalformedResponse as exc:
            resp._fail(exc)
            self._drop()
        except ChunkError as exc:  # what arrived is not the rest of the body
            text = self._redact(str(exc))[:MESSAGE_CHARS]
            resp._fail(ConnectionLost(f"body cut short: {text}", endpoint=self.endpoint))
            self._drop()
        except Exception as exc:  # anything else in parsing: the response is unusable
            text = self._redact(f"{type(exc).__name__}: {exc}")[:MESSAGE_CHARS]
            resp._fail(MalformedResponse(f"unreadable response: {text}", endpoint=self.endpoint))
            self._drop()

    # ------------------------------------------------------------ parsing
    def _head_received(self, resp: Response, data: bytes) -> bytes:
        """Take head bytes; the body bytes that followed the head in ``data``."""
        head = self._head
        start = max(0, len(head) - 3)
        head += data
        while True:
            end = head.find(b"\r\n\r\n", start)
            size = 4
            lf = head.find(b"\n\n", start)
            if lf >= 0 and (end < 0 or lf < end):
                end, size = lf, 2
            if end < 0:
                if len(head) > MAX_HEAD:
                    raise MalformedResponse(
                        f"response head over {MAX_HEAD} bytes", endpoint=self.endpoint
                    )
                return b""
            status, http11, headers = parse_head(bytes(head[:end]), self.endpoint, self._redact)
            rest = bytes(head[end + size :])
            head.clear()
            if 100 <= status < 200 and status != 101:  # interim: the real head follows
                head += rest
                start = 0
                continue
            self._frame(resp, status, http11, headers)
            return rest

    def _frame(self, resp: Response, status: int, http11: bool, headers: Headers) -> None:
        """Set the response's status and how its body is delimited."""
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        self._keep = "close" not in tokens if http11 else "keep-alive" in tokens
        coding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        self._decoder, self._left, self._until_close = None, -1, False
        if status in (204, 304):
            self._left = 0
        elif coding is not None:
            if coding.split(",")[-1].strip().lower() == "chunked":
                self._decoder = ChunkDecoder()
            else:
                self._until_close = True
        elif length is not None:
            if not (length.strip().isascii() and length.strip().isdigit()):
                raise MalformedResponse(
                    f"bad Content-Length {length[:40]!r}", endpoint=self.endpoint
                )
            self._left = int(length)
        else:
            self._until_close = True
        resp.status, resp.headers = status, headers
        resp._wake()
        if self._left == 0:
            resp._end()

    def _body_received(self, resp: Response, data: bytes) -> None:
        decoder = self._decoder
        if decoder is not None:
            piece = decoder.feed(data)
            if piece:
                resp._feed(piece)
            if decoder.done:
                if decoder.tail:
                    self.reusable = False
                resp._end()
        elif self._left >= 0:
            take = data if len(data) <= self._left else data[: self._left]
            self._left -= len(take)
            if len(take) < len(data):
                self.reusable = False
            if take:
                resp._feed(take)
            if self._left == 0:
                resp._end()
        else:
            resp._feed(data)

    # ------------------------------------------------------------ use
    def send(self, data: bytes) -> Response:
        """Write one request; its response (status and headers come with :meth:`head`)."""
        assert self.transport is not None and self._response is None
        resp = self._response = Response(self)
        self._head.clear()
        self.transport.write(data)
        return resp

    async def head(self, resp: Response) -> None:
        """Wait for the response's status and headers.

        Raises:
            ConnectionLost: the connection dropped first.
            MalformedResponse: the head was not a valid HTTP/1.x head.
        """
        while not resp.status:
            if resp._error is not None:
                raise resp._error
            resp._waiter = asyncio.get_running_loop().create_future()
            await resp._waiter

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def finish(self, resp: Response) -> None:
        """The caller is done with ``resp``: reuse the connection if it can be, else close."""
        if self._response is not resp:
            return
        self._response = None
        reuse = (
            resp.complete
            and resp._error is None
            and self._keep
            and self.reusable
            and self.transport is not None
            and not self.transport.is_closing()
        )
        if not reuse:
            self._drop()
        self._on_done(self, reuse)

    def _drop(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Keep-alive connections to the origin of ``url`` (see the module docstring).

    Args:
        endpoint: name for errors.
        url: any URL of the origin (scheme, host, port are used).
        limit: most connections open at once (0: no limit).
        connect_timeout_s: deadline for connecting (and the TLS handshake).
        ssl_context: for https (default: the system's certificate store, hostname checked).
        clock: monotonic time (idle connections' age).
        redact: hides secrets in messages quoting what a server sent (before cutting).
    """

    def __init__(
        self,
        endpoint: str,
        url: str,
        *,
        limit: int,
        connect_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
        clock: Clock = monotonic,
        redact: Callable[[str], str] = _identity,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.endpoint = endpoint
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        self._ssl: ssl.SSLContext | None = None
        if self.tls:
            self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._clock = clock
        self._redact = redact
        self._limit = limit
        self._connect_timeout = connect_timeout_s
        self._idle: list[Connection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    @property
    def authority(self) -> str:
        """``host[:port]`` for the Host header (the port only when not the scheme's)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    async def request(self, data: bytes) -> Response:
        """Send ``data`` (a whole request) on a pooled connection; the response, head read.

        The caller must :meth:`Response.release` it (also on error or cancellation).

        Raises:
            ConnectionLost: cannot connect, or the connection dropped before a head.
            MalformedResponse: the head was not a valid HTTP/1.x head.
            TimeoutError: connecting took longer than ``connect_timeout_s``.
        """
        conn = await self._acquire()
        resp = conn.send(data)
        try:
            await conn.head(resp)
        except BaseException:
            resp.release()
            raise
        return resp

    async def _acquire(self) -> Connection:
        if self._closed:
            raise ConnectionLost("the client is closed", endpoint=self.endpoint)
        now = self._clock()
        while self._idle:
            conn = self._idle.pop()
            transport = conn.transport
            if (
                transport is not None
                and not transport.is_closing()
                and now - conn.idle_since < IDLE_TIMEOUT_S
            ):
                return conn
            conn._drop()
            self._open -= 1
        while self._limit and self._open >= self._limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if self._idle:
                return await self._acquire()
        self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(self.endpoint, self._done, self._redact),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            raise
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            text = self._redact(str(exc))[:MESSAGE_CHARS]
            raise ConnectionLost(f"cannot connect: {text}", endpoint=self.endpoint) from exc
        return conn

    def _done(self, conn: Connection, reuse: bool) -> None:
        if reuse and not self._closed:
            conn.idle_since = self._clock()
            self._idle.append(conn)
        else:
            self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close the idle connections; those in use close when released."""
        self._closed = True
        for conn in self._idle:
            conn._drop()
        self._open -= len(self._idle)
        self._idle.clear()
