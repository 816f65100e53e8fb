"""OpenAI-compatible chat client on aiohttp: one session per endpoint, one attempt per call.

The client sends a request, reads the body (whole or as an SSE stream), decodes it with
msgspec into the view Structs of :mod:`engine.llm.wire` and maps every foreign failure
into the error tree of :mod:`engine.errors` right here, at the boundary. Retrying,
pacing and caching are the caller's and the gate's business, not this module's.

What a server sends is bounded as it is read, not after: a body (decompressed, if the
server compressed it) over ``max_response_bytes`` ends the call with
:class:`~engine.errors.ResponseTooLarge`; error bodies are read up to 64 KiB. The client
decompresses gzip/deflate itself, in steps that never produce more than the limit, so a
small compressed "bomb" costs at most the limit in memory. Every message it builds from
what a server sent is redacted (the run's keys) before it is cut to length.
"""

from __future__ import annotations

import contextlib
import math
import re
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from email.utils import parsedate_to_datetime
from time import time as wall_time
from typing import Any

import aiohttp
import msgspec

from ..clock import Clock, monotonic
from ..errors import (
    AuthError,
    BadRequest,
    ConnectionLost,
    EndpointError,
    MalformedResponse,
    RateLimited,
    ResponseTooLarge,
    ServerError,
    Timeout,
)
from ..redaction import Redactor
from .wire import (
    ErrorBody,
    RateInfo,
    SseAccumulator,
    Usage,
    completion_decoder,
    encoder,
    error_decoder,
    parse_rate_headers,
)

__all__ = ("DEFAULT_MAX_RESPONSE_BYTES", "SIMULATED_HEADER", "ChatResult", "Client")

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""Largest response body accepted by default (decompressed): 8 MiB."""

_ERROR_BODY_BYTES = 64 * 1024  # an error body is read up to this, the rest ignored
_MESSAGE_CHARS = 300  # an error message from a server is cut to this (after redaction)

SIMULATED_HEADER = "x-synth-engine-simulated"
"""Response header by which synth-engine's simulated endpoint labels itself."""


class ChatResult(msgspec.Struct, kw_only=True):
    """What one successful call returned.

    Attributes:
        texts: content of each choice, by index.
        finish_reasons: finish reason of each choice.
        usage: reported usage (None if the server sent none).
        rate: the response's x-ratelimit-* headers, if any.
        latency: seconds from send to the end of the body.
        ttft: seconds to the first content byte (streamed calls only).
    """

    texts: list[str]
    finish_reasons: list[str | None]
    usage: Usage | None = None
    rate: RateInfo | None = None
    latency: float = 0.0
    ttft: float | None = None


def _seconds(text: str, scale: float = 1.0) -> float | None:
    """A finite, non-negative number of seconds, else None (ignored)."""
    try:
        value = float(text) * scale
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


def _retry_after(headers: Any) -> float | None:
    """The server's Retry-After in seconds: ``retry-after-ms``, seconds or an HTTP date.

    A value that is not a finite number (``inf``, ``nan``, garbage) is ignored; a huge
    finite one is the gate's to judge (``max_wait_s``).
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        found = _seconds(ms, 0.001)
        if found is not None:
            return found
    value = headers.get("retry-after")
    if value is None:
        return None
    found = _seconds(value)
    if found is None:
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            found = max(0.0, parsedate_to_datetime(value).timestamp() - wall_time())
    return found


# A request the server's own validation rejected, sent back as HTTP 500 by servers that
# wrap every exception (llama-cpp-python reports pydantic's "1 validation error: ...
# 'loc': ('body', 'response_format', 'type') ..." that way): the request is wrong, so
# another attempt cannot help.
_REQUEST_VALIDATION = re.compile(r"^\d+ validation errors?\b.*'loc': \('body'", re.S)


@contextlib.contextmanager
def _map_errors(endpoint: str, redact: Redactor) -> Iterator[None]:
    """Map aiohttp/asyncio/msgspec failures into the engine's tree (subclasses first).

    A foreign error's text may quote what the server sent (an over-long header echoing
    ``Authorization``), so each message is redacted, then cut to length.
    """

    def text(value: object) -> str:
        return redact.text(str(value))[:_MESSAGE_CHARS]

    try:
        yield
    except EndpointError:
        raise
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise Timeout(f"timed out ({type(exc).__name__})", endpoint=endpoint) from exc
    except aiohttp.ClientPayloadError as exc:
        raise ConnectionLost(f"body cut short: {text(exc)}", endpoint=endpoint) from exc
    except aiohttp.ClientConnectorError as exc:
        raise ConnectionLost(f"cannot connect: {text(exc.os_error)}", endpoint=endpoint) from exc
    except aiohttp.ClientConnectionError as exc:
        raise ConnectionLost(
            f"connection lost: {type(exc).__name__} {text(exc)}", endpoint=endpoint
        ) from exc
    except aiohttp.ClientResponseError as exc:
        raise MalformedResponse(f"bad response: {text(exc.message)}", endpoint=endpoint) from exc
    except msgspec.DecodeError as exc:
        raise MalformedResponse(f"undecodable body: {text(exc)}", endpoint=endpoint) from exc
    except zlib.error as exc:
        raise MalformedResponse(
            f"undecodable compressed body: {text(exc)}", endpoint=endpoint
        ) from exc


class _Body:
    """Reads one response body within a byte limit, decompressing gzip/deflate itself.

    Both what arrives on the wire and what it decompresses to are bounded by ``limit``:
    each decompression step asks zlib for no more than the room left, so memory never
    exceeds the limit plus one network read, whatever the compression ratio.
    """

    __slots__ = ("_decoder", "_limit", "_name", "_out", "_raw", "_truncate")

    def __init__(self, name: str, encoding: str, limit: int, *, truncate: bool = False) -> None:
        self._name = name
        self._limit = limit
        self._truncate = truncate
        self._raw = 0
        self._out = 0
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._decoder: Any = None
        elif encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header
        else:
            raise MalformedResponse(
                f"unsupported Content-Encoding {encoding[:40]!r} (asked for gzip or deflate)",
                endpoint=name,
            )

    def _too_large(self) -> ResponseTooLarge:
        return ResponseTooLarge(
            f"response body over the {self._limit:,}-byte limit (max_response_bytes)",
            endpoint=self._name,
        )

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of one network read, in bounded pieces.

        Raises:
            ResponseTooLarge: the body (on the wire or decoded) went over the limit
                (unless reading with ``truncate``, which stops yielding instead).
        """
        self._raw += len(data)
        if self._raw > self._limit and not self._truncate:
            raise self._too_large()
        decoder = self._decoder
        if decoder is None:
            yield from self._count(data)
            return
        while data:
            room = self._limit - self._out + 1
            if room <= 0:
                return
            piece = decoder.decompress(data, room)
            data = decoder.unconsumed_tail
            if piece:
                yield from self._count(piece)

    def _count(self, piece: bytes) -> Iterator[bytes]:
        room = self._limit - self._out
        self._out += len(piece)
        if self._out > self._limit:
            if not self._truncate:
                raise self._too_large()
            piece = piece[: max(0, room)]
        if piece:
            yield piece

    @property
    def plain(self) -> bool:
        """Whether the body is not compressed (read as it arrives)."""
        return self._decoder is None

    def full(self) -> bool:
        """Whether a truncating read has all it will keep."""
        return self._out >= self._limit or self._raw >= self._limit


async def _read_all(
    content: aiohttp.StreamReader, body: _Body, *, known_length: int | None
) -> bytes:
    """The whole (bounded, decoded) body."""
    if known_length is not None and known_length > body._limit and not body._truncate:
        raise body._too_large()
    if body._decoder is None and known_length is not None and known_length <= body._limit:
        # The common case: the length is known and within the limit; aiohttp reads
        # exactly that many bytes, in one buffer.
        return await content.read()
    buf = bytearray()
    async for data in content.iter_any():
        for piece in body.pieces(data):
            buf += piece
        if body._truncate and body.full():
            break
    return bytes(buf)


class Client:
    """A chat-completions client for one endpoint.

    Args:
        name: endpoint name (for errors and logs; never the key).
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        api_key: bearer token, or None for servers without auth.
        timeout_s: per-request deadline (connect + send + whole body).
        connect_timeout_s: deadline for the TCP connect alone.
        max_connections: connection pool size (0: unbounded).
        headers: extra headers sent with every request.
        max_response_bytes: largest body accepted, decompressed (see the module docs).
        redactor: secrets to hide in error messages (the key is always added).
        clock: monotonic time for latency measurements.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        max_connections: int = 0,
        headers: dict[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        redactor: Redactor | None = None,
        clock: Clock = monotonic,
    ) -> None:
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be >= 1 (got {max_response_bytes})")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._url = self.base_url + "/chat/completions"
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._max_connections = max_connections
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            # Decompressed here, within the byte limit (aiohttp's own decompression is off).
            "Accept-Encoding": "gzip, deflate",
        }
        if headers:
            self._headers.update(headers)
        self._max_bytes = max_response_bytes
        self._redactor = redactor if redactor is not None else Redactor()
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
            self._redactor.add(api_key)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.simulated = False  # set once a response carries the simulated endpoint's header
        # Called after each streamed read that carried content text, with the stream's
        # accumulator and the time (``synth-engine bench`` notes token arrivals with it).
        self.on_stream_content: Callable[[SseAccumulator, float], None] | None = None

    async def __aenter__(self) -> Client:
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers=self._headers,
                auto_decompress=False,
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _message(self, body: bytes) -> str:
        """A server's error message from ``body``: redacted first, then cut to length."""
        message = ""
        try:
            err: ErrorBody = error_decoder.decode(body)
            if isinstance(err.error, str):
                message = err.error
            elif err.error is not None:
                message = err.error.message
        except msgspec.DecodeError:
            message = body.decode("utf-8", "replace")
        return self._redactor.text(message.strip())[:_MESSAGE_CHARS]

    async def _error_body(self, resp: aiohttp.ClientResponse) -> bytes:
        """Up to 64 KiB of an error response's body (decoded); the rest is not read."""
        body = _Body(
            self.name,
            resp.headers.get("Content-Encoding", ""),
            min(self._max_bytes, _ERROR_BODY_BYTES),
            truncate=True,
        )
        return await _read_all(resp.content, body, known_length=None)

    def _error_for(self, status: int, body: bytes, headers: Any) -> EndpointError:
        message = self._message(body) or "no error message"
        kw: dict[str, Any] = {"endpoint": self.name, "status": status}
        if status == 429:
            return RateLimited(message, retry_after=_retry_after(headers), **kw)
        if status in (401, 403):
            return AuthError(
                message + "; check the API key in the endpoint's api_key_env variable", **kw
            )
        if status >= 500 and _REQUEST_VALIDATION.match(message):
            return BadRequest(message, **kw)
        if status == 408 or status >= 500 or status == 409:
            return ServerError(message, retry_after=_retry_after(headers), **kw)
        return BadRequest(message, **kw)

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        """Send one chat-completions request; stream if ``body["stream"]`` is true.

        Raises:
            RetryableError: 429, 5xx, timeouts, lost connections, malformed or cut bodies.
            FatalEndpointError: 4xx other than 429.
        """
        session = self._open()
        payload = encoder.encode(body)
        start = self._clock()
        with _map_errors(self.name, self._redactor):
            async with session.post(self._url, data=payload) as resp:
                headers = resp.headers
                if not self.simulated and SIMULATED_HEADER in headers:
                    self.simulated = True
                if resp.status != 200:
                    raise self._error_for(resp.status, await self._error_body(resp), headers)
                rate = parse_rate_headers(headers)
                reader = _Body(self.name, headers.get("Content-Encoding", ""), self._max_bytes)
                if body.get("stream"):
                    return await self._read_stream(resp, reader, start, rate)
                raw = await _read_all(resp.content, reader, known_length=resp.content_length)
                completion = completion_decoder.decode(raw)
        if not completion.choices:
            if completion.error is not None:
                # A 200 that carries an error object (some proxies and servers do this).
                raise MalformedResponse(
                    f"HTTP 200 with an error: {self._message(raw) or 'no error message'}",
                    endpoint=self.name,
                )
            raise MalformedResponse("response has no choices", endpoint=self.name)
        texts = [c.message.content or "" for c in completion.choices]
        reasons = [c.finish_reason for c in completion.choices]
        return ChatResult(
            texts=texts,
            finish_reasons=reasons,
            usage=completion.usage,
            rate=rate,
            latency=self._clock() - start,
        )

    async def _read_stream(
        self, resp: aiohttp.ClientResponse, reader: _Body, start: float, rate: RateInfo | None
    ) -> ChatResult:
        acc = SseAccumulator()
        ttft: float | None = None
        hook = self.on_stream_content
        if reader.plain:
            # The common case, kept to one loop: count the bytes, feed the reads.
            limit, seen = self._max_bytes, 0
            async for data in resp.content.iter_any():
                seen += len(data)
                if seen > limit:
                    raise reader._too_large()
                if acc.feed(data):
                    if ttft is None:
                        ttft = self._clock() - start
                    if hook is not None:
                        hook(acc, self._clock())
                if acc.done:
                    break
            else:
                acc.finish()
        else:
            async for data in _decoded(resp.content, reader):
                if acc.feed(data):
                    if ttft is None:
                        ttft = self._clock() - start
                    if hook is not None:
                        hook(acc, self._clock())
                if acc.done:
                    break
            else:
                acc.finish()
        if acc.error is not None:
            raise MalformedResponse(
                f"stream carried an error: {self._redactor.text(acc.error)[:_MESSAGE_CHARS]}",
                endpoint=self.name,
            )
        if not acc.done:
            raise MalformedResponse("stream ended before [DONE]", endpoint=self.name)
        indices = acc.indices()
        if not indices:
            raise MalformedResponse("stream carried no choices", endpoint=self.name)
        return ChatResult(
            texts=["".join(acc.parts.get(i, ())) for i in indices],
            finish_reasons=[acc.reasons.get(i) for i in indices],
            usage=acc.usage,
            rate=rate,
            latency=self._clock() - start,
            ttft=ttft,
        )

    async def models(self, base_url: str | None = None) -> list[str]:
        """List the model ids the endpoint serves (``GET /models``).

        Args:
            base_url: ask this base URL instead of the endpoint's (with the same key and
                limits), e.g. to check whether the endpoint answers under ``/v1``.
        """
        session = self._open()
        base = (base_url or self.base_url).rstrip("/")
        with _map_errors(self.name, self._redactor):
            async with session.get(base + "/models") as resp:
                if SIMULATED_HEADER in resp.headers:
                    self.simulated = True
                if resp.status != 200:
                    raise self._error_for(resp.status, await self._error_body(resp), resp.headers)
                reader = _Body(self.name, resp.headers.get("Content-Encoding", ""), self._max_bytes)
                raw = await _read_all(resp.content, reader, known_length=resp.content_length)
        try:
            data = msgspec.json.decode(raw)
            return [str(m["id"]) for m in data.get("data", [])]
        except (msgspec.DecodeError, TypeError, KeyError, AttributeError) as exc:
            raise MalformedResponse("undecodable /models body", endpoint=self.name) from exc


async def _decoded(content: aiohttp.StreamReader, body: _Body) -> AsyncIterator[bytes]:
    """The decoded pieces of a streamed body, as they arrive (bounded by ``body``)."""
    async for data in content.iter_any():
        for piece in body.pieces(data):
            yield piece
